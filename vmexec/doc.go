// Package vmexec is the qemu Executor: it builds and boots the appliance (kernel,
// initramfs, vmb-agent), passes each job on a job disk, reads the serial console,
// and materializes and ingests target disks through the cas.
package vmexec
