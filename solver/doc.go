// Package solver plans and runs a build: for each node it decides hit or miss
// against the action cache (and says why), schedules the misses in dependency
// order through an Executor, ingests results into the cas, and reports events.
//
// solver defines the Executor interface; it never starts a VM itself.
package solver
