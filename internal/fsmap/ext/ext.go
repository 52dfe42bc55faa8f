// Package ext maps the byte ranges of an ext2/3/4 filesystem to what they hold:
// the superblock and its backups, group descriptors, bitmaps, inode tables (which
// inodes), the journal, directories, files' data and extent trees (which inode,
// which path), or free blocks. It reads the filesystem through an io.ReaderAt, only
// what it needs, and trusts no number it reads.
package ext

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"

	"vmb.dev/vmb/internal/fsmap"
)

var le = binary.LittleEndian

// FS is an ext2/3/4 filesystem opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	blockSize       int64
	blocks          int64 // in the filesystem
	firstData       int64 // the block holding the superblock: 1 for 1 KiB blocks, else 0
	blocksPerGroup  int64
	inodesPerGroup  int64
	inodeSize       int64
	descSize        int64
	gdtBlocks       int64 // group descriptor blocks
	reservedGDT     int64 // reserved GDT blocks after them
	sparse, sparse2 bool
	backupBGs       [2]int64 // sparse_super2's backup groups
	gdtCsum         bool     // bg_itable_unused can be trusted
	groups          []group
	special         map[uint32]string // inodes with a role: journal, quota, …

	walked  bool
	buf     []byte
	reads   int64              // blocks walk may still read: a bound on hostile metadata
	owners  []owner            // blocks of inodes, sorted by start
	xattr   map[int64][]uint32 // shared xattr blocks -> the inodes using them
	dirs    map[uint32][]owner // directories' blocks
	paths   map[uint32]string
	walkErr error

	tree map[string]uint32 // Paths': every path's inode
}

type group struct {
	blockBitmap, inodeBitmap, inodeTable int64 // block numbers
	flags                                uint16
	itableUnused                         int64
}

// Group descriptor flags.
const (
	inodeUninit = 0x1
	blockUninit = 0x2
)

// kind is what an inode's block holds.
type kind uint8

const (
	kData kind = iota
	kDir
	kSymlink
	kTree    // an extent tree node or indirect block
	kSpecial // a block of an inode with a role (the journal, …)
)

// owner is a run of blocks that belongs to an inode.
type owner struct {
	start, n int64
	ino      uint32
	kind     kind
}

