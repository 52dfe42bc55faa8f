// Package ntfs maps the byte ranges of an NTFS volume to what they hold: the boot
// sector and its backup (the sector after the volume's last), the MFT record by
// record (its number and path; free records as such), the MFT's bitmap, the MFT
// mirror, the system files' data by name ($LogFile, $AttrDef, $Bitmap, $Boot,
// $Secure's $SDS, $UpCase, $Extend's files), directories' index blocks (INDX)
// with the directory's path, the non-resident data of files (with the path, and
// the stream's name for a named stream), bad clusters, and free clusters (per
// $Bitmap). It reads through an io.ReaderAt, only what it needs, and trusts no
// number it reads.
//
// The layout: the boot sector (cluster 0, part of $Boot) gives the cluster size,
// the MFT's first cluster and the size of a record. Record 0 ($MFT) maps the
// MFT's own extents; every file is a record of attributes, resident (inside the
// record) or not (mapped to runs of clusters by mapping pairs). A record's and an
// index block's last two bytes of each 512 are an update sequence, undone before
// reading. Names and parents come from the $FILE_NAME attributes; the root
// directory is record 5. An $MFT fragmented enough to need an attribute list is
// mapped as far as record 0 itself says.
package ntfs

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

// FS is an NTFS volume opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	sector     int64 // bytes per sector
	cluster    int64 // bytes per cluster
	sectors    int64 // in the volume; the backup boot sector follows
	clusters   int64
	recordSize int64 // of an MFT record
	mftLCN     int64

	walked    bool
	walkErr   error
	mft       []extent // the MFT's runs
	recs      []record // by number
	runs      []run    // clusters of an owner, sorted, not overlapping
	owners    []owner
	bitmap    []byte   // $Bitmap: a bit a cluster, set if in use; nil if unread
	bitmapExt []extent // $Bitmap's runs
}

// extent maps n clusters from vcn of an attribute to lcn (-1: sparse).
type extent struct{ vcn, lcn, n int64 }

// record is what walk keeps of an MFT record.
type record struct {
	inUse, dir bool
	parent     int64 // -1: none known
	name       string
	nameNS     int8 // the namespace of name: -1 none, 2 DOS, 0 POSIX, 1 Win32, 3 both
}

// run is n clusters from lcn that belong to owners[id]; an MFT run's first
// cluster is the MFT's vcn.
type run struct {
	lcn, n, vcn int64
	id          int
}

// owner is what a run holds: a structure of a record (its path, and a stream's
// name after it), or the MFT's records themselves.
type owner struct {
	structure string
	rec       int64  // -1: none
	suffix    string // after the record's path: ":stream"
	mft       bool
}

// Open reads the boot sector of the NTFS volume r of size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < 512 {
		return nil, errors.New("ntfs: too small for a boot sector")
	}
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("ntfs: read the boot sector: %w", err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return nil, errors.New("ntfs: no NTFS boot sector")
	}
	f := &FS{r: r, size: size}
	f.sector = int64(le.Uint16(bs[11:]))
	spc := int64(bs[13])
	if spc > 128 {
		spc = 1 << min(256-spc, 31)
	}
	if f.sector < 256 || f.sector > 4096 || f.sector&(f.sector-1) != 0 || spc == 0 || spc > 1<<12 {
		return nil, fmt.Errorf("ntfs: %d bytes a sector, %d sectors a cluster", f.sector, spc)
	}
	f.cluster = f.sector * spc
	f.sectors = int64(le.Uint64(bs[40:]) & (1<<48 - 1))
	f.clusters = f.sectors / spc
	f.mftLCN = int64(le.Uint64(bs[48:]) & (1<<48 - 1))
	switch c := int8(bs[64]); {
	case c < 0 && c >= -16:
		f.recordSize = 1 << -c
	case c > 0:
		f.recordSize = int64(c) * f.cluster
	}
	switch {
	case f.recordSize < 512 || f.recordSize > 64<<10:
		return nil, fmt.Errorf("ntfs: MFT records of %d bytes", f.recordSize)
	case f.sectors*f.sector > size:
		return nil, fmt.Errorf("ntfs: a volume of %d sectors in %d bytes", f.sectors, size)
	case f.clusters == 0 || f.mftLCN == 0 || f.mftLCN >= f.clusters:
		return nil, fmt.Errorf("ntfs: the MFT at cluster %d of %d", f.mftLCN, f.clusters)
	}
	return f, nil
}

