package main

import "golang.org/x/sys/unix"

// btrfs allocates a file's extents when its dirty pages are written back (by the
// flusher, at its own pace, or when memory runs short), and inserts the
// checksum and file extent items of what was written in worker threads, as
// the writes complete; how many workers there are depends on the CPUs. So
// which 16 KiB slot each tree block got, and where a big file's data went,
// differed from build to build: vmexec TestBigFiles found 61 KB to 36 MB of the
// disk different after every job that wrote a file of 200 MiB. The agent takes
// the timing out:
//
//   - a writable btrfs is mounted "sync,notreelog" (btrfsMountOptions): every
//     write is written back, its extents allocated and its items inserted, and
//     the transaction committed, before the write returns, in the order the job
//     writes. ("sync" alone logs the write in the log tree instead, and does
//     not wait for the workers that insert its checksums: a checksum tree leaf
//     still landed in another slot.) "thread_pool=1" runs those workers one at
//     a time, however many CPUs the build VM has;
//   - the free space of every block group is read right after the mount
//     (btrfsMounted): the allocator skips the block groups its caching thread
//     has not read yet;
//   - the agent writes its own files 1 MiB at a time (copyData, tarRecord);
//   - normalize leaves btrfs alone, since btrfs.Fix clamps the times.
//
// It costs (RUNS=3 bench/syncwrites, TCG, medians): 0.8 to 1.4 times as long
// for files of 200 MiB (1 MiB writes make up for the commits), 1.55 times for
// a copy-in of 1000 files of 100 KiB, and 4.5 times for a run in which busybox
// tar extracts them, each of its writes of up to 64 KiB a commit.

// btrfsMountOptions returns the mount options a target of type fstype gets
// besides the agent's own, as ",opt" or "".
func btrfsMountOptions(fstype string, readOnly bool) string {
	if fstype != "btrfs" || readOnly {
		return ""
	}
	return ",sync,notreelog,thread_pool=1"
}

// btrfsMounted reads the free space of every block group of a writable btrfs
// just mounted at dir: FITRIM loads each one's, and waits for it. What it
// discards is free, and reads as zeros until the job writes it.
func btrfsMounted(fstype, dir string) {
	if fstype == "btrfs" {
		fstrim(dir)
	}
}

// writesWhole says whether the file or directory at fd is on a filesystem the
// agent mounts "sync" (XFS, btrfs), where it writes writeChunk bytes at a time.
func writesWhole(fd int) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(fd, &st) == nil && (st.Type == unix.XFS_SUPER_MAGIC || st.Type == unix.BTRFS_SUPER_MAGIC)
}
