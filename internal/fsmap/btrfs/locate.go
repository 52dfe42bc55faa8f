package btrfs

import (
	"fmt"
	"slices"
	"sort"
)

// Locate says what the byte range [off, off+n) of the device holds, as spans in
// offset order: adjacent bytes that hold the same structure of the same inodes
// make one span.
func (f *FS) Locate(off, n int64) ([]Span, error) {
	if off < 0 || n <= 0 || off >= f.size {
		return nil, nil
	}
	if err := f.walk(); err != nil {
		return nil, err
	}
	end := min(off+n, f.size)
	var out []Span
	var owners [][]owner
	for pos := off; pos < end; {
		next, what, os := f.classify(pos)
		next = min(next, end)
		if k := len(out) - 1; k >= 0 && out[k].Structure == what && slices.Equal(owners[k], os) {
			out[k].Len += next - pos
		} else {
			out = append(out, Span{Off: pos, Len: next - pos, Structure: what})
			owners = append(owners, os)
		}
		pos = next
	}
	for i := range out {
		for _, o := range owners[i] {
			out[i].Inodes = append(out[i].Inodes, o.ino)
			if p := f.path(o); p != "" {
				out[i].Paths = append(out[i].Paths, p)
			}
		}
	}
	return out, nil
}

// classify says what the byte at pos holds, up to where (next), and whose it is.
func (f *FS) classify(pos int64) (next int64, what string, owners []owner) {
	next = f.size
	for i, at := range superMirrors {
		switch {
		case pos >= at && pos < at+superSize:
			if i == 0 {
				return at + superSize, "superblock", nil
			}
			return at + superSize, fmt.Sprintf("superblock mirror %d", i), nil
		case at > pos:
			next = min(next, at)
		}
	}
	if i := sort.Search(len(f.runs), func(i int) bool { return f.runs[i].end > pos }); i < len(f.runs) {
		if r := f.runs[i]; r.start <= pos {
			return min(next, r.end), r.what, r.owners
		} else {
			next = min(next, r.start)
		}
	}
	i := sort.Search(len(f.stripes), func(i int) bool { return f.stripes[i].end > pos })
	if i < len(f.stripes) && f.stripes[i].start <= pos {
		s := f.stripes[i]
		switch {
		case s.typ&typeSystem != 0:
			what = "system chunk (unused)"
		case s.typ&typeData != 0 && s.typ&typeMetadata != 0:
			what = "mixed block group (unused)"
		case s.typ&typeData != 0:
			what = "data block group (unused)"
		case s.typ&typeMetadata != 0:
			what = "metadata block group (unused)"
		default:
			what = "chunk of unknown type (unused)"
		}
		return min(next, s.end), what, nil
	}
	if i < len(f.stripes) {
		next = min(next, f.stripes[i].start)
	}
	if pos < 1<<20 {
		return min(next, 1<<20), "reserved (first MiB)", nil
	}
	return next, "outside every chunk", nil
}
