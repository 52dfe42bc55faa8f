package xfs

import (
	"path"
	"sort"
)

// maxRuns bounds the work on a filesystem whose metadata describes more runs of
// blocks than it can hold.
const maxRuns = 1 << 24

// read reads n bytes at byte offset off of the filesystem, within the read budget.
func (f *FS) read(off, n int64) []byte {
	if off < 0 || n <= 0 || n > f.size || off > f.size-n || f.reads <= 0 {
		return nil
	}
	f.reads -= (n + f.bs - 1) / f.bs
	b := make([]byte, n)
	if _, err := f.r.ReadAt(b, off); err != nil {
		return nil
	}
	return b
}

// add records that blocks [start, start+n) (linear) hold k of inode ino.
func (f *FS) add(start, n int64, k kind, ino uint64) {
	if start < 0 || n <= 0 || start >= f.dblocks || n > f.dblocks-start || len(f.runs) >= maxRuns {
		return
	}
	if m := len(f.runs) - 1; m >= 0 && f.runs[m].kind == k && f.runs[m].ino == ino && f.runs[m].start+f.runs[m].n == start {
		f.runs[m].n += n
		return
	}
	f.runs = append(f.runs, run{start, n, k, ino})
}

// walk maps every allocation group's btrees and inodes, then the directory tree
// from the root for paths. It runs once.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	f.reads = 2*min(f.dblocks, f.size/f.bs) + 4096
	f.seen = map[int64]bool{}
	f.dirs = map[uint64][]dirExtent{}
	f.sfdirs = map[uint64][]byte{}
	for ag := int64(0); ag < f.agCount && ag*f.agBlocks*f.bs < f.size; ag++ { // a truncated image: the AGs it holds
		f.walkAG(ag)
	}
	if f.logLen > 0 {
		f.add(f.logStart, f.logLen, kLog, 0)
	}
	sort.SliceStable(f.runs, func(i, j int) bool { return f.runs[i].start < f.runs[j].start })
	f.paths = map[uint64]string{f.rootIno: "/"}
	f.walkDir(f.rootIno, "/", 0, map[uint64]bool{f.rootIno: true})
	f.seen, f.dirs, f.sfdirs = nil, nil, nil
	return nil
}

// shape is how a short-form (per-AG) btree lays out its blocks.
type shape struct {
	magic  [2]string // v5, v4
	keyLen int64
	recLen int64
	kind   kind
}

var (
	bnoShape    = shape{[2]string{"AB3B", "ABTB"}, 8, 8, kBno}
	cntShape    = shape{[2]string{"AB3C", "ABTC"}, 8, 8, kCnt}
	inoShape    = shape{[2]string{"IAB3", "IABT"}, 4, 16, kInobt}
	finoShape   = shape{[2]string{"FIB3", "FIBT"}, 4, 16, kFinobt}
	rmapShape   = shape{[2]string{"RMB3", "RMB3"}, 40, 24, kRmap}
	refcntShape = shape{[2]string{"R3FC", "R3FC"}, 4, 12, kRefc}
)

// maxLevels bounds a btree's height: XFS's are at most 9 high.
const maxLevels = 9

// walkAG maps allocation group ag's headers' btrees and its inodes.
func (f *FS) walkAG(ag int64) {
	agStart := ag * f.agBlocks * f.bs
	agf := f.read(agStart+f.ss, f.ss)
	if agf != nil && string(agf[:4]) == "XAGF" {
		free := func(rec []byte) {
			f.add(ag*f.agBlocks+int64(be.Uint32(rec)), int64(be.Uint32(rec[4:])), kFree, 0)
		}
		f.sbtree(ag, be.Uint32(agf[16:]), be.Uint32(agf[28:]), bnoShape, free)
		f.sbtree(ag, be.Uint32(agf[20:]), be.Uint32(agf[32:]), cntShape, nil)
		if f.rmap {
			f.sbtree(ag, be.Uint32(agf[24:]), be.Uint32(agf[36:]), rmapShape, nil)
		}
		if f.refc && len(agf) >= 96 {
			f.sbtree(ag, be.Uint32(agf[88:]), be.Uint32(agf[92:]), refcntShape, nil)
		}
		f.agfl(ag, be.Uint32(agf[40:]), be.Uint32(agf[48:]))
	}
	agi := f.read(agStart+2*f.ss, f.ss)
	if agi == nil || string(agi[:4]) != "XAGI" {
		return
	}
	if f.finobt && len(agi) >= 336 {
		f.sbtree(ag, be.Uint32(agi[328:]), be.Uint32(agi[332:]), finoShape, nil)
	}
	var chunks [][]byte
	f.sbtree(ag, be.Uint32(agi[20:]), be.Uint32(agi[24:]), inoShape, func(rec []byte) {
		chunks = append(chunks, rec)
	})
	for _, rec := range chunks {
		f.chunk(ag, rec)
	}
}

