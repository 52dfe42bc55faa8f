// Package ext makes ext2/3/4 filesystems reproducible at the byte level: the
// superblock's times and counters (StampSuperblock), and the inode tables' free
// slots and change counters (ScrubInodes), with their metadata_csum checksums.
// The agent sets creation times and generations with debugfs, and mkfs takes
// the UUID and hash seed it derives.
package ext

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
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

// ScrubInodes works through the inode tables of an unmounted ext2/3/4 filesystem.
// It zeroes the slots the inode bitmaps say are free: a deleted file leaves its inode
// behind, with the times and generation it had, where mke2fs left zeros. In the
// inodes in use, it zeroes the change counter (i_version), which counts how often the
// kernel wrote the inode and so depends on timing, and writes their checksums again.
func ScrubInodes(dev string) (cleared, scrubbed int, err error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sb := make([]byte, 1024)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return 0, 0, err
	}
	le := binary.LittleEndian
	if le.Uint16(sb[56:]) != 0xEF53 {
		return 0, 0, fmt.Errorf("%s: not an ext2/3/4 filesystem", dev)
	}
	logBlock := le.Uint32(sb[24:])
	if logBlock > 6 {
		return 0, 0, fmt.Errorf("%s: block size 1024<<%d out of range", dev, logBlock)
	}
	blockSize := int64(1024) << logBlock
	blocks := uint64(le.Uint32(sb[4:]))
	perGroup := int64(le.Uint32(sb[40:]))
	inodeSize := int64(le.Uint16(sb[88:]))
	if le.Uint32(sb[76:]) == 0 { // revision 0: 128-byte inodes
		inodeSize = 128
	}
	firstData := int64(le.Uint32(sb[20:]))
	blocksPerGroup := uint64(le.Uint32(sb[32:]))
	descSize := int64(32)
	incompat, roCompat := le.Uint32(sb[96:]), le.Uint32(sb[100:])
	is64 := incompat&0x80 != 0
	if is64 {
		blocks |= uint64(le.Uint32(sb[336:])) << 32
		descSize = int64(le.Uint16(sb[254:]))
	}
	csum := roCompat&0x400 != 0               // metadata_csum
	seed := crc32c(^uint32(0), sb[0x68:0x78]) // the filesystem's UUID
	if incompat&0x2000 != 0 {                 // csum_seed
		seed = le.Uint32(sb[0x270:])
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, 0, err
	}
	// Nothing read is trusted: what is read and allocated fits the device.
	if blocksPerGroup == 0 || uint64(firstData) >= blocks || perGroup <= 0 || perGroup > 8*blockSize ||
		inodeSize < 128 || inodeSize > blockSize || inodeSize&(inodeSize-1) != 0 ||
		descSize < 32 || descSize > 1024 || descSize&(descSize-1) != 0 || perGroup*inodeSize > size {
		return 0, 0, fmt.Errorf("%s: superblock geometry out of range", dev)
	}
	groups := int64((blocks - uint64(firstData) + blocksPerGroup - 1) / blocksPerGroup)
	if groups <= 0 || groups > size/descSize {
		return 0, 0, fmt.Errorf("%s: %d block groups: out of range", dev, groups)
	}
	descs := make([]byte, groups*descSize)
	if _, err := f.ReadAt(descs, (firstData+1)*blockSize); err != nil {
		return 0, 0, err
	}
	bitmap := make([]byte, blockSize)
	table := make([]byte, perGroup*inodeSize)
	zero := make([]byte, inodeSize)
	for g := range groups {
		d := descs[g*descSize:]
		if le.Uint16(d[18:])&1 != 0 { // INODE_UNINIT: nothing was ever written
			continue
		}
		bitmapAt, tableAt := int64(le.Uint32(d[4:])), int64(le.Uint32(d[8:]))
		if is64 && descSize >= 64 {
			bitmapAt |= int64(le.Uint32(d[0x24:])) << 32
			tableAt |= int64(le.Uint32(d[0x28:])) << 32
		}
		if _, err := f.ReadAt(bitmap, bitmapAt*blockSize); err != nil {
			return cleared, scrubbed, err
		}
		if _, err := f.ReadAt(table, tableAt*blockSize); err != nil {
			return cleared, scrubbed, err
		}
		dirty := false
		for i := range perGroup {
			in := table[i*inodeSize : (i+1)*inodeSize]
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				if !bytes.Equal(in, zero) {
					clear(in)
					cleared++
					dirty = true
				}
				continue
			}
			extra := int64(0)
			if inodeSize > 128 {
				extra = int64(le.Uint16(in[0x80:]))
			}
			changed := le.Uint32(in[0x24:]) != 0
			clear(in[0x24:0x28])
			if extra >= 0x1c {
				changed = changed || le.Uint32(in[0x98:]) != 0
				clear(in[0x98:0x9c])
			}
			if !changed {
				continue
			}
			scrubbed++
			dirty = true
			if csum {
				ino := uint32(g*perGroup + i + 1)
				inodeChecksum(in, seed, ino, extra >= 4)
			}
		}
		if dirty {
			if _, err := f.WriteAt(table, tableAt*blockSize); err != nil {
				return cleared, scrubbed, err
			}
		}
	}
	return cleared, scrubbed, f.Sync()
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