// Open reads the superblock and group descriptors of the ext2/3/4 filesystem r of
// size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	sb := make([]byte, 1024)
	if size < 2048 {
		return nil, errors.New("ext: too small for a superblock")
	}
	if _, err := r.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("ext: read the superblock: %w", err)
	}
	if le.Uint16(sb[56:]) != 0xEF53 {
		return nil, errors.New("ext: no superblock")
	}
	f := &FS{r: r, size: size, special: map[uint32]string{}}
	logBlock := le.Uint32(sb[24:])
	if logBlock > 6 {
		return nil, fmt.Errorf("ext: block size 1024<<%d out of range", logBlock)
	}
	f.blockSize = 1024 << logBlock
	f.blocks = int64(le.Uint32(sb[4:]))
	incompat, roCompat, compat := le.Uint32(sb[96:]), le.Uint32(sb[100:]), le.Uint32(sb[92:])
	f.descSize = 32
	if incompat&0x80 != 0 { // 64bit
		f.blocks |= int64(le.Uint32(sb[336:])&0xffff) << 32
		f.descSize = int64(le.Uint16(sb[254:]))
	}
	if incompat&0x10 != 0 {
		return nil, errors.New("ext: meta_bg is not mapped")
	}
	f.firstData = int64(le.Uint32(sb[20:]))
	f.blocksPerGroup = int64(le.Uint32(sb[32:]))
	f.inodesPerGroup = int64(le.Uint32(sb[40:]))
	f.inodeSize = 128
	if le.Uint32(sb[76:]) != 0 {
		f.inodeSize = int64(le.Uint16(sb[88:]))
	}
	f.sparse = roCompat&0x1 != 0
	f.sparse2 = compat&0x200 != 0
	f.backupBGs = [2]int64{int64(le.Uint32(sb[0x24c:])), int64(le.Uint32(sb[0x250:]))}
	f.gdtCsum = roCompat&(0x10|0x400) != 0
	if compat&0x10 != 0 { // resize_inode
		f.reservedGDT = int64(le.Uint16(sb[0xce:]))
	}
	bs := f.blockSize
	if f.blocksPerGroup <= 0 || f.blocksPerGroup > 8*bs || f.firstData > 1 || f.firstData >= f.blocks ||
		f.blocks > size/bs || f.inodesPerGroup <= 0 || f.inodesPerGroup > 8*bs ||
		f.inodeSize < 128 || f.inodeSize > bs || f.inodeSize&(f.inodeSize-1) != 0 ||
		f.descSize < 32 || f.descSize > 1024 || f.descSize&(f.descSize-1) != 0 {
		return nil, errors.New("ext: superblock geometry out of range")
	}
	ngroups := (f.blocks - f.firstData + f.blocksPerGroup - 1) / f.blocksPerGroup
	f.gdtBlocks = (ngroups*f.descSize + bs - 1) / bs
	if f.reservedGDT > f.blocksPerGroup {
		f.reservedGDT = 0
	}
	descs := make([]byte, ngroups*f.descSize)
	if _, err := r.ReadAt(descs, (f.firstData+1)*bs); err != nil {
		return nil, fmt.Errorf("ext: read the group descriptors: %w", err)
	}
	for g := range ngroups {
		d := descs[g*f.descSize:]
		gr := group{
			blockBitmap: int64(le.Uint32(d[0:])),
			inodeBitmap: int64(le.Uint32(d[4:])),
			inodeTable:  int64(le.Uint32(d[8:])),
			flags:       le.Uint16(d[18:]),
		}
		if f.gdtCsum {
			gr.itableUnused = int64(le.Uint16(d[0x1c:]))
		}
		if f.descSize >= 64 {
			gr.blockBitmap |= int64(le.Uint32(d[0x20:])) << 32
			gr.inodeBitmap |= int64(le.Uint32(d[0x24:])) << 32
			gr.inodeTable |= int64(le.Uint32(d[0x28:])) << 32
			if f.gdtCsum {
				gr.itableUnused |= int64(le.Uint16(d[0x32:])) << 16
			}
		}
		f.groups = append(f.groups, gr)
	}
	for _, s := range []struct {
		at   int
		role string
	}{{0xe0, "journal"}, {0x240, "user quota"}, {0x244, "group quota"}, {0x26c, "project quota"}, {0x280, "orphan file"}} {
		if ino := le.Uint32(sb[s.at:]); ino != 0 {
			f.special[ino] = s.role
		}
	}
	f.special[1], f.special[5], f.special[7] = "bad blocks inode", "boot loader inode", "resize inode"
	return f, nil
}

// BlockSize is the filesystem's block size in bytes.
func (f *FS) BlockSize() int64 { return f.blockSize }

// Span is what Locate answers with: a byte range and the structure, inodes and
// paths it holds.
type Span = fsmap.Span

// Locate says what the byte range [off, off+n) of the filesystem holds, as spans
// in offset order: consecutive blocks that hold the same kind of structure of the
// same inodes make one span.
func (f *FS) Locate(off, n int64) ([]Span, error) {
	if off < 0 || n <= 0 || off >= f.size {
		return nil, nil
	}
	if err := f.walk(); err != nil {
		return nil, err
	}
	end := min(off+n, f.size)
	var out []Span
	for pos := off; pos < end; {
		// The first block holds the boot sector and the superblock: told apart by byte.
		var next int64
		var s Span
		switch {
		case pos < 1024:
			next, s = 1024, Span{Structure: "boot sector"}
		case pos < 2048:
			next, s = 2048, Span{Structure: "superblock"}
		default:
			b := pos / f.blockSize
			next = (b + 1) * f.blockSize
			s = f.classify(b, pos, min(next, end))
		}
		next = min(next, end)
		s.Off, s.Len = pos, next-pos
		if k := len(out) - 1; k >= 0 && out[k].Structure == s.Structure && sameOwner(out[k], s) {
			out[k].Len += s.Len
			out[k].Inodes = union(out[k].Inodes, s.Inodes)
		} else {
			out = append(out, s)
		}
		pos = next
	}
	for i := range out {
		for _, ino := range out[i].Inodes {
			if p, ok := f.paths[uint32(ino)]; ok {
				out[i].Paths = append(out[i].Paths, p)
			}
		}
	}
	return out, nil
}

