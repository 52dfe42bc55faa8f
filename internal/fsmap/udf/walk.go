package udf

import (
	"path"
	"strings"
	"unicode/utf16"
)

// Bounds on what a hostile volume can make walk do.
const (
	maxSequence = 256      // blocks of a volume descriptor sequence read
	maxHops     = 1024     // integrity extents, allocation extent descriptors of a file
	maxDirBytes = 64 << 20 // of a directory, read
	maxDirsRead = 1 << 30  // of all directories, read
	maxDepth    = 256
)

// walk reads the anchors, the volume descriptor sequences, the integrity
// sequence, the space bitmap, the file set descriptor and the directory tree from
// the root, and records which blocks hold what. It runs once.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	var avdp []byte
	for _, b := range []int64{256, f.blocks - 1 - 256, f.blocks - 1} { // N-256 and N: the last block N
		if d := f.read(b); b >= 256 && d != nil && tagOK(d, tagAVDP, uint32(b)) {
			f.add(b, 1, "anchor volume descriptor pointer", "")
			if avdp == nil {
				avdp = d
			}
		}
	}
	if avdp == nil {
		f.walkErr = errorf("no anchor volume descriptor pointer")
		return f.walkErr
	}
	var lvd []byte
	for i, name := range []string{"main volume descriptor sequence", "reserve volume descriptor sequence"} {
		length, loc := int64(le.Uint32(avdp[16+8*i:])), int64(le.Uint32(avdp[20+8*i:]))
		f.add(loc, f.blocksOf(length), name, "")
		if l := f.sequence(loc, length); lvd == nil {
			lvd = l
		}
	}
	if lvd == nil || f.part.n == 0 {
		f.walkErr = errorf("no logical volume or partition descriptor")
		return f.walkErr
	}
	if int64(le.Uint32(lvd[212:])) != f.bs || le.Uint32(lvd[268:]) < 1 || lvd[440] != 1 {
		f.walkErr = errorf("a logical volume other than one physical partition of %d-byte blocks", f.bs)
		return f.walkErr
	}
	f.integrity(int64(le.Uint32(lvd[432:])), int64(le.Uint32(lvd[436:])))
	fsdLen, fsd := int64(le.Uint32(lvd[248:])&0x3fffffff), int64(le.Uint32(lvd[252:]))
	f.add(f.part.start+fsd, f.blocksOf(fsdLen), "file set descriptor", "")
	if b := f.logical(fsd); b != nil && tagOK(b, tagFSD, uint32(fsd)) {
		// The root directory's ICB, and the system stream directory's.
		queue := []entry{{int64(le.Uint32(b[404:])), "/", 0}}
		if le.Uint32(b[464:])&0x3fffffff != 0 {
			queue = append(queue, entry{int64(le.Uint32(b[468:])), "/:streams", 0})
		}
		f.tree(queue)
	}
	f.sortRuns()
	return nil
}

// blocksOf is how many blocks n bytes take.
func (f *FS) blocksOf(n int64) int64 { return (n + f.bs - 1) / f.bs }

// logical reads logical block lb of the partition, nil if it cannot.
func (f *FS) logical(lb int64) []byte {
	if lb < 0 || lb >= f.part.n {
		return nil
	}
	return f.read(f.part.start + lb)
}

// sequence reads a volume descriptor sequence of length bytes from block loc: it
// keeps the partition descriptor's partition and space bitmap, and returns the
// logical volume descriptor.
func (f *FS) sequence(loc, length int64) []byte {
	var lvd []byte
	for i := int64(0); i < min(f.blocksOf(length), maxSequence); i++ {
		b := f.read(loc + i)
		if b == nil || len(b) < 512 || !tagOK(b, le.Uint16(b), uint32(loc+i)) {
			break
		}
		switch le.Uint16(b) {
		case tagTD:
			return lvd
		case tagPD:
			if f.part.n != 0 {
				continue
			}
			start, n := int64(le.Uint32(b[188:])), int64(le.Uint32(b[192:]))
			start, end := min(start, f.blocks), min(start+n, f.blocks)
			f.part.start, f.part.n = start, end-start
			if string(b[25:29]) == "+NSR" { // the partition header: the space bitmap
				f.spaceBitmap(int64(le.Uint32(b[64:])&0x3fffffff), int64(le.Uint32(b[68:])))
			}
		case tagLVD:
			if lvd == nil {
				lvd = b
			}
		}
	}
	return lvd
}

// spaceBitmap names the space bitmap of length bytes at logical block lb and
// reads it.
func (f *FS) spaceBitmap(length, lb int64) {
	if length == 0 {
		return
	}
	length = min(length, 24+(f.part.n+7)/8)
	f.add(f.part.start+lb, f.blocksOf(length), "space bitmap", "")
	var sbd []byte
	for i := int64(0); i < f.blocksOf(length); i++ {
		b := f.logical(lb + i)
		if b == nil || i == 0 && !tagOK(b, 264, uint32(lb)) {
			return
		}
		sbd = append(sbd, b...)
	}
	bits, n := int64(le.Uint32(sbd[16:])), int64(le.Uint32(sbd[20:]))
	if 24+n <= int64(len(sbd)) && (bits+7)/8 <= n {
		f.bitmap = sbd[24 : 24+(bits+7)/8]
	}
}

// integrity names the logical volume integrity sequence of length bytes from
// block loc, following the chain of its extents.
// Its descriptors are named as such, the rest of its extents as the extent.
func (f *FS) integrity(length, loc int64) {
	for hops := 0; length > 0 && hops < maxHops; hops++ {
		var next [2]int64
		for i := int64(0); i < min(f.blocksOf(length), maxSequence); i++ {
			b := f.read(loc + i)
			if b == nil || len(b) < 40 || !tagOK(b, tagLVID, uint32(loc+i)) {
				break
			}
			f.add(loc+i, 1, "logical volume integrity descriptor", "")
			next = [2]int64{int64(le.Uint32(b[32:])), int64(le.Uint32(b[36:]))}
		}
		f.add(loc, f.blocksOf(length), "logical volume integrity extent", "")
		length, loc = next[0], next[1]
	}
}

