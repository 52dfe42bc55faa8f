// Package udf maps the byte ranges of a UDF volume (ECMA-167, as mkudffs writes
// it: one physical partition) to what they hold: the reserved area before the
// volume recognition sequence, the sequence itself, the anchor volume descriptor
// pointers, the main and reserve volume descriptor sequences, the logical volume
// integrity sequence, the partition's space bitmap, the file set descriptor, file
// entries (with their paths), directories' data (their file identifiers, with the
// directory's path), allocation extent descriptors, files' data (with their paths),
// free blocks (per the space bitmap), and blocks no descriptor names. It reads
// through an io.ReaderAt, only what it needs, and trusts no number it reads:
// every descriptor's tag is checked, each file entry is read at most once, and
// extents are cut at the partition's end.
//
// The layout: 32 KiB reserved, the volume recognition sequence (2 KiB
// descriptors: BEA01, NSR02 or NSR03, TEA01), anchors at block 256 and at the
// last block (or 256 before it) pointing at the two volume descriptor sequences.
// Those hold the partition descriptor (where the partition lies, and its space
// bitmap) and the logical volume descriptor (the integrity sequence and the file
// set descriptor, in the partition). The file set descriptor holds the root
// directory's ICB; a file entry's allocation descriptors map its data, or hold it.
package udf

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"

	"vmb.dev/vmb/internal/fsmap"
)

var le = binary.LittleEndian

// Descriptor tag identifiers (ECMA-167 3/7.2.1, 4/7.2.1).
const (
	tagAVDP = 2
	tagPD   = 5
	tagLVD  = 6
	tagTD   = 8
	tagLVID = 9
	tagFSD  = 256
	tagFID  = 257
	tagAED  = 258
	tagFE   = 261
	tagEFE  = 266
)

// FS is a UDF volume opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	bs     int64 // block size
	blocks int64 // in the volume
	vrsEnd int64 // bytes: where the volume recognition sequence ends

	walked   bool
	walkErr  error
	part     struct{ start, n int64 } // the partition, in blocks
	bitmap   []byte                   // the space bitmap: a bit a partition block, set if free
	runs     []run                    // blocks of an owner, sorted, not overlapping
	owners   []owner
	seen     map[int64]bool // file entries read, by block
	dirsRead int64          // bytes of directories read
}

// run is n blocks from block start (from the volume's start) of owners[id].
type run struct {
	start, n int64
	id       int
}

type owner struct {
	structure string
	path      string
}

// Open finds the anchor volume descriptor pointer of the UDF volume r of size
// bytes, at block 256 of one of the block sizes UDF allows.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	for _, bs := range []int64{512, 1024, 2048, 4096} {
		if 257*bs > size {
			break
		}
		b := make([]byte, bs)
		if n, _ := r.ReadAt(b, 256*bs); int64(n) == bs && tagOK(b, tagAVDP, 256) {
			f := &FS{r: r, size: size, bs: bs, blocks: size / bs, seen: map[int64]bool{}}
			f.vrsEnd = vrsEnd(r, size)
			return f, nil
		}
	}
	return nil, errors.New("udf: no anchor volume descriptor pointer at block 256")
}

// vrsEnd is where the volume recognition sequence from 32 KiB ends: after its
// last descriptor, 2 KiB each.
func vrsEnd(r io.ReaderAt, size int64) int64 {
	end := int64(32768)
	b := make([]byte, 6)
	for at := int64(32768); at+2048 <= size && at < 32768+64*2048; at += 2048 {
		if n, _ := r.ReadAt(b, at); n < len(b) {
			break
		}
		switch string(b[1:6]) {
		case "BEA01", "NSR02", "NSR03", "TEA01", "CD001", "CDW02", "BOOT2":
			end = at + 2048
			continue
		}
		break
	}
	return end
}

// BlockSize is the size of a logical block in bytes.
func (f *FS) BlockSize() int64 { return f.bs }

