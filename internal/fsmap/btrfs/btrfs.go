// Package btrfs maps the byte ranges of a btrfs filesystem to what they hold: the
// superblock and its mirrors, the nodes of each tree (root, chunk, extent, device,
// checksum, free space, UUID, quota, block group, log, and the fs tree and
// subvolumes' trees, with the inodes whose items a leaf holds), files' data
// extents (which inode, which path), the unused space of data, metadata and
// system chunks, and the space outside every chunk.
//
// btrfs addresses its metadata and data by logical address: the superblock's
// sys_chunk_array and the chunk tree map those to the device. This package reads
// the superblock, the chunk tree, then the root tree and every tree it names, and
// the fs trees' EXTENT_DATA items for files' data; INODE_REF and ROOT_BACKREF
// items give paths. Only single-device filesystems are mapped (the only ones vmb
// makes), with the SINGLE and DUP profiles; another profile's chunks are named by
// type, not followed. It reads through an io.ReaderAt, only what it needs, and
// trusts no number it reads: a hostile filesystem costs bounded reads and time.
package btrfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"

	"vmb.dev/vmb/internal/fsmap"
)

var le = binary.LittleEndian

// Span is what Locate answers with.
type Span = fsmap.Span

const (
	superOff  = 0x10000
	superSize = 4096
)

// superMirrors are where the superblock's copies lie, those the device holds.
var superMirrors = []int64{superOff, 64 << 20, 256 << 30, 1 << 50}

// FS is a btrfs filesystem opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	nodeSize, sectorSize     int64
	root, chunkRoot, logRoot uint64
	rootLevel, chunkLevel    uint8
	logLevel                 uint8
	chunks                   []chunk // by logical address

	walked  bool
	walkErr error
	reads   int64 // bytes walk may still read: a bound on hostile metadata
	seen    map[uint64]bool
	raw     []run // as the walk finds them
	runs    []run // flattened: sorted, disjoint
	stripes []stripe
	refs    map[owner]ref  // per tree and inode: its name in its parent directory
	subvols map[uint64]ref // per subvolume tree: its name in its parent's directory
}

// chunk maps logical [logical, logical+length) to each stripe's physical offset.
type chunk struct {
	logical, length int64
	typ             uint64
	phys            []int64 // one per stripe on this device; nil when the profile is not mapped
}

// stripe is a chunk's stretch of the device.
type stripe struct {
	start, end int64
	typ        uint64
}

// Chunk type bits.
const (
	typeData     = 0x1
	typeSystem   = 0x2
	typeMetadata = 0x4
	typeDup      = 0x20
	typeProfiles = 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 // RAID0, 1, 10, 5, 6, 1C3, 1C4
)

// owner is an inode of a tree.
type owner struct{ tree, ino uint64 }

// ref is an inode's name in its parent directory (or a subvolume's in its parent
// tree's directory).
type ref struct {
	parent owner
	name   string
}

// run is a byte range of the device and what it holds.
type run struct {
	start, end int64
	what       string
	owners     []owner
}