// agfl maps the blocks on allocation group ag's free list: count of them from
// first, round its array.
func (f *FS) agfl(ag int64, first, count uint32) {
	hdr := int64(0)
	if f.v5 {
		hdr = 36
	}
	agfl := f.read(ag*f.agBlocks*f.bs+3*f.ss, f.ss)
	if agfl == nil || f.v5 && string(agfl[:4]) != "XAFL" {
		return
	}
	slots := (f.ss - hdr) / 4
	if int64(count) > slots {
		return
	}
	for i := range int64(count) {
		at := hdr + (int64(first)+i)%slots*4
		if agbno := int64(be.Uint32(agfl[at:])); agbno < f.agBlocks {
			f.add(ag*f.agBlocks+agbno, 1, kAGFL, 0)
		}
	}
}

// sbtree maps the short-form btree of allocation group ag whose root is block
// root, level high, and hands each leaf record to leaf (if not nil).
func (f *FS) sbtree(ag int64, root, level uint32, sh shape, leaf func(rec []byte)) {
	if level == 0 || level > maxLevels {
		return
	}
	f.sbnode(ag, int64(root), int(level)-1, sh, leaf)
}

func (f *FS) sbnode(ag, agbno int64, level int, sh shape, leaf func(rec []byte)) {
	b := ag*f.agBlocks + agbno
	if agbno <= 0 || agbno >= f.agBlocks || b >= f.dblocks || f.seen[b] {
		return
	}
	f.seen[b] = true
	blk := f.read(b*f.bs, f.bs)
	hdr, magic := int64(16), sh.magic[1]
	if f.v5 {
		hdr, magic = 56, sh.magic[0]
	}
	if blk == nil || string(blk[:4]) != magic || int(be.Uint16(blk[4:])) != level {
		return
	}
	f.add(b, 1, sh.kind, 0)
	n := int64(be.Uint16(blk[6:]))
	if level == 0 {
		if leaf == nil {
			return
		}
		for i := range min(n, (f.bs-hdr)/sh.recLen) {
			leaf(blk[hdr+i*sh.recLen : hdr+(i+1)*sh.recLen])
		}
		return
	}
	maxRecs := (f.bs - hdr) / (sh.keyLen + 4)
	for i := range min(n, maxRecs) {
		at := hdr + maxRecs*sh.keyLen + 4*i
		f.sbnode(ag, int64(be.Uint32(blk[at:])), level-1, sh, leaf)
	}
}

// chunk maps an inode chunk, from its inode btree record, and the inodes in use
// in it.
func (f *FS) chunk(ag int64, rec []byte) {
	start := int64(be.Uint32(rec))
	holes := uint16(0)
	if f.sparse {
		holes = be.Uint16(rec[4:])
	}
	free := be.Uint64(rec[8:])
	perBlock := int64(1) << f.inoPBLog
	if start%min(perBlock, 64) != 0 || start>>f.inoPBLog >= f.agBlocks {
		return
	}
	agStart := ag * f.agBlocks * f.bs
	for i := int64(0); i < 64; {
		// Read and map what the chunk holds a block (or a hole's 4 inodes) at a time.
		n := min(perBlock-(start+i)%perBlock, 64-i)
		if holes&(1<<(i/4)) != 0 {
			n = 4 - i%4
		}
		if holes&(1<<(i/4)) == 0 {
			b := ag*f.agBlocks + (start+i)>>f.inoPBLog
			if len(f.runs) == 0 || f.runs[len(f.runs)-1].kind != kInodes || f.runs[len(f.runs)-1].start+f.runs[len(f.runs)-1].n <= b {
				f.add(b, 1, kInodes, 0)
			}
			raw := f.read(agStart+(start+i)*f.inodeSize, n*f.inodeSize)
			for k := int64(0); raw != nil && k < n; k++ {
				if free&(1<<(i+k)) == 0 && holes&(1<<((i+k)/4)) == 0 {
					ino := uint64(ag)<<(f.agBlkLog+f.inoPBLog) | uint64(start+i+k)
					f.inode(ino, raw[k*f.inodeSize:(k+1)*f.inodeSize])
				}
			}
		}
		i += n
	}
}

