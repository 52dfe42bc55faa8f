package main

import (
	"errors"
	"fmt"

	"vmb.dev/vmb/internal/fsfix"
	"vmb.dev/vmb/internal/fsfix/blockdev"
	"vmb.dev/vmb/internal/fsfix/btrfs"
	"vmb.dev/vmb/internal/fsfix/exfat"
	"vmb.dev/vmb/internal/fsfix/fat"
	"vmb.dev/vmb/internal/fsfix/ntfs"
	"vmb.dev/vmb/internal/fsfix/udf"
	"vmb.dev/vmb/internal/fsfix/xfs"
)

// The agent's side of the filesystem fixers (internal/fsfix/*): which fixer a
// filesystem type gets, the bytes derived from the job's key that a format's
// fixer sets, and what the job's log says.

// notReproducible says so in the job's log for fsfix.ErrUnsupported, and passes any
// other error on.
func notReproducible(fs string, err error) error {
	if errors.Is(err, fsfix.ErrUnsupported) {
		fmt.Printf("+ %s: %v: the disk is sound, but a rebuild may differ\n", fs, err)
		return nil
	}
	return fmt.Errorf("%s: %w", fs, err)
}

// volumeFixers rewrite, on an unmounted target of their kind, what mkfs and the
// kernel leave to the clock or to chance (the packages of internal/fsfix;
// ext2/3/4 have fixTimes). Each returns how many things it rewrote, which the
// job's log says as what.
var volumeFixers = map[string]struct {
	name, what string
	fix        func(dev string, epoch int64) (int, error)
}{
	"vfat":  {"FAT", "directory entries clamped to the epoch", fat.Clamp},
	"exfat": {"exFAT", "entry sets clamped to the epoch", exfat.Clamp},
	"udf":   {"UDF", "descriptors clamped to the epoch", udf.Clamp},
	"ntfs":  {"NTFS", "records and index blocks clamped to the epoch", ntfs.Clamp},
	"xfs": {"XFS", "inodes and blocks set to the epoch and LSN 0, log formatted", func(dev string, epoch int64) (int, error) {
		return xfs.Fix(dev, epoch, "xfs_db")
	}},
	"btrfs": {"btrfs", "tree blocks with times set to the epoch", func(dev string, epoch int64) (int, error) {
		return btrfs.Fix(dev, epoch, nil)
	}},
}

// fixVolume runs the fixer of a filesystem type, if it has one, on dev.
func (a *agent) fixVolume(fstype, dev string) error {
	f, ok := volumeFixers[fstype]
	if !ok {
		return nil
	}
	n, err := f.fix(dev, a.job.Epoch)
	if err != nil {
		return notReproducible(f.name, err)
	}
	if n > 0 {
		fmt.Printf("+ %s: %d %s\n", f.name, n, f.what)
	}
	return nil
}

// fixBtrfsFormat sets the UUIDs mkfs.btrfs drew to ones derived from the key.
func (a *agent) fixBtrfsFormat(dev string) error {
	var u btrfs.UUIDs
	for i, dst := range []*[16]byte{&u.Dev, &u.ChunkTree, &u.Subvol} {
		copy(dst[:], a.uuidBytes(1+i))
	}
	n, err := btrfs.Fix(dev, a.job.Epoch, &u)
	if err != nil {
		return notReproducible("btrfs", err)
	}
	fmt.Printf("+ btrfs: device, chunk tree and subvolume UUIDs derived from the key (%d blocks)\n", n)
	return nil
}

// fixNTFSFormat makes what mkntfs wrote reproducible, with a volume serial
// derived from the key.
func (a *agent) fixNTFSFormat(dev string) error {
	return ntfs.FixFormat(dev, a.job.Epoch, a.uuidBytes(0)[:8])
}

// fixUDFFormat makes what mkudffs wrote reproducible: the times, and on a whole
// disk the signature of the MBR it writes there, which it draws at random.
func (a *agent) fixUDFFormat(dev string, wholeDisk bool) error {
	if wholeDisk {
		if err := blockdev.SetMBRSignature(dev, a.uuidBytes(1)[:4]); err != nil {
			return err
		}
	}
	return a.fixVolume("udf", dev)
}
