// Package xfs maps the byte ranges of an XFS filesystem to what they hold: the
// superblock and its secondary copies, each allocation group's AGF, AGI and AGFL,
// the blocks of its free-space, inode, free-inode, reverse-mapping and
// reference-count btrees, inode chunks (which inodes), the internal log, and the
// blocks of inodes' forks: file data, directory blocks, extent btree (bmbt) blocks
// and extended attribute blocks (which inode, which path), or free space.
//
// It walks the filesystem as xfs_repair does: per allocation group the headers,
// the inode btree's records to find the inode chunks, every inode in use for its
// forks (extent list or btree), then the directories from the root (short form in
// the inode, or data blocks) for paths. V5 (CRC) filesystems, as mkfs.xfs makes by
// default, are its aim; v4 is read as far as its layout is the same. A realtime
// device is not mapped. It reads through an io.ReaderAt, only what it needs, and
// trusts no number it reads: a hostile filesystem costs bounded reads and time.
package xfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"

	"vmb.dev/vmb/internal/fsmap"
)

var be = binary.BigEndian

// Span is what Locate answers with.
type Span = fsmap.Span

// FS is an XFS filesystem opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	bs, ss             int64 // block and sector size
	dblocks            int64 // blocks in the data device
	agBlocks, agCount  int64
	agBlkLog, inoPBLog uint
	inodeSize          int64
	dirBlocks          int64 // a directory block, in filesystem blocks
	v5, ftype, sparse  bool
	finobt, rmap, refc bool
	logStart, logLen   int64 // linear blocks; logLen 0: external log
	rootIno            uint64
	special            map[uint64]string // inodes with a role: quota, realtime bitmap, …

	walked  bool
	walkErr error
	reads   int64 // blocks walk may still read: a bound on hostile metadata
	runs    []run // sorted by start once walked
	seen    map[int64]bool
	dirs    map[uint64][]dirExtent // directories' data blocks
	sfdirs  map[uint64][]byte      // short-form directories' forks
	paths   map[uint64]string
}

// kind is what a run of blocks holds.
type kind uint8

const (
	kFree kind = iota
	kAGFL
	kBno
	kCnt
	kInobt
	kFinobt
	kRmap
	kRefc
	kLog
	kInodes
	kData
	kDir
	kDirLeaf
	kDirFree
	kSymlink
	kBmbt
	kAttr
	kSpecial
)

var kindNames = [...]string{
	kFree:    "free space",
	kAGFL:    "AGFL block (free, kept for btrees)",
	kBno:     "free-space btree by block (bnobt)",
	kCnt:     "free-space btree by size (cntbt)",
	kInobt:   "inode btree (inobt)",
	kFinobt:  "free inode btree (finobt)",
	kRmap:    "reverse-mapping btree (rmapbt)",
	kRefc:    "reference count btree (refcountbt)",
	kLog:     "log",
	kInodes:  "inode chunk",
	kData:    "file data",
	kDir:     "directory",
	kDirLeaf: "directory leaf",
	kDirFree: "directory free index",
	kSymlink: "symbolic link",
	kBmbt:    "extent btree (bmbt)",
	kAttr:    "extended attribute block",
}

// run is a run of blocks (linear: AG number × AG size + block in the AG) and what
// it holds; ino is the inode it belongs to, or the AG-relative first inode's
// number of an inode chunk.
type run struct {
	start, n int64
	kind     kind
	ino      uint64
}

// dirExtent is an extent of a directory's data segment.
type dirExtent struct{ start, n int64 }

// Superblock features this package reads.
const (
	incompatFtype    = 0x1
	incompatSpinodes = 0x2
	incompatNrext64  = 0x20
	roFinobt         = 0x1
	roRmapbt         = 0x2
	roReflink        = 0x4
	v4Ftype          = 0x200 // in features2
)

