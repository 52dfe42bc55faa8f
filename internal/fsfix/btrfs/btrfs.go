// Package btrfs makes btrfs filesystems (one device, single or DUP profiles,
// crc32c checksums) reproducible.
//
// mkfs.btrfs 6.2 draws three UUIDs at random and takes no option for them: the
// device's (in the superblock's device item and system chunk array, the chunk
// tree's device item and every chunk's stripes), the chunk tree's (in every tree
// block's header and every device extent) and the top subvolume's (its root item,
// and the UUID tree's key for it). The kernel stamps each new inode's creation
// time and each commit's root item times with the clock, to the nanosecond, and
// nothing can set them later. Fix, on an unmounted filesystem, walks every
// tree (chunk tree, root tree, and the trees the root tree lists), replaces the
// UUIDs it is given, clamps every time after the epoch in inode and root items,
// sets inodes' change counters to 0, writes the checksums again (of every copy of
// a DUP block, and of the superblock copies), and zeroes what no tree points to:
// in the system and metadata chunks,
// the blocks a transaction replaced, which keep the times they had, and outside
// the chunks, the trees mkfs.btrfs builds first at 1 MiB.
package btrfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"sort"

	"vmb.dev/vmb/internal/fsfix"
	"vmb.dev/vmb/internal/fsfix/blockdev"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var btrfsSuperblocks = []int64{64 << 10, 64 << 20, 256 << 30}

type btrfsFS struct {
	f        *os.File
	epoch    int64
	nodeSize int64
	sectSize int64
	fsid     []byte
	chunks   []btrfsChunk
	replace  [][2][]byte // old, new byte strings, in tree blocks and superblocks
	refs     []int64     // the tree blocks walked, by logical address
	changed  int
}

type btrfsChunk struct {
	logical, length int64
	typ             uint64
	phys            []int64 // each stripe's offset on the (only) device
}

// UUIDs are the UUIDs mkfs.btrfs draws that Fix sets: the device's, the chunk
// tree's and the top subvolume's.
type UUIDs struct {
	Dev, ChunkTree, Subvol [16]byte
}

// Fix makes the unmounted btrfs filesystem on dev reproducible (see the package
// comment) and returns how many tree blocks and superblocks it rewrote; uuids
// (nil after a job that is no format) are set in place of mkfs.btrfs's. A
// filesystem of a layout it does not know fails with fsfix.ErrUnsupported.
func Fix(dev string, epoch int64, uuids *UUIDs) (int, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := &btrfsFS{f: f, epoch: epoch}
	if err := b.fix(uuids); err != nil {
		return b.changed, fmt.Errorf("btrfs %s: %w", dev, err)
	}
	return b.changed, f.Sync()
}