// Open reads the superblock and chunk tree of the btrfs filesystem r of size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < superOff+superSize {
		return nil, errors.New("btrfs: too small for a superblock")
	}
	sb := make([]byte, superSize)
	if _, err := r.ReadAt(sb, superOff); err != nil {
		return nil, fmt.Errorf("btrfs: read the superblock: %w", err)
	}
	if string(sb[64:72]) != "_BHRfS_M" {
		return nil, errors.New("btrfs: no superblock")
	}
	f := &FS{r: r, size: size}
	f.root, f.chunkRoot, f.logRoot = le.Uint64(sb[80:]), le.Uint64(sb[88:]), le.Uint64(sb[96:])
	f.sectorSize, f.nodeSize = int64(le.Uint32(sb[144:])), int64(le.Uint32(sb[148:]))
	f.rootLevel, f.chunkLevel, f.logLevel = sb[198], sb[199], sb[200]
	if numDevices := le.Uint64(sb[136:]); numDevices != 1 {
		return nil, fmt.Errorf("btrfs: %d devices: only single-device filesystems are mapped", numDevices)
	}
	if f.sectorSize < 512 || f.sectorSize > 65536 || f.sectorSize&(f.sectorSize-1) != 0 ||
		f.nodeSize < f.sectorSize || f.nodeSize > 65536 || f.nodeSize&(f.nodeSize-1) != 0 {
		return nil, errors.New("btrfs: superblock geometry out of range")
	}
	// The system chunks, from the superblock: enough to read the chunk tree.
	arr := sb[0x32b:]
	n := int(le.Uint32(sb[160:]))
	if n > 2048 {
		return nil, errors.New("btrfs: sys_chunk_array too long")
	}
	arr = arr[:n]
	for len(arr) >= 17 {
		typ := arr[8]
		if typ != keyChunk {
			return nil, fmt.Errorf("btrfs: sys_chunk_array: item of type %d", typ)
		}
		c, used, ok := parseChunk(arr[17:], int64(le.Uint64(arr[9:])))
		if !ok {
			return nil, errors.New("btrfs: sys_chunk_array: truncated chunk")
		}
		f.addChunk(c)
		arr = arr[17+used:]
	}
	f.reads = 2*size + 64<<20 // bytes of metadata: each node is read once
	f.seen = map[uint64]bool{}
	f.tree(f.chunkRoot, f.chunkLevel, "chunk tree", 3, func(k key, data []byte, _ int64) {
		if k.typ == keyChunk {
			if c, _, ok := parseChunk(data, int64(k.offset)); ok {
				f.addChunk(c)
			}
		}
	})
	if len(f.chunks) == 0 {
		return nil, errors.New("btrfs: no chunk")
	}
	return f, nil
}

// parseChunk reads a chunk item at logical address logical; used is its length.
func parseChunk(b []byte, logical int64) (c chunk, used int, ok bool) {
	if len(b) < 48 {
		return c, 0, false
	}
	c.logical, c.length, c.typ = logical, int64(le.Uint64(b)), le.Uint64(b[24:])
	ns := int(le.Uint16(b[44:]))
	used = 48 + 32*ns
	if ns == 0 || len(b) < used || c.length <= 0 || c.logical < 0 || c.logical > math.MaxInt64-c.length {
		return c, 0, false
	}
	for i := range ns {
		s := b[48+32*i:]
		if le.Uint64(s) != 1 { // devid: only the one device
			continue
		}
		c.phys = append(c.phys, int64(le.Uint64(s[8:])&math.MaxInt64))
	}
	if c.typ&typeProfiles != 0 && ns > 1 {
		c.phys = nil // striped or mirrored over devices this package does not follow
	}
	return c, used, true
}

// addChunk records c, unless it overlaps one recorded.
func (f *FS) addChunk(c chunk) {
	i := sort.Search(len(f.chunks), func(i int) bool { return f.chunks[i].logical >= c.logical })
	if i < len(f.chunks) && f.chunks[i].logical < c.logical+c.length || i > 0 && f.chunks[i-1].logical+f.chunks[i-1].length > c.logical {
		return
	}
	if len(f.chunks) > 1<<20 {
		return
	}
	f.chunks = append(f.chunks, chunk{})
	copy(f.chunks[i+1:], f.chunks[i:])
	f.chunks[i] = c
}

// physical maps logical [l, l+n) to the device: one offset per copy.
func (f *FS) physical(l, n int64) []int64 {
	i := sort.Search(len(f.chunks), func(i int) bool { return f.chunks[i].logical+f.chunks[i].length > l })
	if i == len(f.chunks) || f.chunks[i].logical > l || l+n > f.chunks[i].logical+f.chunks[i].length || n < 0 {
		return nil
	}
	c := f.chunks[i]
	var out []int64
	for _, p := range c.phys {
		if at := p + l - c.logical; at >= 0 && at <= f.size-n {
			out = append(out, at)
		}
	}
	return out
}

// readLogical reads n bytes at logical address l, from its first copy.
func (f *FS) readLogical(l uint64, n int64) []byte {
	if l > math.MaxInt64 || f.reads < n {
		return nil
	}
	ps := f.physical(int64(l), n)
	if len(ps) == 0 {
		return nil
	}
	f.reads -= n
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, ps[0]); err != nil {
		return nil
	}
	return b
}