// inode maps the blocks of inode ino's data and attribute forks.
func (f *FS) inode(ino uint64, in []byte) {
	if string(in[:2]) != "IN" {
		return
	}
	mode, version, format := be.Uint16(in[2:]), in[4], in[5]
	forkOff, aformat := int64(in[82])*8, in[83]
	core := int64(100)
	if version == 3 {
		core = 176
	}
	if core+forkOff >= f.inodeSize {
		return
	}
	dsize := f.inodeSize - core
	if forkOff != 0 {
		dsize = forkOff
	}
	dfork := in[core : core+dsize]
	nextents, naextents := int64(be.Uint32(in[76:])), int64(be.Uint16(in[80:]))
	if version == 3 && be.Uint64(in[120:])&(1<<4) != 0 { // nrext64
		nextents, naextents = int64(be.Uint64(in[24:])&(1<<62-1)), int64(be.Uint32(in[76:]))
	}
	k := kData
	switch {
	case f.special[ino] != "":
		k = kSpecial
	case mode&0xf000 == 0x4000:
		k = kDir
	case mode&0xf000 == 0xa000:
		k = kSymlink
	case mode&0xf000 != 0x8000:
		format = 0 // a device, fifo or socket: no blocks
	}
	switch format {
	case 1:
		if k == kDir {
			f.sfdirs[ino] = dfork
		}
	case 2:
		f.extents(dfork, nextents, k, ino)
	case 3:
		f.bmroot(dfork, k, ino)
	}
	if forkOff == 0 {
		return
	}
	afork := in[core+forkOff:]
	switch aformat {
	case 2:
		f.extents(afork, naextents, kAttr, ino)
	case 3:
		f.bmroot(afork, kAttr, ino)
	}
}

// Where a directory's data fork keeps its leaf and free-index blocks: from 32 GiB
// and 64 GiB.
const (
	dirLeafOff = 32 << 30
	dirFreeOff = 64 << 30
)

// extents maps n extent records from recs for inode ino.
func (f *FS) extents(recs []byte, n int64, k kind, ino uint64) {
	for i := int64(0); i < n && 16*(i+1) <= int64(len(recs)); i++ {
		l0, l1 := be.Uint64(recs[16*i:]), be.Uint64(recs[16*i+8:])
		off := int64(l0&(1<<63-1)) >> 9
		fsb := (l0&0x1ff)<<43 | l1>>21
		cnt := int64(l1 & 0x1fffff)
		b, ok := f.linear(fsb)
		if !ok || cnt <= 0 {
			continue
		}
		if (b%f.agBlocks)+cnt > f.agBlocks { // an extent never crosses an AG's end
			continue
		}
		kk := k
		if k == kDir {
			switch byteOff := off * f.bs; {
			case off > dirFreeOff/f.bs || byteOff >= dirFreeOff:
				kk = kDirFree
			case byteOff >= dirLeafOff:
				kk = kDirLeaf
			default:
				f.dirs[ino] = append(f.dirs[ino], dirExtent{b, cnt})
			}
		}
		f.add(b, cnt, kk, ino)
	}
}

// bmroot maps an extent btree whose root is in an inode's fork.
func (f *FS) bmroot(fork []byte, k kind, ino uint64) {
	if len(fork) < 4 {
		return
	}
	level, n := int(be.Uint16(fork)), int64(be.Uint16(fork[2:]))
	maxRecs := (int64(len(fork)) - 4) / 16
	if level == 0 || level > maxLevels {
		return
	}
	for i := range min(n, maxRecs) {
		f.bmnode(be.Uint64(fork[4+maxRecs*8+8*i:]), level-1, k, ino)
	}
}