// ClusterSize is the size of a cluster in bytes.
func (f *FS) ClusterSize() int64 { return f.cluster }

// Locate says what the byte range [off, off+n) of the volume holds, as spans in
// offset order: consecutive clusters that hold the same structure of the same
// file, or free clusters, make one span; each MFT record is a span of its own.
func (f *FS) Locate(off, n int64) ([]fsmap.Span, error) {
	if off < 0 || n <= 0 || off >= f.size {
		return nil, nil
	}
	if err := f.walk(); err != nil {
		return nil, err
	}
	return fsmap.Spans(off, min(off+n, f.size), int64(-1), f.at), nil
}

// The ids at tells owners apart by, besides owners' indexes: -1 for what belongs
// to no file, freeRecords for free MFT records, recID(n) for MFT record n.
const freeRecords = -2

func recID(n int64) int64 { return -3 - n }

// at says what the byte at pos holds, an id that tells owners apart, and where
// what holds it ends.
func (f *FS) at(pos int64) (s fsmap.Span, id int64, next int64) {
	backup := f.sectors * f.sector
	switch {
	case pos < f.sector:
		return fsmap.Span{Structure: "boot sector"}, -1, f.sector
	case pos >= backup && pos < backup+f.sector:
		return fsmap.Span{Structure: "backup boot sector"}, -1, backup + f.sector
	case pos >= backup:
		return fsmap.Span{Structure: "past the volume"}, -1, f.size
	}
	c := pos / f.cluster
	if c >= f.clusters {
		return fsmap.Span{Structure: "past the last cluster"}, -1, backup
	}
	i := sort.Search(len(f.runs), func(i int) bool { return f.runs[i].lcn+f.runs[i].n > c })
	if i < len(f.runs) && f.runs[i].lcn <= c {
		r := f.runs[i]
		o := f.owners[r.id]
		runEnd := (r.lcn + r.n) * f.cluster
		if !o.mft {
			s := fsmap.Span{Structure: o.structure}
			if o.rec >= 0 {
				s.Paths = []string{f.path(o.rec) + o.suffix}
			}
			return s, int64(r.id), runEnd
		}
		at := (r.vcn+c-r.lcn)*f.cluster + pos%f.cluster // in the MFT
		n := at / f.recordSize
		next := min(pos+f.recordSize-at%f.recordSize, runEnd)
		if n >= int64(len(f.recs)) || !f.recs[n].inUse {
			return fsmap.Span{Structure: "free MFT records"}, freeRecords, next
		}
		return fsmap.Span{Structure: "MFT record", Inodes: []uint64{uint64(n)}, Paths: []string{f.path(n)}}, recID(n), next
	}
	// No file holds c: $Bitmap says whether it is free, and the clusters up to
	// the next owned one that it says the same of go with it.
	limit := f.clusters
	if i < len(f.runs) {
		limit = f.runs[i].lcn
	}
	name, e := fsmap.Run(c, limit, f.unowned)
	return fsmap.Span{Structure: name}, -1, e * f.cluster
}

// unowned names cluster c, which no file holds, by its bit in $Bitmap.
func (f *FS) unowned(c int64) string {
	switch {
	case c/8 >= int64(len(f.bitmap)):
		return "clusters, allocation unknown"
	case f.bitmap[c/8]&(1<<(c%8)) == 0:
		return "free clusters"
	}
	return "allocated, owner unknown"
}

// addRuns records that the extents of an attribute belong to a new owner o.
func (f *FS) addRuns(ext []extent, o owner) {
	id := len(f.owners)
	f.owners = append(f.owners, o)
	for _, e := range ext {
		if e.lcn >= 0 {
			f.runs = append(f.runs, run{lcn: e.lcn, n: e.n, vcn: e.vcn, id: id})
		}
	}
}

// sortRuns orders the runs by their first cluster and cuts what a run shares with
// the one before it (clusters two files claim, on a corrupt volume) from it.
func (f *FS) sortRuns() {
	slices.SortStableFunc(f.runs, func(a, b run) int { return cmp.Compare(a.lcn, b.lcn) })
	out := f.runs[:0]
	end := int64(0)
	for _, r := range f.runs {
		if cut := end - r.lcn; cut > 0 {
			r.lcn, r.n, r.vcn = r.lcn+cut, r.n-cut, r.vcn+cut
		}
		if r.n <= 0 {
			continue
		}
		out = append(out, r)
		end = r.lcn + r.n
	}
	f.runs = out
}
