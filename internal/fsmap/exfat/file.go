package exfat

import (
	"fmt"
	"io"
	"strings"

	"vmb.dev/vmb/internal/fsmap"
)

// The fields of an entry set's first two entries, by offset: the file directory
// entry (0-31), then the stream extension (32-63).
const (
	feAttr      = 4
	feCreate    = 8 // timestamps: 2 s, minute, hour, day, month, year from 1980
	feModify    = 12
	feAccess    = 16
	feCreate10  = 20 // 10 ms units past the 2 s: 0-199
	feModify10  = 21
	feCreateUTC = 22 // bit 7: valid; bits 0-6: signed 15-minute units
	feModifyUTC = 23
	feAccessUTC = 24
	seFlags     = 32 + 1 // bit 1: NoFatChain
	seValid     = 32 + 8 // ValidDataLength: bytes written; the rest read as zeros
	seFirst     = 32 + 20
	seLength    = 32 + 24 // DataLength
)

// attrNames are the attributes Stat reports, by bit, in their order.
var attrNames = []struct {
	bit  uint16
	name string
}{{0x01, "read-only"}, {0x02, "hidden"}, {0x04, "system"}, {0x20, "archive"}}

// Paths lists every path from the root ("/") with its identity for vmb diff: a
// hash of a file's lengths and the clusters that hold it (a directory's: its
// first cluster). Two files with the same identity whose clusters hold the same
// bytes have the same content.
func (f *FS) Paths() (map[string]uint64, error) {
	if err := f.walk(); err != nil {
		return nil, err
	}
	out := make(map[string]uint64, len(f.sets)+1)
	out["/"] = uint64(f.rootCluster)
	for p, set := range f.sets {
		if le.Uint16(set[feAttr:])&0x10 != 0 {
			out[p] = uint64(le.Uint32(set[seFirst:]))
			continue
		}
		cs, _ := f.chain(set) // a broken chain's clusters, as far as it goes
		out[p] = fsmap.Identity(le.AppendUint64(le.AppendUint64(nil, le.Uint64(set[seLength:])), le.Uint64(set[seValid:])), cs)
	}
	return out, nil
}

// Stat reads the entry set of path p: type, size (DataLength), attributes, and
// the creation and modification times (to 10 ms) and access time (to 2 s), with
// their UTC offsets where the entry records one. The root directory has no
// entry set, so none of them.
func (f *FS) Stat(p string) (*fsmap.File, error) {
	if err := f.walk(); err != nil {
		return nil, err
	}
	if p == "/" {
		return &fsmap.File{Type: "directory"}, nil
	}
	set := f.sets[p]
	if set == nil {
		return nil, fmt.Errorf("exfat: %s: no such path", p)
	}
	attr := le.Uint16(set[feAttr:])
	size := le.Uint64(set[seLength:])
	if size > 1<<62 { // exFAT's own limit is 2^64-1, no disk's
		return nil, fmt.Errorf("exfat: %s: DataLength %d out of range", p, size)
	}
	st := &fsmap.File{Type: "file", Size: int64(size)}
	if attr&0x10 != 0 {
		st.Type, st.Size = "directory", 0
	}
	var attrs []string
	for _, a := range attrNames {
		if attr&a.bit != 0 {
			attrs = append(attrs, a.name)
		}
	}
	st.Attrs = strings.Join(attrs, " ")
	st.Crtime = stamp(le.Uint32(set[feCreate:]), int(set[feCreate10]), true, set[feCreateUTC])
	st.Mtime = stamp(le.Uint32(set[feModify:]), int(set[feModify10]), true, set[feModifyUTC])
	st.Atime = stamp(le.Uint32(set[feAccess:]), 0, false, set[feAccessUTC])
	return st, nil
}

// stamp writes an exFAT timestamp, with centi (10 ms units, up to 1.99 s) when
// centis is set, and the UTC offset when utc says it is valid; "" for a timestamp
// never set (0). Fields out of range are written as they are, not normalized.
func stamp(ts uint32, centi int, centis bool, utc byte) string {
	if ts == 0 {
		return ""
	}
	sec := 2 * int(ts&0x1f)
	s := fmt.Sprintf("%04d-%02d-%02dT%02d:%02d:", 1980+int(ts>>25), ts>>21&0xf, ts>>16&0x1f, ts>>11&0x1f, ts>>5&0x3f)
	if centis {
		s += fmt.Sprintf("%02d.%02d", sec+centi/100, centi%100)
	} else {
		s += fmt.Sprintf("%02d", sec)
	}
	if utc&0x80 != 0 {
		m := int(int8(utc<<1)>>1) * 15 // 7-bit two's complement
		sign := "+"
		if m < 0 {
			sign, m = "-", -m
		}
		s += fmt.Sprintf("%s%02d:%02d", sign, m/60, m%60)
	}
	return s
}

// ReadFile writes the content of the file at p: its ValidDataLength bytes from
// its clusters, then zeros up to its DataLength.
func (f *FS) ReadFile(p string, w io.Writer) error {
	if err := f.walk(); err != nil {
		return err
	}
	set := f.sets[p]
	if set == nil || le.Uint16(set[feAttr:])&0x10 != 0 {
		return fmt.Errorf("exfat: %s: not a file", p)
	}
	cs, err := f.chain(set)
	if err != nil {
		return fmt.Errorf("exfat: %s: %w", p, err)
	}
	size := int64(le.Uint64(set[seLength:]))
	valid := min(int64(le.Uint64(set[seValid:])), size)
	buf := make([]byte, f.clusterSize)
	for k, c := range cs {
		at := int64(k) * f.clusterSize
		n := min(size-at, f.clusterSize)
		clear(buf[:n])
		if r := min(valid-at, n); r > 0 {
			if got, err := f.r.ReadAt(buf[:r], f.heap*f.sector+(c-2)*f.clusterSize); int64(got) < r {
				return fmt.Errorf("exfat: %s: read cluster %d: %w", p, c, err)
			}
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}

// chain lists the clusters that hold the file of entry set set, as many as its
// DataLength takes: those after its first when NoFatChain is set, else the FAT's
// chain. A chain that ends early, leaves the heap or comes back to one of its
// own is an error, with the clusters up to there: the walk is bounded by the
// number of clusters.
func (f *FS) chain(set *[64]byte) ([]int64, error) {
	size := le.Uint64(set[seLength:])
	if size > uint64(f.clusters)*uint64(f.clusterSize) {
		return nil, fmt.Errorf("%d bytes, more than the heap's %d clusters hold", size, f.clusters)
	}
	n := (int64(size) + f.clusterSize - 1) / f.clusterSize
	next := f.next
	if set[seFlags]&2 != 0 { // contiguous
		next = func(c int64) int64 { return c + 1 }
	}
	if f.mark == nil {
		f.mark = make([]uint64, (f.clusters+2+63)/64)
	}
	return fsmap.Chain(int64(le.Uint32(set[seFirst:])), n, f.mark, f.valid, next)
}