// Locate says what the byte range [off, off+n) of the volume holds, as spans in
// offset order: consecutive blocks that hold the same structure of the same file
// make one span.
func (f *FS) Locate(off, n int64) ([]fsmap.Span, error) {
	if off < 0 || n <= 0 || off >= f.size {
		return nil, nil
	}
	if err := f.walk(); err != nil {
		return nil, err
	}
	return fsmap.Spans(off, min(off+n, f.size), -1, f.at), nil
}

// at says what the byte at pos holds, an id that tells owners apart (-1 for
// none), and where what holds it ends.
func (f *FS) at(pos int64) (s fsmap.Span, id int, next int64) {
	switch {
	case pos < 32768:
		return fsmap.Span{Structure: "reserved area"}, -1, 32768
	case pos < f.vrsEnd:
		return fsmap.Span{Structure: "volume recognition sequence"}, -1, f.vrsEnd
	case pos >= f.blocks*f.bs:
		return fsmap.Span{Structure: "past the last block"}, -1, f.size
	}
	b := pos / f.bs
	i := sort.Search(len(f.runs), func(i int) bool { return f.runs[i].start+f.runs[i].n > b })
	if i < len(f.runs) && f.runs[i].start <= b {
		r := f.runs[i]
		o := f.owners[r.id]
		s := fsmap.Span{Structure: o.structure}
		if o.path != "" {
			s.Paths = []string{o.path}
		}
		return s, r.id, (r.start + r.n) * f.bs
	}
	limit := f.blocks
	if i < len(f.runs) {
		limit = f.runs[i].start
	}
	name, e := fsmap.Run(b, limit, f.unowned)
	return fsmap.Span{Structure: name}, -1, e * f.bs
}

// unowned names block b, which no descriptor names, by where it lies and by the
// space bitmap.
func (f *FS) unowned(b int64) string {
	p := b - f.part.start
	switch {
	case p < 0 || p >= f.part.n:
		return "unused blocks"
	case p/8 >= int64(len(f.bitmap)):
		return "blocks, allocation unknown"
	case f.bitmap[p/8]&(1<<(p%8)) != 0:
		return "free blocks"
	}
	return "allocated, owner unknown"
}

// add records that n blocks from block start belong to a new owner.
func (f *FS) add(start, n int64, structure, path string) {
	start, end := max(start, 0), min(start+n, f.blocks)
	if start >= end {
		return
	}
	f.runs = append(f.runs, run{start: start, n: end - start, id: len(f.owners)})
	f.owners = append(f.owners, owner{structure, path})
}

// sortRuns orders the runs by their first block and cuts what a run shares with
// the one before it from it.
func (f *FS) sortRuns() {
	slices.SortStableFunc(f.runs, func(a, b run) int { return cmp.Compare(a.start, b.start) })
	out := f.runs[:0]
	end := int64(0)
	for _, r := range f.runs {
		if cut := end - r.start; cut > 0 {
			r.start, r.n = r.start+cut, r.n-cut
		}
		if r.n <= 0 {
			continue
		}
		out = append(out, r)
		end = r.start + r.n
	}
	f.runs = out
}

// read reads block b (from the volume's start), nil if it cannot.
func (f *FS) read(b int64) []byte {
	if b < 0 || b >= f.blocks {
		return nil
	}
	buf := make([]byte, f.bs)
	if n, _ := f.r.ReadAt(buf, b*f.bs); int64(n) < f.bs {
		return nil
	}
	return buf
}

// tagOK says whether b starts with a descriptor tag of the given identifier, with
// a good checksum, recorded at location loc.
func tagOK(b []byte, id uint16, loc uint32) bool {
	if len(b) < 16 || le.Uint16(b) != id || le.Uint32(b[12:]) != loc {
		return false
	}
	var s byte
	for i := range 16 {
		if i != 4 {
			s += b[i]
		}
	}
	return s == b[4]
}

func errorf(format string, args ...any) error { return fmt.Errorf("udf: "+format, args...) }
