package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// XFS allocates a file's blocks when its dirty pages are written back, not when
// they are written, and frees a removed file's blocks and inode in the
// background (inode inactivation, "inodegc"), later than the unlink. Both run at
// the pace of the kernel's workers: how much the flusher had written of one file
// when another was written, whether a removed file's blocks were free yet when
// the next file was allocated. A big file among small ones was laid out
// differently in about one build in two (vmexec TestBigFiles). The agent takes
// the timing out of both:
//
//   - a writable XFS is mounted with "sync" (xfsMountOptions): every write is
//     written back, and its blocks allocated, before the write returns, in the
//     order the job writes, whatever the flusher does;
//   - before a file is replaced by a copy-in, and before the filesystem is
//     trimmed and unmounted, the agent freezes and thaws it (settleXFS), which
//     waits for every pending inactivation and commits the log, so that the
//     blocks freed are free, and no longer busy, before anything else is
//     allocated or discarded.

// writeChunk is how much the agent writes at once into an XFS or a btrfs target,
// and tarRecord makes tar read and write its archive's data there in records of
// that size (2048 blocks of 512 bytes) instead of 10 KiB: both are mounted
// "sync" (on btrfs, see btrfs.go), where each write is written back and its log
// forced (a transaction committed, on btrfs) on its own. On XFS, a 200 MiB file
// copied in 64 KiB writes (the kernel's splice) took 8 s more than without
// "sync", and tarred in in 10 KiB writes 23 s more. Other filesystems are
// written as before.
const writeChunk = 1 << 20

// tarRecord returns tar's record size option for extracting into dir.
func tarRecord(dir string) string {
	if fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		defer unix.Close(fd)
		if writesWhole(fd) {
			return "--blocking-factor=2048"
		}
	}
	return "--blocking-factor=20" // tar's default
}

// copyData copies in to out: on an XFS or a btrfs in writes of writeChunk
// bytes, hiding out's ReadFrom, which would copy through the kernel's splice in
// 64 KiB writes.
func copyData(out *os.File, in io.Reader) (int64, error) {
	if !writesWhole(int(out.Fd())) {
		return io.Copy(out, in)
	}
	return io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, writeChunk))
}

// xfsMountOptions returns the mount options a target of type fstype gets
// besides the agent's own, as ",opt" or "".
func xfsMountOptions(fstype string, readOnly bool) string {
	if fstype != "xfs" || readOnly {
		return ""
	}
	return ",sync"
}

// xfsSysctls are the XFS knobs of the appliance's kernel set when the first XFS
// target is mounted: the background trimming of the blocks XFS preallocates past
// the end of a growing file runs every speculative_prealloc_lifetime seconds
// (300 by default), which a long job would reach at a point of its own pace.
// At the maximum it never runs within a job: the preallocations are trimmed as
// the files are closed or at unmount.
var xfsSysctls = map[string]string{
	"/proc/sys/fs/xfs/speculative_prealloc_lifetime": "86400",
}

// xfsMounted sets xfsSysctls after an XFS target is mounted.
func xfsMounted(fstype string) {
	if fstype != "xfs" {
		return
	}
	for knob, v := range xfsSysctls {
		if err := os.WriteFile(knob, []byte(v+"\n"), 0o644); err != nil && !errors.Is(err, fs.ErrNotExist) {
			fmt.Printf("vmb-agent: %s: %v\n", knob, err)
		}
	}
}

// FIFREEZE and FITHAW are _IOWR('X', 119, int) and _IOWR('X', 120, int), which
// x/sys/unix lacks.
const (
	fiFreeze = 0xc0045877
	fiThaw   = 0xc0045878
)

// settleXFS waits, on the filesystem mounted at dir if it is an XFS, for every
// inode inactivation pending, and commits the log: FIFREEZE stops the
// inactivation workers only once they have drained (xfs_inodegc_stop) and
// quiesces the log, which clears the busy extents; FITHAW starts them again.
func settleXFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.XFS_SUPER_MAGIC {
		return nil
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.IoctlSetInt(fd, fiFreeze, 0); err != nil {
		return fmt.Errorf("freeze %s: %w", dir, err)
	}
	if err := unix.IoctlSetInt(fd, fiThaw, 0); err != nil {
		return fmt.Errorf("thaw %s: %w", dir, err)
	}
	return nil
}

// replaceXFS removes a file that a copy-in is about to replace, if the target
// is an XFS, and waits for its blocks and inode to be freed (settleXFS); the
// copy then finds nothing to remove. Elsewhere it leaves the file to the copy.
func replaceXFS(to string) error {
	fi, err := os.Lstat(to)
	if err != nil || fi.IsDir() {
		return nil
	}
	var st unix.Statfs_t
	dir := to[:max(strings.LastIndexByte(to, '/'), 1)]
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.XFS_SUPER_MAGIC {
		return nil
	}
	if err := os.Remove(to); err != nil {
		return err
	}
	return settleXFS(dir)
}
