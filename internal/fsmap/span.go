package fsmap

// Span is a byte range of a filesystem (offsets from its start) and what it holds.
// Every mapper under fsmap returns its Locate answers as Spans, in offset order.
type Span struct {
	Off, Len  int64
	Structure string   // "superblock", "inode table", "FAT 1", "file data", "free blocks", …
	Inodes    []uint64 // the inodes it holds (inode table) or belongs to; none on FAT
	Paths     []string // the paths of what it holds or belongs to, for those that have one
}

// Spans walks the bytes [off, end) of a filesystem with at, which says what the
// byte at pos holds, an id that tells its owner from others, and where what holds
// it ends, and merges consecutive pieces of the same structure and owner into one
// span. none is the id of no owner: the first piece is never merged.
func Spans[ID comparable](off, end int64, none ID, at func(pos int64) (s Span, id ID, next int64)) []Span {
	var out []Span
	lastID := none
	for pos := off; pos < end; {
		s, id, next := at(pos)
		next = min(max(next, pos+1), end)
		s.Off, s.Len = pos, next-pos
		if k := len(out) - 1; k >= 0 && out[k].Structure == s.Structure && id == lastID {
			out[k].Len += s.Len
		} else {
			out = append(out, s)
		}
		lastID = id
		pos = next
	}
	return out
}