func (b *btrfsFS) fix(uuids *UUIDs) error {
	le := binary.LittleEndian
	sb := make([]byte, 4096)
	if _, err := b.f.ReadAt(sb, btrfsSuperblocks[0]); err != nil {
		return err
	}
	if string(sb[64:72]) != "_BHRfS_M" {
		return errors.New("no btrfs superblock")
	}
	if t := le.Uint16(sb[196:]); t != 0 {
		return fmt.Errorf("%w: checksum type %d (only crc32c)", fsfix.ErrUnsupported, t)
	}
	b.nodeSize, b.sectSize = int64(le.Uint32(sb[148:])), int64(le.Uint32(sb[144:]))
	if b.nodeSize < 4096 || b.nodeSize > 65536 || b.sectSize < 4096 || b.sectSize > b.nodeSize {
		return fmt.Errorf("node size %d, sector size %d: out of range", b.nodeSize, b.sectSize)
	}
	if n := le.Uint64(sb[136:]); n != 1 {
		return fmt.Errorf("%w: %d devices", fsfix.ErrUnsupported, n)
	}
	b.fsid = bytes.Clone(sb[32:48])
	if le.Uint64(sb[188:])&(1<<10) != 0 { // METADATA_UUID: tree blocks carry that one
		b.fsid = bytes.Clone(sb[571:587])
	}
	// The system chunks, from the superblock; the others, from the chunk tree.
	arr := sb[811 : 811+min(int(le.Uint32(sb[160:])), 2048)]
	for len(arr) >= 17+48 {
		if arr[8] != 228 { // CHUNK_ITEM
			return fmt.Errorf("system chunk array: item of type %d", arr[8])
		}
		c, n, err := btrfsChunkItem(int64(le.Uint64(arr[9:])), arr[17:])
		if err != nil {
			return fmt.Errorf("system chunk array: %w", err)
		}
		b.chunks = append(b.chunks, c)
		arr = arr[17+n:]
	}
	chunkRoot, err := b.readTree(int64(le.Uint64(sb[88:])))
	if err != nil {
		return fmt.Errorf("chunk root: %w", err)
	}
	if chunkRoot[100] != 0 {
		return fmt.Errorf("%w: a chunk tree of %d levels", fsfix.ErrUnsupported, chunkRoot[100]+1)
	}
	b.chunks = nil // the chunk tree lists the system chunks too
	for _, it := range btrfsItems(chunkRoot) {
		if it.typ == 228 {
			c, _, err := btrfsChunkItem(int64(it.offset), it.data)
			if err != nil {
				return fmt.Errorf("chunk tree: %w", err)
			}
			b.chunks = append(b.chunks, c)
		}
	}

	if uuids != nil {
		oldSubvol, err := b.subvolUUID(int64(le.Uint64(sb[80:])))
		if err != nil {
			return err
		}
		pairs := [][2][]byte{
			{bytes.Clone(sb[267:283]), uuids.Dev[:]},
			{bytes.Clone(chunkRoot[64:80]), uuids.ChunkTree[:]},
			{oldSubvol, uuids.Subvol[:]},
		}
		for _, p := range pairs {
			b.replace = append(b.replace, p)
			// The UUID tree's key: the UUID's halves as objectid and offset,
			// with the key type (UUID_KEY_SUBVOL) between them.
			b.replace = append(b.replace, [2][]byte{btrfsUUIDKey(p[0]), btrfsUUIDKey(p[1])})
		}
	}

	if le.Uint64(sb[96:]) != 0 {
		return fmt.Errorf("%w: a log tree (not unmounted cleanly)", fsfix.ErrUnsupported)
	}
	if err := b.walkAll(sb); err != nil {
		return err
	}
	for _, at := range btrfsSuperblocks {
		if err := b.fixSuperblock(at); err != nil {
			return err
		}
	}
	// What no tree points to: blocks a transaction replaced (with the times
	// and, after mkfs.btrfs, the UUIDs they had), the trees mkfs.btrfs builds
	// first at 1 MiB and moves into its chunks.
	if err := b.f.Sync(); err != nil {
		return err
	}
	return blockdev.ZeroRanges(b.f, b.unreferenced(int64(le.Uint64(sb[112:]))))
}

// unreferenced returns the byte ranges of the device that hold no tree block the
// walk found and nothing else: free space in the system and metadata chunks, and
// the space outside the chunks past the first MiB, but for the superblock copies.
func (b *btrfsFS) unreferenced(size int64) [][2]int64 {
	used := [][2]int64{{0, 1 << 20}}
	for _, at := range btrfsSuperblocks {
		used = append(used, [2]int64{at, at + 4096})
	}
	for _, c := range b.chunks {
		for _, p := range c.phys {
			if c.typ&(2|4) == 0 { // data: all of it
				used = append(used, [2]int64{p, p + c.length})
				continue
			}
			for _, l := range b.refs {
				if l >= c.logical && l < c.logical+c.length {
					used = append(used, [2]int64{p + l - c.logical, p + l - c.logical + b.nodeSize})
				}
			}
		}
	}
	sort.Slice(used, func(i, j int) bool { return used[i][0] < used[j][0] })
	var free [][2]int64
	next := int64(0)
	for _, u := range append(used, [2]int64{size, size}) {
		if u[0] > next {
			free = append(free, [2]int64{next, min(u[0], size)})
		}
		next = max(next, u[1])
	}
	return free
}

func btrfsUUIDKey(u []byte) []byte {
	return append(append(bytes.Clone(u[:8]), 251), u[8:]...)
}