// Open reads the superblock of the XFS filesystem r of size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < 512 {
		return nil, errors.New("xfs: too small for a superblock")
	}
	sb := make([]byte, 512)
	if _, err := r.ReadAt(sb, 0); err != nil {
		return nil, fmt.Errorf("xfs: read the superblock: %w", err)
	}
	if string(sb[:4]) != "XFSB" {
		return nil, errors.New("xfs: no superblock")
	}
	f := &FS{r: r, size: size, special: map[uint64]string{}}
	f.bs = int64(be.Uint32(sb[4:]))
	f.dblocks = int64(be.Uint64(sb[8:]) & math.MaxInt64)
	f.agBlocks = int64(be.Uint32(sb[84:]))
	f.agCount = int64(be.Uint32(sb[88:]))
	f.ss = int64(be.Uint16(sb[102:]))
	f.inodeSize = int64(be.Uint16(sb[104:]))
	blockLog, inodeLog := uint(sb[120]), uint(sb[122])
	f.inoPBLog, f.agBlkLog = uint(sb[123]), uint(sb[124])
	f.dirBlocks = 1 << min(uint(sb[192]), 16)
	version := be.Uint16(sb[100:]) & 0xf
	features2 := be.Uint32(sb[200:])
	roCompat, incompat := be.Uint32(sb[212:]), be.Uint32(sb[216:])
	f.v5 = version == 5
	if f.v5 {
		f.ftype = incompat&incompatFtype != 0
		f.sparse = incompat&incompatSpinodes != 0
		f.finobt = roCompat&roFinobt != 0
		f.rmap = roCompat&roRmapbt != 0
		f.refc = roCompat&roReflink != 0
	} else {
		f.ftype = features2&v4Ftype != 0
	}
	if version < 4 || version > 5 || f.bs < 512 || f.bs > 65536 || f.bs != 1<<blockLog ||
		f.ss < 512 || f.ss > f.bs || f.ss&(f.ss-1) != 0 ||
		f.inodeSize < 256 && f.v5 || f.inodeSize < 128 || f.inodeSize > f.bs/2 || f.inodeSize != 1<<inodeLog ||
		f.bs>>f.inoPBLog != f.inodeSize || f.agBlkLog > 31 || f.agBlocks < 8 || f.agBlocks > 1<<f.agBlkLog ||
		f.agCount <= 0 || f.agCount > math.MaxInt64/4/f.agBlocks/f.bs ||
		f.dblocks <= 0 || f.dblocks > f.agCount*f.agBlocks || f.dblocks <= (f.agCount-1)*f.agBlocks {
		return nil, errors.New("xfs: superblock geometry out of range")
	}
	f.rootIno = be.Uint64(sb[56:])
	// A truncated image is mapped as far as it goes: no check of dblocks against size.
	if ls, ok := f.linear(be.Uint64(sb[48:])); ok && be.Uint64(sb[48:]) != 0 {
		f.logStart, f.logLen = ls, min(int64(be.Uint32(sb[96:])), f.dblocks-ls)
	}
	for _, s := range []struct {
		at   int
		role string
	}{{64, "realtime bitmap"}, {72, "realtime summary"}, {160, "user quota"}, {168, "group quota"}, {232, "project quota"}} {
		if s.at == 232 && !f.v5 {
			continue
		}
		if ino := be.Uint64(sb[s.at:]); ino != 0 && ino != math.MaxUint64 {
			f.special[ino] = s.role
		}
	}
	return f, nil
}

// BlockSize is the filesystem's block size in bytes.
func (f *FS) BlockSize() int64 { return f.bs }

// linear turns a filesystem block number (AG number, then block in the AG, each
// in its bits) into a block number from the start of the device.
func (f *FS) linear(fsb uint64) (int64, bool) {
	ag, agbno := int64(fsb>>f.agBlkLog), int64(fsb&(1<<f.agBlkLog-1))
	if fsb>>f.agBlkLog >= uint64(f.agCount) || agbno >= f.agBlocks {
		return 0, false
	}
	b := ag*f.agBlocks + agbno
	return b, b < f.dblocks
}

