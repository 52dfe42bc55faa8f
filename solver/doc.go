// Package solver plans and runs a build: for each node it decides hit or miss
// against the action cache (and says why), schedules the misses in dependency
// order through an Executor, ingests results into the cas, and reports events.
//
// solver defines the Executor interface; it never starts a VM itself. The
// interface is in terms an executor satisfies without importing solver (disks
// and files as cas digests, a job's failure as any error with a method
// ExitCode() int, the JobFailure interface), so solver imports only graph and
// cas, an executor such as vmexec imports neither solver nor anything of it, and
// only cmd wires the two. solver/executortest holds the one check of that
// contract every executor passes, and the Fake this package's tests count calls
// on.
package solver
