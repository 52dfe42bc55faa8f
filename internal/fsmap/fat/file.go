package fat

import (
	"fmt"
	"io"
	"strings"

	"vmb.dev/vmb/internal/fsmap"
)

// A directory entry's fields, by offset (32 bytes an entry).
const (
	deAttr     = 11
	deCrtCenti = 13 // creation time's 10 ms units past its 2 s: 0-199
	deCrtTime  = 14
	deCrtDate  = 16
	deAccDate  = 18
	deClusHi   = 20 // FAT32
	deWrtTime  = 22
	deWrtDate  = 24
	deClusLo   = 26
	deSize     = 28
)

// attrNames are the DOS attributes Stat reports, by bit, in their order.
var attrNames = []struct {
	bit  byte
	name string
}{{0x01, "read-only"}, {0x02, "hidden"}, {0x04, "system"}, {0x20, "archive"}}

// Paths lists every path from the root ("/") with its identity for vmb diff: a
// hash of a file's size and the clusters its chain holds (a directory's: its first
// cluster). Two files with the same identity whose clusters hold the same bytes
// have the same content.
func (f *FS) Paths() (map[string]uint64, error) {
	if err := f.walk(); err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(f.dirents)+1)
	out["/"] = uint64(f.rootCluster)
	for p, e := range f.dirents {
		if e[deAttr]&0x10 != 0 {
			out[p] = uint64(f.first(e))
			continue
		}
		cs, _ := f.chain(e) // a broken chain's clusters, as far as it goes
		out[p] = fsmap.Identity(le.AppendUint32(make([]byte, 0, 4+8*len(cs)), le.Uint32(e[deSize:])), cs)
	}
	return out, nil
}

// Stat reads the directory entry of path p: type, size, the DOS attributes, and
// the creation time (to 10 ms), modification time (to 2 s) and access date, as
// the local wall time FAT records (no zone). A time or date never set (0) is
// left out; the root directory has none of them.
func (f *FS) Stat(p string) (*fsmap.File, error) {
	if err := f.walk(); err != nil {
		return nil, err
	}
	if p == "/" {
		return &fsmap.File{Type: "directory"}, nil
	}
	e := f.dirents[p]
	if e == nil {
		return nil, fmt.Errorf("fat: %s: no such path", p)
	}
	st := &fsmap.File{Type: "file", Size: int64(le.Uint32(e[deSize:]))}
	if e[deAttr]&0x10 != 0 {
		st.Type, st.Size = "directory", 0
	}
	var attrs []string
	for _, a := range attrNames {
		if e[deAttr]&a.bit != 0 {
			attrs = append(attrs, a.name)
		}
	}
	st.Attrs = strings.Join(attrs, " ")
	st.Crtime = stamp(le.Uint16(e[deCrtDate:]), le.Uint16(e[deCrtTime:]), int(e[deCrtCenti]), true)
	st.Mtime = stamp(le.Uint16(e[deWrtDate:]), le.Uint16(e[deWrtTime:]), 0, false)
	if d := le.Uint16(e[deAccDate:]); d != 0 {
		st.Atime = date(d)
	}
	return st, nil
}

// date writes a FAT date: years from 1980, month, day. Fields out of range are
// written as they are, not normalized.
func date(d uint16) string {
	return fmt.Sprintf("%04d-%02d-%02d", 1980+int(d>>9), d>>5&0xf, d&0x1f)
}

// stamp writes a FAT date and time (2 s units), with centi (10 ms units, up to
// 1.99 s) when centis is set; "" for a date never set.
func stamp(d, t uint16, centi int, centis bool) string {
	if d == 0 {
		return ""
	}
	sec := 2 * int(t&0x1f)
	s := fmt.Sprintf("%sT%02d:%02d:", date(d), t>>11, t>>5&0x3f)
	if !centis {
		return s + fmt.Sprintf("%02d", sec)
	}
	return s + fmt.Sprintf("%02d.%02d", sec+centi/100, centi%100)
}

// ReadFile writes the content of the file at p, its size in bytes from its
// cluster chain.
func (f *FS) ReadFile(p string, w io.Writer) error {
	if err := f.walk(); err != nil {
		return err
	}
	e := f.dirents[p]
	if e == nil || e[deAttr]&0x10 != 0 {
		return fmt.Errorf("fat: %s: not a file", p)
	}
	cs, err := f.chain(e)
	if err != nil {
		return fmt.Errorf("fat: %s: %w", p, err)
	}
	left := int64(le.Uint32(e[deSize:]))
	buf := make([]byte, f.clusterSize)
	for _, c := range cs {
		n := min(left, f.clusterSize)
		if k, err := f.r.ReadAt(buf[:n], f.dataSector*f.sector+(c-2)*f.clusterSize); int64(k) < n {
			return fmt.Errorf("fat: %s: read cluster %d: %w", p, c, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// first is the first cluster directory entry e names.
func (f *FS) first(e *[32]byte) int64 {
	c := int64(le.Uint16(e[deClusLo:]))
	if f.bits == 32 {
		c |= int64(le.Uint16(e[deClusHi:])) << 16
	}
	return c
}

// chain lists the clusters that hold the file of entry e, as many as its size
// takes, following the FAT from its first. A chain that ends early, leaves the
// data clusters or comes back to one of its own is an error, with the clusters
// up to there: the walk is bounded by the number of clusters.
func (f *FS) chain(e *[32]byte) ([]int64, error) {
	size := int64(le.Uint32(e[deSize:]))
	n := (size + f.clusterSize - 1) / f.clusterSize
	if n > f.clusters {
		return nil, fmt.Errorf("%d bytes, more than the filesystem's %d clusters hold", size, f.clusters)
	}
	if f.mark == nil {
		f.mark = make([]uint64, (f.clusters+2+63)/64)
	}
	return fsmap.Chain(f.first(e), n, f.mark, f.valid, f.entry)
}