// Locate says what the byte range [off, off+n) of the filesystem holds, as spans
// in offset order: consecutive blocks (or header sectors) that hold the same
// structure of the same inodes make one span.
func (f *FS) Locate(off, n int64) ([]Span, error) {
	if off < 0 || n <= 0 || off >= f.size {
		return nil, nil
	}
	if err := f.walk(); err != nil {
		return nil, err
	}
	end := min(off+n, f.size)
	var out []Span
	var inos [][]uint64 // per span in out: the inodes, 64-bit
	for pos := off; pos < end; {
		next, s, si := f.classify(pos)
		next = min(next, end)
		if k := len(out) - 1; k >= 0 && out[k].Structure == s.Structure && (s.Structure == kindNames[kInodes] || slices.Equal(inos[k], si)) {
			out[k].Len += next - pos
			if s.Structure == kindNames[kInodes] {
				inos[k] = append(inos[k], inodesIn(si, pos, next, f.inodeSize)...)
			}
		} else {
			if s.Structure == kindNames[kInodes] {
				si = inodesIn(si, pos, next, f.inodeSize)
			}
			s.Off = pos
			s.Len = next - pos
			out = append(out, s)
			inos = append(inos, si)
		}
		pos = next
	}
	for i := range out {
		for _, ino := range inos[i] {
			out[i].Inodes = append(out[i].Inodes, ino)
			if p, ok := f.paths[ino]; ok {
				out[i].Paths = append(out[i].Paths, p)
			}
		}
	}
	return out, nil
}

// inodesIn lists the inodes of a chunk block whose bytes [pos, next) are asked
// about; chunk is {first inode of the block, byte offset of the block}.
func inodesIn(chunk []uint64, pos, next, isz int64) []uint64 {
	if len(chunk) != 2 {
		return nil
	}
	var out []uint64
	for k := (pos - int64(chunk[1])) / isz; k <= (next-1-int64(chunk[1]))/isz; k++ {
		out = append(out, chunk[0]+uint64(k))
	}
	return out
}

// classify says what the byte at pos holds, up to where it holds it (next), and
// its inodes; for an inode chunk those are {first inode of the block, the block's
// byte offset}, for Locate to narrow.
func (f *FS) classify(pos int64) (next int64, s Span, inos []uint64) {
	b := pos / f.bs
	next = (b + 1) * f.bs
	if b >= f.dblocks {
		return f.size, Span{Structure: "past the filesystem's last block"}, nil
	}
	ag := b / f.agBlocks
	agStart := ag * f.agBlocks * f.bs
	if in := pos - agStart; in < 4*f.ss {
		sector := in / f.ss
		name := [4]string{"superblock", "AGF", "AGI", "AGFL"}[sector]
		if ag > 0 && sector == 0 {
			name = "secondary superblock"
		}
		if ag > 0 || sector > 0 {
			name += fmt.Sprintf(" (AG %d)", ag)
		}
		return agStart + (sector+1)*f.ss, Span{Structure: name}, nil
	} else if hdrEnd := (4*f.ss + f.bs - 1) / f.bs * f.bs; in < hdrEnd {
		return agStart + hdrEnd, Span{Structure: "AG header block, unused"}, nil
	}
	i := sort.Search(len(f.runs), func(i int) bool { return f.runs[i].start > b }) - 1
	if i < 0 || b >= f.runs[i].start+f.runs[i].n {
		if f.logLen > 0 && b >= f.logStart && b < f.logStart+f.logLen {
			return next, Span{Structure: kindNames[kLog]}, nil
		}
		return next, Span{Structure: "allocated, owner unknown"}, nil
	}
	r := f.runs[i]
	switch r.kind {
	case kInodes:
		agino := (b-ag*f.agBlocks)<<f.inoPBLog | 0
		first := uint64(ag)<<(f.agBlkLog+f.inoPBLog) | uint64(agino)
		return next, Span{Structure: kindNames[kInodes]}, []uint64{first, uint64(b * f.bs)}
	case kFree, kAGFL, kBno, kCnt, kInobt, kFinobt, kRmap, kRefc, kLog:
		return next, Span{Structure: kindNames[r.kind]}, nil
	case kSpecial:
		return next, Span{Structure: f.special[r.ino]}, []uint64{r.ino}
	}
	return next, Span{Structure: kindNames[r.kind]}, []uint64{r.ino}
}