// sameOwner reports whether two adjacent spans may merge: inode table spans always
// (their inodes add up), others when they belong to the same inodes.
func sameOwner(a, b Span) bool {
	if a.Structure == "inode table" {
		return true
	}
	if len(a.Inodes) != len(b.Inodes) {
		return false
	}
	for i := range a.Inodes {
		if a.Inodes[i] != b.Inodes[i] {
			return false
		}
	}
	return true
}

func union(a, b []uint64) []uint64 {
	for _, x := range b {
		if i := sort.Search(len(a), func(i int) bool { return a[i] >= x }); i == len(a) || a[i] != x {
			a = append(a, 0)
			copy(a[i+1:], a[i:])
			a[i] = x
		}
	}
	return a
}

// hasSuper reports whether group g holds a copy of the superblock and descriptors.
func (f *FS) hasSuper(g int64) bool {
	switch {
	case g == 0:
		return true
	case f.sparse2:
		return g == f.backupBGs[0] || g == f.backupBGs[1]
	case !f.sparse, g == 1:
		return true
	}
	for _, p := range []int64{3, 5, 7} {
		x := p
		for x < g {
			x *= p
		}
		if x == g {
			return true
		}
	}
	return false
}

// classify says what block b holds; [pos, end) is the part of it asked about.
func (f *FS) classify(b, pos, end int64) Span {
	if b >= f.blocks {
		return Span{Structure: "past the filesystem's last block"}
	}
	g := (b - f.firstData) / f.blocksPerGroup
	if b < f.firstData {
		g = 0
	}
	if g >= 0 && g < int64(len(f.groups)) {
		first := f.firstData + g*f.blocksPerGroup
		if f.hasSuper(g) && g > 0 {
			switch rel := b - first; {
			case rel == 0:
				return Span{Structure: fmt.Sprintf("backup superblock (group %d)", g)}
			case rel <= f.gdtBlocks:
				return Span{Structure: fmt.Sprintf("backup group descriptors (group %d)", g)}
			case rel <= f.gdtBlocks+f.reservedGDT:
				return Span{Structure: fmt.Sprintf("reserved GDT blocks (group %d)", g), Inodes: []uint64{7}}
			}
		} else if g == 0 {
			switch rel := b - f.firstData; {
			case rel == 0:
				return Span{Structure: "superblock"}
			case rel <= f.gdtBlocks:
				return Span{Structure: "group descriptors"}
			case rel <= f.gdtBlocks+f.reservedGDT:
				return Span{Structure: "reserved GDT blocks", Inodes: []uint64{7}}
			}
		}
	}
	for i, gr := range f.groups { // flex_bg packs them anywhere: ask every group
		switch {
		case b == gr.blockBitmap:
			return Span{Structure: fmt.Sprintf("block bitmap (group %d)", i)}
		case b == gr.inodeBitmap:
			return Span{Structure: fmt.Sprintf("inode bitmap (group %d)", i)}
		case b >= gr.inodeTable && b < gr.inodeTable+f.itableBlocks():
			tab := gr.inodeTable * f.blockSize
			lo, hi := (pos-tab)/f.inodeSize, (end-1-tab)/f.inodeSize
			var inos []uint64
			for k := lo; k <= hi; k++ {
				inos = append(inos, uint64(int64(i)*f.inodesPerGroup+k+1))
			}
			return Span{Structure: "inode table", Inodes: inos}
		}
	}
	if inos := f.xattr[b]; inos != nil {
		wide := make([]uint64, len(inos))
		for k, ino := range inos {
			wide[k] = uint64(ino)
		}
		return Span{Structure: "extended attribute block", Inodes: wide}
	}
	i := sort.Search(len(f.owners), func(i int) bool { return f.owners[i].start+f.owners[i].n > b })
	if i < len(f.owners) && f.owners[i].start <= b {
		o := f.owners[i]
		s := Span{Inodes: []uint64{uint64(o.ino)}}
		switch o.kind {
		case kData:
			s.Structure = "file data"
		case kDir:
			s.Structure = "directory"
		case kSymlink:
			s.Structure = "symbolic link"
		case kTree:
			s.Structure = "extent tree or indirect block"
		case kSpecial:
			s.Structure = f.special[o.ino]
		}
		return s
	}
	if f.blockFree(g, b) {
		return Span{Structure: "free blocks"}
	}
	return Span{Structure: "allocated, owner unknown"}
}

