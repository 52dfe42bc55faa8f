// Package ext makes ext2/3/4 filesystems reproducible at the byte level: the
// superblock's times and counters (StampSuperblock), the inode tables' free
// slots and change counters (ScrubInodes), with their metadata_csum checksums, and
// the free blocks (ZeroFree).
// The agent has mkfs take the UUID and hash seed it derives, and e2fsck write
// again the checksums seeded by a generation ScrubInodes set.
package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"vmb.dev/vmb/internal/fsfix/blockdev"
)

// StampSuperblock sets the primary superblock's mount, write and check times to
// the epoch and its mount count and lifetime write count to zero, and writes its
// checksum again. The kernel and e2fsprogs write them from the clock and from how
// much was written; backups are not touched by a mount.
func StampSuperblock(dev string, epoch int64) error {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[56:]) != 0xEF53 {
		return fmt.Errorf("%s: not an ext2/3/4 filesystem", dev)
	}
	for _, off := range []int{0x2c, 0x30, 0x40} { // s_mtime, s_wtime, s_lastcheck
		le.PutUint32(sb[off:], uint32(epoch))
	}
	sb[0x274], sb[0x275], sb[0x277] = byte(epoch>>32), byte(epoch>>32), byte(epoch>>32) // their high bytes
	le.PutUint16(sb[0x34:], 0)                                                          // s_mnt_count
	le.PutUint64(sb[0x178:], 0)                                                         // s_kbytes_written
	if le.Uint32(sb[100:])&0x400 != 0 {                                                 // metadata_csum
		le.PutUint32(sb[0x3fc:], crc32c(^uint32(0), sb[:0x3fc]))
	}
	if _, err := f.WriteAt(sb, 1024); err != nil {
		return err
	}
	return f.Sync()
}

// geometry is what the fixers read of an ext2/3/4 superblock and its group
// descriptors, checked against the device's size: nothing read is trusted.
type geometry struct {
	blockSize, perGroup, inodeSize int64
	blocks, firstData, groups      int64
	blocksPerGroup                 int64
	descSize                       int64
	is64, csum                     bool
	seed                           uint32 // metadata_csum seed
	descs                          []byte
}

func readGeometry(f *os.File, dev string) (*geometry, error) {
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[56:]) != 0xEF53 {
		return nil, fmt.Errorf("%s: not an ext2/3/4 filesystem", dev)
	}
	logBlock := le.Uint32(sb[24:])
	if logBlock > 6 {
		return nil, fmt.Errorf("%s: block size 1024<<%d out of range", dev, logBlock)
	}
	g := &geometry{blockSize: int64(1024) << logBlock, descSize: 32}
	blocks := uint64(le.Uint32(sb[4:]))
	g.perGroup = int64(le.Uint32(sb[40:]))
	g.inodeSize = int64(le.Uint16(sb[88:]))
	if le.Uint32(sb[76:]) == 0 { // revision 0: 128-byte inodes
		g.inodeSize = 128
	}
	g.firstData = int64(le.Uint32(sb[20:]))
	g.blocksPerGroup = int64(le.Uint32(sb[32:]))
	incompat, roCompat := le.Uint32(sb[96:]), le.Uint32(sb[100:])
	g.is64 = incompat&0x80 != 0
	if g.is64 {
		blocks |= uint64(le.Uint32(sb[336:])) << 32
		g.descSize = int64(le.Uint16(sb[254:]))
	}
	g.csum = roCompat&0x400 != 0               // metadata_csum
	g.seed = crc32c(^uint32(0), sb[0x68:0x78]) // the filesystem's UUID
	if incompat&0x2000 != 0 {                  // csum_seed
		g.seed = le.Uint32(sb[0x270:])
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	if g.blocksPerGroup <= 0 || g.blocksPerGroup > 8*g.blockSize ||
		g.firstData >= int64(blocks) || g.perGroup <= 0 || g.perGroup > 8*g.blockSize ||
		g.inodeSize < 128 || g.inodeSize > g.blockSize || g.inodeSize&(g.inodeSize-1) != 0 ||
		g.descSize < 32 || g.descSize > 1024 || g.descSize&(g.descSize-1) != 0 || g.perGroup*g.inodeSize > size {
		return nil, fmt.Errorf("%s: superblock geometry out of range", dev)
	}
	g.blocks = int64(blocks)
	g.groups = (g.blocks - g.firstData + g.blocksPerGroup - 1) / g.blocksPerGroup
	if g.groups <= 0 || g.groups > size/g.descSize {
		return nil, fmt.Errorf("%s: %d block groups: out of range", dev, g.groups)
	}
	g.descs = make([]byte, g.groups*g.descSize)
	if _, err := f.ReadAt(g.descs, (g.firstData+1)*g.blockSize); err != nil {
		return nil, err
	}
	return g, nil
}