func (f *FS) bmnode(fsb uint64, level int, k kind, ino uint64) {
	b, ok := f.linear(fsb)
	if !ok || f.seen[b] {
		return
	}
	f.seen[b] = true
	blk := f.read(b*f.bs, f.bs)
	hdr, magic := int64(24), "BMAP"
	if f.v5 {
		hdr, magic = 72, "BMA3"
	}
	if blk == nil || string(blk[:4]) != magic || int(be.Uint16(blk[4:])) != level {
		return
	}
	f.add(b, 1, kBmbt, ino)
	n := int64(be.Uint16(blk[6:]))
	if level == 0 {
		f.extents(blk[hdr:], n, k, ino)
		return
	}
	maxRecs := (f.bs - hdr) / 16
	for i := range min(n, maxRecs) {
		f.bmnode(be.Uint64(blk[hdr+maxRecs*8+8*i:]), level-1, k, ino)
	}
}

// walkDir names the entries of directory ino (at path p) and descends into its
// subdirectories; seen breaks loops, depth bounds recursion.
func (f *FS) walkDir(ino uint64, p string, depth int, seen map[uint64]bool) {
	if depth > 256 {
		return
	}
	var subdirs []uint64
	entry := func(child uint64, name string) {
		if child == 0 || name == "." || name == ".." || name == "" {
			return
		}
		if _, ok := f.paths[child]; !ok {
			f.paths[child] = path.Join(p, name)
		}
		if _, isDir := f.dirs[child]; !isDir {
			if _, isDir = f.sfdirs[child]; !isDir {
				return
			}
		}
		if !seen[child] {
			seen[child] = true
			subdirs = append(subdirs, child)
		}
	}
	if sf := f.sfdirs[ino]; sf != nil {
		f.shortDir(sf, entry)
	}
	dbs := f.dirBlocks * f.bs
	for _, e := range f.dirs[ino] {
		for at := e.start * f.bs; at+dbs <= (e.start+e.n)*f.bs; at += dbs {
			if blk := f.read(at, dbs); blk != nil {
				f.dataDir(blk, entry)
			}
		}
	}
	for _, d := range subdirs {
		f.walkDir(d, f.paths[d], depth+1, seen)
	}
}

// shortDir reads the entries of a short-form directory, kept in its inode.
func (f *FS) shortDir(sf []byte, entry func(uint64, string)) {
	if len(sf) < 2 {
		return
	}
	count, inoLen := int(sf[0]), 4
	if sf[1] != 0 {
		count, inoLen = int(sf[1]), 8
	}
	ft := 0
	if f.ftype {
		ft = 1
	}
	at := 2 + inoLen
	for range count {
		if at >= len(sf) {
			return
		}
		nl := int(sf[at])
		end := at + 3 + nl + ft + inoLen
		if end > len(sf) {
			return
		}
		name := string(sf[at+3 : at+3+nl])
		var child uint64
		if inoLen == 8 {
			child = be.Uint64(sf[end-8:])
		} else {
			child = uint64(be.Uint32(sf[end-4:]))
		}
		entry(child, name)
		at = end
	}
}

// dataDir reads the entries of a directory data block (or of a single-block
// directory, whose leaf entries and tail follow them).
func (f *FS) dataDir(blk []byte, entry func(uint64, string)) {
	hdr, end := 16, len(blk)
	if f.v5 {
		hdr = 64
	}
	switch string(blk[:4]) {
	case "XDD3", "XD2D":
	case "XDB3", "XD2B":
		count := int(be.Uint32(blk[end-8:]))
		if count > end/8 {
			return
		}
		end -= 8 + 8*count
	default:
		return
	}
	ft := 0
	if f.ftype {
		ft = 1
	}
	for at := hdr; at+11 <= end; {
		if be.Uint16(blk[at:]) == 0xffff { // unused space
			n := int(be.Uint16(blk[at+2:]))
			if n < 8 || n%8 != 0 {
				return
			}
			at += n
			continue
		}
		nl := int(blk[at+8])
		n := (8 + 1 + nl + ft + 2 + 7) / 8 * 8
		if at+n > end {
			return
		}
		entry(be.Uint64(blk[at:]), string(blk[at+9:at+9+nl]))
		at += n
	}
}
