// Package vmexec is the qemu Executor: it boots the appliance, passes each job on a
// job disk, reads the serial console, and materializes and ingests target disks
// through the cas. Jobs that need no VM (create-disk, resize-disk, dd, hash,
// export) run on the host. *Executor is a solver.Executor without importing
// solver: disks and files are cas digests, and a job that failed is a *JobError,
// whose ExitCode method makes it a solver.JobFailure. Its tests run the
// contract's check, solver/executortest, against the real appliance.
//
// By concern, in its sub-packages:
//
//	vmexec/qemu       one qemu process: the command line as data, its lifecycle,
//	                  and the passt that gives a networked job the outside world
//	vmexec/proto      the wire protocol with the agent: job disk, console lines,
//	                  the epoch and the derivation of identifiers from a key
//	vmexec/appliance  the build VM: built from Debian packages, stored as a ref
//	vmexec/imagefmt   exports to qcow2, vmdk, vdi and vhdx, made reproducible
//	vmexec/vmtest     the real appliance for tests, built once per machine
package vmexec