// desc returns group i's flags and the block numbers of its block bitmap, inode
// bitmap and inode table.
func (g *geometry) desc(i int64) (flags uint16, blockBitmap, inodeBitmap, table int64) {
	le := binary.LittleEndian
	d := g.descs[i*g.descSize:]
	blockBitmap, inodeBitmap, table = int64(le.Uint32(d[0:])), int64(le.Uint32(d[4:])), int64(le.Uint32(d[8:]))
	if g.is64 && g.descSize >= 64 {
		blockBitmap |= int64(le.Uint32(d[0x20:])) << 32
		inodeBitmap |= int64(le.Uint32(d[0x24:])) << 32
		table |= int64(le.Uint32(d[0x28:])) << 32
	}
	return le.Uint16(d[18:]), blockBitmap, inodeBitmap, table
}

// Group descriptor flags.
const (
	inodeUninit = 0x1 // the inode table was never written
	blockUninit = 0x2 // the block bitmap was never written: no block was ever allocated
)

// Scrubbed is what ScrubInodes rewrote.
type Scrubbed struct {
	Cleared  int // free slots zeroed
	Counters int // change counters zeroed
	Created  int // files and directories whose creation time or generation was set
	// Reseed says that a directory or a file with extent blocks got generation 0:
	// with metadata_csum their blocks' checksums are seeded with it, and are
	// right again only once e2fsck -f has written them.
	Reseed bool
}

// ScrubInodes works through the inode tables of an unmounted ext2/3/4 filesystem.
// It zeroes the slots the inode bitmaps say are free: a deleted file leaves its inode
// behind, with the times and generation it had, where mke2fs left zeros. In the
// inodes in use, it zeroes the change counter (i_version), which counts how often the
// kernel wrote the inode and so depends on timing; sets a creation time after the
// epoch to the epoch, since the guest clock runs; and sets the generation, which
// the kernel draws at random for every new inode, to 0. It writes their checksums
// again, and only the blocks of the tables it changed.
func ScrubInodes(dev string, epoch int64) (Scrubbed, error) {
	var s Scrubbed
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return s, err
	}
	defer f.Close()
	g, err := readGeometry(f, dev)
	if err != nil {
		return s, err
	}
	le := binary.LittleEndian
	bitmap := make([]byte, g.blockSize)
	table := make([]byte, g.perGroup*g.inodeSize)
	dirty := make([]bool, len(table)/int(g.blockSize)+1)
	zero := make([]byte, g.inodeSize)
	crLo, crHi := uint32(epoch), uint32((epoch-int64(int32(uint32(epoch))))>>32)&3
	for gi := range g.groups {
		flags, _, bitmapAt, tableAt := g.desc(gi)
		if flags&inodeUninit != 0 { // nothing was ever written
			continue
		}
		if _, err := f.ReadAt(bitmap, bitmapAt*g.blockSize); err != nil {
			return s, err
		}
		if _, err := f.ReadAt(table, tableAt*g.blockSize); err != nil {
			return s, err
		}
		clear(dirty)
		for i := range g.perGroup {
			in := table[i*g.inodeSize : (i+1)*g.inodeSize]
			mark := func() { dirty[i*g.inodeSize/g.blockSize] = true }
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				if !bytes.Equal(in, zero) {
					clear(in)
					s.Cleared++
					mark()
				}
				continue
			}
			extra := int64(0)
			if g.inodeSize > 128 {
				extra = min(int64(le.Uint16(in[0x80:])), g.inodeSize-128)
			}
			changed := le.Uint32(in[0x24:]) != 0
			clear(in[0x24:0x28])
			if extra >= 0x1c {
				changed = changed || le.Uint32(in[0x98:]) != 0
				clear(in[0x98:0x9c])
			}
			if changed {
				s.Counters++
			}
			created := false
			if extra >= 0x18 { // i_crtime and i_crtime_extra
				lo, hi := le.Uint32(in[0x90:]), le.Uint32(in[0x94:])
				sec := int64(int32(lo)) + int64(hi&3)<<32
				if sec > epoch || sec == epoch && hi>>2 != 0 {
					le.PutUint32(in[0x90:], crLo)
					le.PutUint32(in[0x94:], crHi)
					created = true
				}
			}
			if le.Uint32(in[0x64:]) != 0 { // i_generation
				clear(in[0x64:0x68])
				created = true
				mode := le.Uint16(in[0:]) & 0xf000
				depth := le.Uint16(in[0x2e:]) // of the extent tree in i_block
				extents := le.Uint32(in[0x20:])&0x80000 != 0 && le.Uint16(in[0x28:]) == 0xf30a
				s.Reseed = s.Reseed || g.csum && (mode == 0x4000 || mode == 0x8000 && extents && depth > 0)
			}
			if created {
				s.Created++
			}
			if !changed && !created {
				continue
			}
			mark()
			if g.csum {
				ino := uint32(gi*g.perGroup + i + 1)
				inodeChecksum(in, g.seed, ino, extra >= 4)
			}
		}
		for b, d := range dirty {
			if !d {
				continue
			}
			off := int64(b) * g.blockSize
			end := min(off+g.blockSize, int64(len(table)))
			if _, err := f.WriteAt(table[off:end], tableAt*g.blockSize+off); err != nil {
				return s, err
			}
		}
	}
	return s, f.Sync()
}