// entry is a file entry tree has yet to read.
type entry struct {
	lb    int64
	path  string
	depth int
}

// tree names the file entries from those queued (the root's), and what their
// allocation descriptors map. Each entry is read once.
func (f *FS) tree(queue []entry) {
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		if f.seen[e.lb] {
			continue // a hard link, or a loop
		}
		f.seen[e.lb] = true
		b := f.logical(e.lb)
		if b == nil || len(b) < 512 {
			continue
		}
		id := le.Uint16(b)
		if (id != tagFE && id != tagEFE) || !tagOK(b, id, uint32(e.lb)) {
			continue
		}
		f.add(f.part.start+e.lb, 1, "file entry", e.path)
		eaLen, adLen, ads := int64(le.Uint32(b[168:])), int64(le.Uint32(b[172:])), int64(176)
		if id == tagEFE {
			eaLen, adLen, ads = int64(le.Uint32(b[208:])), int64(le.Uint32(b[212:])), 216
		}
		start := ads + eaLen
		if eaLen < 0 || adLen < 0 || start+adLen > int64(len(b)) {
			continue
		}
		if id == tagEFE && le.Uint32(b[152:])&0x3fffffff != 0 && e.depth < maxDepth { // a stream directory
			queue = append(queue, entry{int64(le.Uint32(b[156:])), e.path + ":streams", e.depth + 1})
		}
		dir := b[27] == 4 || b[27] == 13 // a directory, a stream directory
		size := int64(le.Uint64(b[56:]) & (1<<62 - 1))
		var data []byte
		if kind := le.Uint16(b[34:]) & 7; kind == 3 { // the data in the entry itself
			data = b[start : start+adLen]
		} else {
			data = f.extents(b[start:start+adLen], kind, dir, size, e.path)
		}
		if !dir {
			continue
		}
		for _, c := range fids(data) {
			if e.depth < maxDepth {
				queue = append(queue, entry{c.lb, path.Join(e.path, c.name), e.depth + 1})
			}
		}
	}
}

// extents names the extents that the allocation descriptors ads (short_ad, kind
// 0, or long_ad, 1) map, following allocation extent descriptors, and returns
// up to size bytes of a directory's data.
func (f *FS) extents(ads []byte, kind uint16, dir bool, size int64, p string) []byte {
	adSize := map[uint16]int{0: 8, 1: 16}[kind]
	if adSize == 0 {
		return nil
	}
	structure := "file data"
	if dir {
		structure = "directory"
	}
	var data []byte
	for hops := 0; len(ads) >= adSize; {
		n, pos := int64(le.Uint32(ads)), int64(le.Uint32(ads[4:]))
		typ, n := n>>30, n&0x3fffffff
		ads = ads[adSize:]
		if n == 0 {
			break
		}
		if typ == 3 { // the next extent of allocation descriptors
			if hops++; hops > maxHops {
				break
			}
			f.add(f.part.start+pos, 1, "allocation extent descriptor", p)
			b := f.logical(pos)
			if b == nil || !tagOK(b, tagAED, uint32(pos)) {
				break
			}
			l := int64(le.Uint32(b[20:]))
			if 24+l > int64(len(b)) {
				break
			}
			ads = b[24 : 24+l]
			continue
		}
		if pos >= f.part.n {
			continue
		}
		blocks := min(f.blocksOf(n), f.part.n-pos)
		if typ != 2 { // recorded, or allocated and not recorded
			f.add(f.part.start+pos, blocks, structure, p)
		}
		for i := int64(0); dir && i < blocks && int64(len(data)) < min(size, maxDirBytes) && f.dirsRead < maxDirsRead; i++ {
			f.dirsRead += f.bs
			b := f.logical(pos + i)
			if b == nil || typ != 0 {
				b = make([]byte, f.bs)
			}
			data = append(data, b...)
		}
	}
	return data[:min(int64(len(data)), size)]
}

// child is a file a directory names.
type child struct {
	name string
	lb   int64
}

// fids reads the file identifier descriptors of a directory's data: its children,
// but for the parent and deleted ones.
func fids(data []byte) []child {
	var out []child
	for off := 0; off+38 <= len(data); {
		fid := data[off:]
		if le.Uint16(fid) != tagFID {
			break
		}
		chars, lfi, liu := fid[18], int(fid[19]), int(le.Uint16(fid[36:]))
		size := (38 + liu + lfi + 3) &^ 3
		if off+size > len(data) {
			break
		}
		if chars&(4|8) == 0 && lfi > 0 {
			out = append(out, child{dstring(fid[38+liu : 38+liu+lfi]), int64(le.Uint32(fid[24:]))})
		}
		off += size
	}
	return out
}

// dstring decodes an OSTA compressed unicode name: a byte that says 8 or 16 bits
// a character, then the characters (16-bit ones big-endian).
func dstring(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	var s string
	switch b[0] {
	case 16, 255:
		u := make([]uint16, (len(b)-1)/2)
		for i := range u {
			u[i] = uint16(b[1+2*i])<<8 | uint16(b[2+2*i])
		}
		s = string(utf16.Decode(u))
	default:
		r := make([]rune, len(b)-1)
		for i, c := range b[1:] {
			r[i] = rune(c)
		}
		s = string(r)
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '\ufffd'
		}
		return r
	}, s)
}