// scratch returns a block-sized buffer for walk, the same one every time.
func (f *FS) scratch() []byte {
	if f.buf == nil {
		f.buf = make([]byte, f.blockSize)
	}
	return f.buf
}

func (f *FS) itableBlocks() int64 {
	return (f.inodesPerGroup*f.inodeSize + f.blockSize - 1) / f.blockSize
}

// blockFree reads the block bitmap of group g for block b.
func (f *FS) blockFree(g, b int64) bool {
	if g < 0 || g >= int64(len(f.groups)) {
		return false
	}
	gr := f.groups[g]
	if gr.flags&blockUninit != 0 {
		return true
	}
	bit := b - f.firstData - g*f.blocksPerGroup
	var c [1]byte
	if _, err := f.r.ReadAt(c[:], gr.blockBitmap*f.blockSize+bit/8); err != nil {
		return false
	}
	return c[0]&(1<<(bit%8)) == 0
}

// readBlock reads block b, if it lies in the filesystem.
func (f *FS) readBlock(b int64, buf []byte) bool {
	if b <= 0 || b >= f.blocks || f.reads <= 0 {
		return false
	}
	f.reads--
	_, err := f.r.ReadAt(buf[:f.blockSize], b*f.blockSize)
	return err == nil
}

// walk reads every inode in use and records the blocks it owns, then the
// directory tree from the root for their paths. It runs once.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	f.reads = 2*f.blocks + 4096
	f.xattr = map[int64][]uint32{}
	f.dirs = map[uint32][]owner{}
	bitmap := make([]byte, f.blockSize)
	for gi, gr := range f.groups {
		if gr.flags&inodeUninit != 0 {
			continue
		}
		used := f.inodesPerGroup - gr.itableUnused
		if used <= 0 || used > f.inodesPerGroup {
			used = f.inodesPerGroup
		}
		if !f.readBlock(gr.inodeBitmap, bitmap) || gr.inodeTable <= 0 || gr.inodeTable+f.itableBlocks() > f.blocks {
			continue
		}
		table := make([]byte, used*f.inodeSize)
		if _, err := f.r.ReadAt(table, gr.inodeTable*f.blockSize); err != nil {
			continue
		}
		for k := range used {
			if bitmap[k/8]&(1<<(k%8)) == 0 {
				continue
			}
			ino := uint32(int64(gi)*f.inodesPerGroup + k + 1)
			f.inode(ino, table[k*f.inodeSize:(k+1)*f.inodeSize])
		}
	}
	sort.Slice(f.owners, func(i, j int) bool { return f.owners[i].start < f.owners[j].start })
	f.paths = map[uint32]string{2: "/"}
	f.walkDir(2, "/", 0, map[uint32]bool{2: true})
	return nil
}

// maxOwners bounds the work on a filesystem whose metadata describes more runs of
// blocks than it can hold.
const maxOwners = 1 << 24

// inode records the blocks of inode ino.
func (f *FS) inode(ino uint32, in []byte) {
	mode := le.Uint16(in[0:])
	if mode == 0 || len(f.owners) > maxOwners {
		return
	}
	if acl := int64(le.Uint32(in[0x68:])) | int64(le.Uint16(in[0x76:]))<<32; acl > 0 && acl < f.blocks {
		f.xattr[acl] = append(f.xattr[acl], ino)
	}
	if le.Uint32(in[0x1c:]) == 0 && le.Uint16(in[0x74:]) == 0 { // i_blocks: no blocks (fast symlink, inline data, empty)
		return
	}
	k := kData
	switch {
	case f.special[ino] != "":
		k = kSpecial
	case mode&0xf000 == 0x4000:
		k = kDir
	case mode&0xf000 == 0xa000:
		k = kSymlink
	}
	add := func(start, n int64, kk kind) {
		if start <= 0 || n <= 0 || start >= f.blocks || n > f.blocks-start {
			return
		}
		if m := len(f.owners) - 1; m >= 0 && f.owners[m].ino == ino && f.owners[m].kind == kk && f.owners[m].start+f.owners[m].n == start {
			f.owners[m].n += n
		} else {
			f.owners = append(f.owners, owner{start, n, ino, kk})
		}
		if kk == kDir {
			f.dirs[ino] = append(f.dirs[ino], owner{start, n, ino, kk})
		}
	}
	flags := le.Uint32(in[0x20:])
	iblock := in[0x28:0x64]
	treeKind := kTree
	if k == kSpecial {
		treeKind = kSpecial
	}
	if flags&0x80000 != 0 {
		f.extents(iblock, 0, k, treeKind, add)
		return
	}
	if flags&0x10000000 != 0 { // inline data
		return
	}
	buf := f.scratch()
	for i := range 12 {
		add(int64(le.Uint32(iblock[4*i:])), 1, k)
	}
	for level, i := 1, 12; i < 15; level, i = level+1, i+1 {
		f.indirect(int64(le.Uint32(iblock[4*i:])), level, k, treeKind, add, buf)
	}
}