// btrfsChunkItem decodes a chunk item at logical address logical, returning its
// length in bytes.
func btrfsChunkItem(logical int64, d []byte) (btrfsChunk, int, error) {
	le := binary.LittleEndian
	if len(d) < 48 {
		return btrfsChunk{}, 0, errors.New("short chunk item")
	}
	n := int(le.Uint16(d[44:]))
	if n < 1 || 48+32*n > len(d) {
		return btrfsChunk{}, 0, fmt.Errorf("chunk item of %d stripes", n)
	}
	c := btrfsChunk{logical: logical, length: int64(le.Uint64(d)), typ: le.Uint64(d[24:])}
	if c.typ&^(1|2|4|1<<5) != 0 { // data, system, metadata, DUP: one device's profiles
		return btrfsChunk{}, 0, fmt.Errorf("%w: chunk profile %#x (only single and DUP)", fsfix.ErrUnsupported, c.typ)
	}
	for i := range n {
		c.phys = append(c.phys, int64(le.Uint64(d[48+32*i+8:])))
	}
	return c, 48 + 32*n, nil
}

// readTree reads the tree block at a logical address, checking it.
func (b *btrfsFS) readTree(logical int64) ([]byte, error) {
	_, blk, err := b.read(logical)
	return blk, err
}

func (b *btrfsFS) isTree(blk []byte, logical int64) bool {
	le := binary.LittleEndian
	return bytes.Equal(blk[32:48], b.fsid) && int64(le.Uint64(blk[48:])) == logical &&
		le.Uint32(blk) == crc32.Checksum(blk[32:], castagnoli)
}

// subvolUUID returns the top subvolume's UUID, from its root item in the root tree.
func (b *btrfsFS) subvolUUID(root int64) ([]byte, error) {
	blk, err := b.readTree(root)
	if err != nil {
		return nil, fmt.Errorf("root tree: %w", err)
	}
	if blk[100] != 0 {
		return nil, fmt.Errorf("%w: a root tree of more than one level after mkfs", fsfix.ErrUnsupported)
	}
	for _, it := range btrfsItems(blk) {
		if it.objectid == 5 && it.typ == 132 && len(it.data) >= 263 {
			return bytes.Clone(it.data[247:263]), nil
		}
	}
	return nil, errors.New("no root item for the top subvolume")
}

type btrfsItem struct {
	objectid, offset uint64
	typ              byte
	data             []byte // aliases the leaf
}

// btrfsItems lists a leaf's items (none for a node, or where it is damaged).
func btrfsItems(blk []byte) []btrfsItem {
	le := binary.LittleEndian
	if blk[100] != 0 {
		return nil
	}
	n := int(le.Uint32(blk[96:]))
	var items []btrfsItem
	for i := range n {
		at := 101 + 25*i
		if at+25 > len(blk) {
			return nil
		}
		off, size := 101+int(le.Uint32(blk[at+17:])), int(le.Uint32(blk[at+21:]))
		if off+size > len(blk) {
			return nil
		}
		items = append(items, btrfsItem{objectid: le.Uint64(blk[at:]), typ: blk[at+8], offset: le.Uint64(blk[at+9:]), data: blk[off : off+size]})
	}
	return items
}

// walkAll fixes every tree: the chunk tree, the root tree and the trees it lists.
func (b *btrfsFS) walkAll(sb []byte) error {
	le := binary.LittleEndian
	if _, err := b.collect(int64(le.Uint64(sb[88:])), int(sb[199]), false); err != nil {
		return fmt.Errorf("chunk tree: %w", err)
	}
	roots := [][2]int64{{int64(le.Uint64(sb[80:])), int64(sb[198])}}
	for i := 0; i < len(roots); i++ {
		items, err := b.collect(roots[i][0], int(roots[i][1]), i == 0)
		if err != nil {
			return fmt.Errorf("tree at %d: %w", roots[i][0], err)
		}
		for _, it := range items {
			if it.typ == 132 && len(it.data) >= 239 { // ROOT_ITEM: bytenr, level
				roots = append(roots, [2]int64{int64(le.Uint64(it.data[176:])), int64(it.data[238])})
			}
		}
	}
	return nil
}

