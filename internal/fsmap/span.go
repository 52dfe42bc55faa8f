package fsmap

// Span is a byte range of a filesystem (offsets from its start) and what it holds.
// Every mapper under fsmap returns its Locate answers as Spans, in offset order.
type Span struct {
	Off, Len  int64
	Structure string   // "superblock", "inode table", "FAT 1", "file data", "free blocks", …
	Inodes    []uint64 // the inodes it holds (inode table) or belongs to; none on FAT
	Paths     []string // the paths of what it holds or belongs to, for those that have one
}
