// Package vmexec is the qemu Executor: it boots the appliance, passes each job on a
// job disk, reads the serial console, and materializes and ingests target disks
// through the cas. Jobs that need no VM (create-disk, resize-disk, dd, hash,
// export) run on the host. *Executor is a solver.Executor without importing
// solver: disks and files are cas digests, and a job that failed is a *JobError,
// whose ExitCode method makes it a solver.JobFailure. Its tests run the
// contract's check, solver/executortest, against the real appliance.
//
// It is a solver.Chainer too: a chain of jobs runs in one boot of the appliance
// (RunChain, session.go), the host storing the disks after each job while the VM
// waits. qemu records which ranges the guest writes (dirty bitmaps, read through
// its monitor and NBD server: vmexec/qemu), so storing a job's result reads what
// it wrote, not the whole disk.
//
// By concern, in its sub-packages:
//
//	vmexec/qemu       one qemu process: the command line as data, its lifecycle,
//	                  the passt that gives a networked job the outside world, and
//	                  its monitor, which tells what the guest wrote
//	vmexec/proto      the wire protocol with the agent: job disk, console lines,
//	                  the epoch and the derivation of identifiers from a key
//	vmexec/appliance  the build VM: built from Debian packages, stored as a ref
//	vmexec/imagefmt   exports to qcow2, vmdk, vdi and vhdx, made reproducible
//	vmexec/vmtest     the real appliance for tests, built once per machine
package vmexec