// collect fixes the tree under the block at a logical address, and returns its
// leaves' items if want.
func (b *btrfsFS) collect(logical int64, level int, want bool) ([]btrfsItem, error) {
	le := binary.LittleEndian
	c, blk, err := b.read(logical)
	if err != nil {
		return nil, err
	}
	if int(blk[100]) != level {
		return nil, fmt.Errorf("block %d: level %d, not %d", logical, blk[100], level)
	}
	b.refs = append(b.refs, logical)
	if b.fixTree(blk) {
		le.PutUint32(blk, crc32.Checksum(blk[32:], castagnoli))
		for _, p := range c.phys { // every copy (DUP)
			if _, err := b.f.WriteAt(blk, p+logical-c.logical); err != nil {
				return nil, err
			}
		}
		b.changed++
	}
	if level == 0 {
		if want {
			return btrfsItems(blk), nil
		}
		return nil, nil
	}
	n := int(le.Uint32(blk[96:]))
	if 101+33*n > len(blk) {
		return nil, fmt.Errorf("block %d: %d pointers", logical, n)
	}
	var items []btrfsItem
	for i := range n {
		// A key (17 bytes), the child's address, its generation.
		child, err := b.collect(int64(le.Uint64(blk[101+33*i+17:])), level-1, want)
		if err != nil {
			return nil, err
		}
		items = append(items, child...)
	}
	return items, nil
}

// read reads the tree block at a logical address, checking it, and returns its
// chunk.
func (b *btrfsFS) read(logical int64) (btrfsChunk, []byte, error) {
	for _, c := range b.chunks {
		if logical >= c.logical && logical+b.nodeSize <= c.logical+c.length {
			blk := make([]byte, b.nodeSize)
			if _, err := b.f.ReadAt(blk, c.phys[0]+logical-c.logical); err != nil {
				return c, nil, err
			}
			if !b.isTree(blk, logical) {
				return c, nil, fmt.Errorf("no tree block at %d", logical)
			}
			return c, blk, nil
		}
	}
	return btrfsChunk{}, nil, fmt.Errorf("logical address %d in no chunk", logical)
}

// fixTree replaces the UUIDs in a tree block and clamps the times of its inode and
// root items; it says whether it changed anything.
func (b *btrfsFS) fixTree(blk []byte) bool {
	changed := b.replaceIn(blk[32:])
	for _, it := range btrfsItems(blk) {
		switch it.typ {
		case 1: // INODE_ITEM: atime, ctime, mtime, otime
			changed = b.clamp(it.data, 112, 124, 136, 148) || changed
			// Its change counter: how often the kernel counted depends on
			// its clock's ticks.
			if len(it.data) >= 80 && binary.LittleEndian.Uint64(it.data[72:]) != 0 {
				binary.LittleEndian.PutUint64(it.data[72:], 0)
				changed = true
			}
		case 132: // ROOT_ITEM: its inode's times, then ctime, otime, stime, rtime
			changed = b.clamp(it.data, 112, 124, 136, 148, 327, 339, 351, 363) || changed
		}
	}
	return changed
}

func (b *btrfsFS) replaceIn(p []byte) bool {
	changed := false
	for _, r := range b.replace {
		for i := 0; ; {
			j := bytes.Index(p[i:], r[0])
			if j < 0 {
				break
			}
			copy(p[i+j:], r[1])
			i += j + len(r[0])
			changed = true
		}
	}
	return changed
}

// clamp sets the times (seconds, then nanoseconds) at the given offsets of d that
// are after the epoch to it.
func (b *btrfsFS) clamp(d []byte, at ...int) bool {
	le := binary.LittleEndian
	changed := false
	for _, at := range at {
		if at+12 > len(d) {
			continue
		}
		s, ns := int64(le.Uint64(d[at:])), le.Uint32(d[at+8:])
		if s > b.epoch || s == b.epoch && ns != 0 {
			le.PutUint64(d[at:], uint64(b.epoch))
			le.PutUint32(d[at+8:], 0)
			changed = true
		}
	}
	return changed
}

// fixSuperblock replaces the UUIDs in a superblock copy inside the device.
func (b *btrfsFS) fixSuperblock(at int64) error {
	sb := make([]byte, 4096)
	if _, err := b.f.ReadAt(sb, at); err != nil || string(sb[64:72]) != "_BHRfS_M" {
		return nil // the device ends before it
	}
	if !b.replaceIn(sb[32:]) {
		return nil
	}
	binary.LittleEndian.PutUint32(sb, crc32.Checksum(sb[32:], castagnoli))
	b.changed++
	_, err := b.f.WriteAt(sb, at)
	return err
}
