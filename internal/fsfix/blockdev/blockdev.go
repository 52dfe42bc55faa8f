// Package blockdev holds the device-level helpers of the filesystem fixers
// (package fsfix and the packages under it): making byte ranges of a device read
// as zeros (discarded where the device allows), a device's size, opening a
// filesystem by its boot sector, and an MBR's disk signature. They work on block
// devices in the build VM and on regular image files in tests.
package blockdev

import (
	"fmt"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ZeroRanges makes the byte ranges [start, end) of a device read as zeros, as fstrim
// does for a filesystem that can: discarded where the device's discard granularity
// allows (qemu punches a hole in the disk's file), written with zeros around that.
// On a regular file (in tests) it punches holes.
func ZeroRanges(f *os.File, ranges [][2]int64) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		for _, r := range ranges {
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, r[0], r[1]-r[0]); err != nil {
				return err
			}
		}
		return nil
	}
	// The disk's discard granularity; a partition's offset on its disk decides
	// what is aligned.
	sys := fmt.Sprintf("/sys/dev/block/%d:%d/", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	gran, part := int64(0), int64(0)
	if b, err := os.ReadFile(sys + "start"); err == nil {
		fmt.Sscan(string(b), &part)
		part *= 512
		sys += "../"
	}
	if b, err := os.ReadFile(sys + "queue/discard_granularity"); err == nil {
		fmt.Sscan(string(b), &gran)
	}
	ioctl := func(req uint, start, end int64) error {
		if start >= end {
			return nil
		}
		r := [2]uint64{uint64(start), uint64(end - start)}
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), uintptr(req), uintptr(unsafe.Pointer(&r[0]))); e != 0 {
			return fmt.Errorf("ioctl %#x of bytes %d to %d: %w", req, start, end, e)
		}
		return nil
	}
	for _, r := range ranges {
		start, end := r[0], r[1]
		if gran > 0 {
			// Aligned on the disk, not the partition.
			as := (start+part+gran-1)/gran*gran - part
			ae := (end+part)/gran*gran - part
			if as < ae {
				if err := ioctl(unix.BLKDISCARD, as, ae); err == nil {
					if err := ioctl(unix.BLKZEROOUT, start, as); err != nil {
						return err
					}
					start = ae
				}
			}
		}
		if err := ioctl(unix.BLKZEROOUT, start, end); err != nil {
			return err
		}
	}
	return nil
}

// Size is the size of a block device (or file) in bytes.
func Size(dev string) (int64, error) {
	f, err := os.Open(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return f.Seek(0, io.SeekEnd)
}

// OpenBootSector opens a filesystem that starts with a boot sector (FAT, exFAT)
// for writing and reads its boot sector.
func OpenBootSector(dev string) (*os.File, []byte, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return nil, nil, err
	}
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, 0); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: boot sector: %w", dev, err)
	}
	return f, bs, nil
}

// SetMBRSignature sets the disk signature of the MBR at the start of dev, if
// there is one.
func SetMBRSignature(dev string, sig []byte) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	mbr := make([]byte, 512)
	if _, err = f.ReadAt(mbr, 0); err == nil && mbr[510] == 0x55 && mbr[511] == 0xaa {
		_, err = f.WriteAt(sig, 440)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