// ZeroFree makes the blocks an unmounted ext2/3/4 filesystem's block bitmaps say
// are free read as zeros (blockdev.ZeroRanges: discarded, or written with zeros).
// A deleted file or directory leaves its blocks as they were, and a directory
// block's checksum is seeded with its inode's generation, which the kernel draws
// at random. fstrim would do it on a mounted filesystem, but ext4 refuses FITRIM
// when mounted without replaying its journal (noload), as vmb mounts it. A group
// whose bitmap was never written (BLOCK_UNINIT) had no block allocated since mkfs,
// which discards the device: it is left alone. It returns how many bytes it zeroed.
func ZeroFree(dev string) (int64, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	g, err := readGeometry(f, dev)
	if err != nil {
		return 0, err
	}
	if size, err := f.Seek(0, io.SeekEnd); err != nil {
		return 0, err
	} else if g.blocks > size/g.blockSize {
		return 0, fmt.Errorf("%s: %d blocks of %d bytes: larger than the device", dev, g.blocks, g.blockSize)
	}
	bitmap := make([]byte, g.blockSize)
	var ranges [][2]int64
	var total int64
	for gi := range g.groups {
		flags, bitmapAt, _, _ := g.desc(gi)
		if flags&blockUninit != 0 {
			continue
		}
		if bitmapAt <= 0 || bitmapAt >= g.blocks {
			return 0, fmt.Errorf("%s: group %d: block bitmap at %d, past the end", dev, gi, bitmapAt)
		}
		if _, err := f.ReadAt(bitmap, bitmapAt*g.blockSize); err != nil {
			return 0, err
		}
		first := g.firstData + gi*g.blocksPerGroup
		n := min(g.blocksPerGroup, g.blocks-first)
		for i := int64(0); i < n; {
			if bitmap[i/8]&(1<<(i%8)) != 0 {
				i++
				continue
			}
			j := i + 1
			for j < n && bitmap[j/8]&(1<<(j%8)) == 0 {
				j++
			}
			r := [2]int64{(first + i) * g.blockSize, (first + j) * g.blockSize}
			if k := len(ranges) - 1; k >= 0 && ranges[k][1] == r[0] {
				ranges[k][1] = r[1]
			} else {
				ranges = append(ranges, r)
			}
			total += r[1] - r[0]
			i = j
		}
	}
	if err := blockdev.ZeroRanges(f, ranges); err != nil {
		return 0, err
	}
	return total, f.Sync()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crc32c continues a crc32c as ext4 does: no inversion on the way in or out.
func crc32c(crc uint32, p []byte) uint32 { return ^crc32.Update(^crc, castagnoli, p) }

// inodeChecksum writes an ext4 inode's metadata_csum: crc32c, without the final
// inversion, of the inode number, its generation and the inode with its checksum
// fields zeroed, seeded with the filesystem's checksum seed.
func inodeChecksum(in []byte, seed, ino uint32, hi bool) {
	le := binary.LittleEndian
	var b [4]byte
	le.PutUint32(b[:], ino)
	c := crc32c(seed, b[:])
	c = crc32c(c, in[0x64:0x68]) // i_generation
	le.PutUint16(in[0x7c:], 0)
	if hi {
		le.PutUint16(in[0x82:], 0)
	}
	c = crc32c(c, in)
	le.PutUint16(in[0x7c:], uint16(c))
	if hi {
		le.PutUint16(in[0x82:], uint16(c>>16))
	}
}
