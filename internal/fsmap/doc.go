// Package fsmap tells what a byte range of a filesystem holds: which structure of
// its on-disk format, and which files. It is the host-side reader behind vmb diff's
// structure level, and, for the filesystems whose files it also lists and reads
// (ext, fat, exfat: File), behind its files level. The packages under it map one
// filesystem each (ext, fat, exfat, ntfs, udf, xfs, btrfs), and Detect names the
// filesystem a partition holds by its magic numbers, as blkid does.
//
// Where internal/fsfix's packages rewrite a device inside the build VM, these only
// read, from an io.ReaderAt (a snapshot read in place from the cache, or a file).
// They read bytes vmb did not write: every parser bounds-checks what it reads, is
// fuzzed, and returns an error rather than panicking.
package fsmap
