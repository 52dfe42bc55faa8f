package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"unsafe"

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
//     allocated or discarded;
//   - a remove job removes its tree itself, entry by entry, and waits for each
//     entry's inactivation (removeXFS), so that the frees come in its order.
//
// A run's command removes files at its own pace, and the kernel (6.1) has no
// setting that inactivates an inode as it is unlinked: the agent settles the
// filesystem after the command only. What the frees' order leaves in the
// btrees past their records, the fixer zeroes (internal/fsfix/xfs).

// writeChunk is how much the agent writes at once into an XFS or a btrfs target,
// and tarRecord makes tar read and write its archive's data there in records of
// that size (2048 blocks of 512 bytes) instead of 10 KiB: both are mounted
// "sync" (on btrfs, see btrfs.go), where each write is written back and its log
// forced (a transaction committed, on btrfs) on its own. On XFS, a 200 MiB file
// copied in 64 KiB writes (the kernel's splice) took 8 s more than without
// "sync", and tarred in in 10 KiB writes 23 s more. Other filesystems are
// written as before.
const writeChunk = 1 << 20

// onXFS says whether the file or directory at fd is on an XFS.
func onXFS(fd int) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && st.Type == unix.XFS_SUPER_MAGIC
}

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

// XFS_IOC_FREE_EOFBLOCKS is _IOR('X', 58, struct xfs_fs_eofblocks), and these
// its version and flags.
const (
	xfsIocFreeEOFBlocks   = 0x8080583a
	xfsEOFBlocksVersion   = 1
	xfsEOFFlagMinFileSize = 1 << 4
)

// xfsFsEOFBlocks is struct xfs_fs_eofblocks (128 bytes).
type xfsFsEOFBlocks struct {
	Version, Flags, UID, GID, PrID, Pad32 uint32
	MinFileSize                           uint64
	Pad64                                 [12]uint64
}

var _ [128]byte = [unsafe.Sizeof(xfsFsEOFBlocks{})]byte{}

// drainXFS waits for the inactivation of every inode the XFS open at fd has
// queued: XFS_IOC_FREE_EOFBLOCKS trims the blocks preallocated past the end of
// the files its filter matches, here none (no file is 2^63-1 bytes), and then
// flushes the inactivation workqueue (xfs_blockgc_free_space calls
// xfs_inodegc_flush). Unlike settleXFS it neither freezes nor forces the log.
func drainXFS(fd int) error {
	arg := xfsFsEOFBlocks{Version: xfsEOFBlocksVersion, Flags: xfsEOFFlagMinFileSize, MinFileSize: math.MaxInt64}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), xfsIocFreeEOFBlocks, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return fmt.Errorf("XFS_IOC_FREE_EOFBLOCKS: %w", e)
	}
	return nil
}

// removeXFS removes the tree at p, as rm -rf would, if it is on an XFS, and
// says whether it did. The kernel inactivates an unlinked inode (frees its
// blocks, then the inode and maybe its chunk) in a per-CPU worker, queued a
// clock tick after the last unlink (each unlink puts the timer off again) or
// at once when more than an inode cluster's worth (32) wait; the worker takes
// its CPU's queue whole and frees it last in, first out, while the unlinks go
// on (fs/xfs/xfs_icache.c, xfs_inodegc_queue and xfs_inodegc_worker). How the
// frees fell into batches changed the order of the free-space btrees' updates,
// and so what each block keeps past its last record: with rm -rf, vmexec
// TestXFSRemove found 16 to 32 bytes of the bnobt and cntbt different after
// removing a directory, in 4 runs of 5. The agent unlinks the entries in order
// of name, children first, and after each one waits for its inode to be
// inactivated (drainXFS) and commits the log, so that the frees come one at a
// time, in that order. Under emulation 82 entries took 0.3 to 1 s (0.2 to
// 0.5 s without the log force; freezing after each one instead, 0.6 to 3 s),
// where rm -rf took 0.1 to 0.9 s and left the frees to the settling before
// the unmount.
func removeXFS(p string) (bool, error) {
	parent := filepath.Dir(p)
	fd, err := unix.Open(parent, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, nil // rm says what is missing or wrong
	}
	defer unix.Close(fd)
	if !onXFS(fd) {
		return false, nil
	}
	if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return true, nil // rm -f: nothing to remove is no error
	}
	fmt.Printf("+ remove %s, entry by entry\n", p)
	n := 0
	var remove func(p string) error
	remove = func(p string) error {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		if fi.IsDir() {
			entries, err := os.ReadDir(p) // sorted by name
			if err != nil {
				return err
			}
			for _, e := range entries {
				if err := remove(filepath.Join(p, e.Name())); err != nil {
					return err
				}
			}
			err = unix.Rmdir(p)
		} else {
			err = unix.Unlink(p)
		}
		if err != nil {
			return &fs.PathError{Op: "remove", Path: p, Err: err}
		}
		n++
		if err := drainXFS(fd); err != nil {
			return err
		}
		// Commit the frees: the inactivation's transactions are not
		// synchronous, even under "sync", and the blocks they freed are busy
		// until the log is forced, which the log worker would do every 30 s.
		return unix.Syncfs(fd)
	}
	err = remove(p)
	fmt.Printf("+ removed %d entries\n", n)
	return true, err
}
