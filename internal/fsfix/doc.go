// Package fsfix is what the per-filesystem packages under it share. Each of them
// (ext, fat, exfat, ntfs, udf, xfs, btrfs, ufs) parses its filesystem's on-disk
// format and makes it reproducible: on an unmounted filesystem, it rewrites what
// mkfs and the kernel left to the clock or to chance (times after the build's
// epoch, UUIDs and serials drawn at random, log sequence numbers, change
// counters) with values given by its caller, the build agent (cmd/vmb-agent).
// Package blockdev holds their device-level helpers.
//
// These packages read bytes vmb did not write: every parser is fuzzed, trusts no
// length or address it reads, and returns an error rather than panicking. They
// take a device (or image file) path, the epoch and any seed bytes as
// parameters, read no global state, and import nothing of vmb's but this package
// and blockdev.
package fsfix

import "errors"

// ErrUnsupported marks a filesystem whose format a fixer does not know (a feature
// or layout vmb's mkfs options do not make): the filesystem is sound but not
// reproducible, and the job that made it goes on.
var ErrUnsupported = errors.New("not made reproducible")