// extents follows an extent tree node (header and entries) of at most 5 levels.
func (f *FS) extents(node []byte, depth int, k, tk kind, add func(int64, int64, kind)) {
	if len(node) < 12 || le.Uint16(node[0:]) != 0xf30a || depth > 5 {
		return
	}
	entries, d := int(le.Uint16(node[2:])), le.Uint16(node[6:])
	for i := range entries {
		e := node[12+12*i:]
		if len(e) < 12 {
			return
		}
		if d == 0 {
			n := int64(le.Uint16(e[4:]))
			if n > 32768 {
				n -= 32768 // an uninitialized extent: allocated all the same
			}
			add(int64(le.Uint32(e[8:]))|int64(le.Uint16(e[6:]))<<32, n, k)
			continue
		}
		child := int64(le.Uint32(e[4:])) | int64(le.Uint16(e[8:]))<<32
		buf := make([]byte, f.blockSize) // the parent's node is still in use
		if !f.readBlock(child, buf) {
			continue
		}
		add(child, 1, tk)
		f.extents(buf, depth+1, k, tk, add)
	}
}

// indirect follows an indirect block of the given level (1 single, 2 double, 3 triple).
func (f *FS) indirect(b int64, level int, k, tk kind, add func(int64, int64, kind), buf []byte) {
	if b == 0 {
		return
	}
	if !f.readBlock(b, buf) {
		return
	}
	add(b, 1, tk)
	ptrs := make([]int64, 0, f.blockSize/4)
	for i := int64(0); i < f.blockSize; i += 4 {
		if p := int64(le.Uint32(buf[i:])); p != 0 {
			ptrs = append(ptrs, p)
		}
	}
	for _, p := range ptrs {
		if level == 1 {
			add(p, 1, k)
		} else {
			f.indirect(p, level-1, k, tk, add, buf)
		}
	}
}

// walkDir names the entries of directory ino (at path p) and descends into its
// subdirectories; seen breaks loops, depth bounds recursion.
func (f *FS) walkDir(ino uint32, p string, depth int, seen map[uint32]bool) {
	if depth > 256 {
		return
	}
	buf := make([]byte, f.blockSize)
	var subdirs []uint32
	for _, o := range f.dirs[ino] {
		for b := o.start; b < o.start+o.n; b++ {
			if !f.readBlock(b, buf) {
				continue
			}
			for at := int64(0); at+8 <= f.blockSize; {
				child := le.Uint32(buf[at:])
				rec := int64(le.Uint16(buf[at+4:]))
				nameLen := int64(buf[at+6])
				if rec < 8 || at+rec > f.blockSize || 8+nameLen > rec {
					break
				}
				name := string(buf[at+8 : at+8+nameLen])
				at += rec
				if child == 0 || name == "." || name == ".." || name == "" {
					continue
				}
				cp := path.Join(p, name)
				if _, ok := f.paths[child]; !ok {
					f.paths[child] = cp
				}
				if len(f.dirs[child]) > 0 && !seen[child] {
					seen[child] = true
					subdirs = append(subdirs, child)
				}
			}
		}
	}
	for _, d := range subdirs {
		f.walkDir(d, f.paths[d], depth+1, seen)
	}
}
