package fsmap

import (
	"encoding/binary"
	"io"
)

// magic is where a filesystem's signature lies and what it says.
type magic struct {
	name string
	off  int64
	sig  string
}

// magics are the signatures Detect knows, in the order it tries them: those that
// could hide behind another's first (a FAT boot sector is also found on NTFS).
var magics = []magic{
	{"btrfs", 0x10040, "_BHRfS_M"},
	{"xfs", 0, "XFSB"},
	{"squashfs", 0, "hsqs"},
	{"ntfs", 3, "NTFS    "},
	{"exfat", 3, "EXFAT   "},
	{"vfat", 82, "FAT32   "},
	{"vfat", 54, "FAT16   "},
	{"vfat", 54, "FAT12   "},
	{"iso9660", 0x8001, "CD001"},
	{"swap", 4086, "SWAPSPACE2"},
	{"swap", 4086, "SWAP-SPACE"},
}

// Detect names the filesystem that starts at the beginning of r (size bytes): ext2,
// ext3, ext4, xfs, btrfs, vfat, exfat, ntfs, udf, ufs, iso9660, squashfs or swap;
// "" if it knows none of them.
func Detect(r io.ReaderAt, size int64) string {
	read := func(off, n int64) []byte {
		if off < 0 || n > size || off > size-n {
			return nil
		}
		b := make([]byte, n)
		if _, err := r.ReadAt(b, off); err != nil {
			return nil
		}
		return b
	}
	if sb := read(1024, 1024); sb != nil && binary.LittleEndian.Uint16(sb[56:]) == 0xEF53 {
		return extType(sb)
	}
	for _, m := range magics {
		if b := read(m.off, int64(len(m.sig))); b != nil && string(b) == m.sig {
			return m.name
		}
	}
	// UDF: a volume recognition sequence from 32 KiB, one descriptor a 2 KiB sector.
	for k := int64(0); k < 8; k++ {
		if b := read(0x8001+k*2048, 5); b != nil && (string(b) == "NSR02" || string(b) == "NSR03") {
			return "udf"
		}
	}
	// UFS 1 and 2: fs_magic at 1372 in the superblock at 8 KiB or 64 KiB, either byte order.
	for _, at := range []int64{8192, 65536} {
		if b := read(at+1372, 4); b != nil {
			for _, m := range []uint32{0x011954, 0x19540119} {
				if binary.LittleEndian.Uint32(b) == m || binary.BigEndian.Uint32(b) == m {
					return "ufs"
				}
			}
		}
	}
	return ""
}

// extType tells ext2, ext3 and ext4 apart by their features, as blkid does: a
// journal makes ext3, a feature ext3 lacks makes ext4.
func extType(sb []byte) string {
	le := binary.LittleEndian
	compat, incompat, roCompat := le.Uint32(sb[92:]), le.Uint32(sb[96:]), le.Uint32(sb[100:])
	const ext3Incompat = 0x2 | 0x4 | 0x10 // filetype, recover, meta_bg
	const ext3RoCompat = 0x1 | 0x2 | 0x4  // sparse_super, large_file, btree_dir
	switch {
	case incompat&^ext3Incompat != 0 || roCompat&^ext3RoCompat != 0:
		return "ext4"
	case compat&0x4 != 0:
		return "ext3"
	}
	return "ext2"
}
