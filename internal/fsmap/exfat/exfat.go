// Package exfat maps the byte ranges of an exFAT filesystem to what they hold: the
// main and backup boot regions (boot sector, extended boot sectors, OEM
// parameters, the reserved sector, the checksum sector), each FAT, the allocation
// bitmap, the up-case table, the root directory, directories' and files' clusters
// (with their paths), free clusters (per the allocation bitmap), and the space
// after the cluster heap. It reads through an io.ReaderAt, only what it needs, and
// trusts no number it reads: every cluster is claimed at most once, so a chain
// that loops or crosses another ends the walk rather than the program.
//
// The layout, from the start, in sectors: the main boot region (0-11), the backup
// boot region (12-23), reserved sectors up to the FAT offset, the FATs, reserved
// sectors up to the cluster heap, the heap (clusters numbered from 2). The root
// directory holds the allocation bitmap's and the up-case table's entries; a file
// or directory is an entry set (file, stream extension, names), whose stream
// extension gives its first cluster and length, and whether its clusters are
// contiguous (NoFatChain) or chained in the FAT.
//
// For vmb diff's files level it lists every path (Paths), reads an entry set's
// type, size, attributes and timestamps (Stat) and a file's content (ReadFile):
// file.go.
package exfat

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

// FS is an exFAT filesystem opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	sector      int64 // bytes per sector
	clusterSize int64 // bytes per cluster
	fatOff      int64 // sectors: the first FAT
	fatLen      int64 // sectors per FAT
	fats        int64 // 1 or 2
	heap        int64 // sectors: where cluster 2 starts
	clusters    int64 // clusters in the heap: 2 to clusters+1
	rootCluster int64

	walked  bool
	walkErr error
	fat     []byte  // FAT 1, as read
	bitmap  []byte  // the allocation bitmap, nil if none was found
	owners  []owner // runs of clusters of one structure, sorted by start
	names   []string
	sets    map[string]*[64]byte // every path's file and stream extension entries (the root has none)
	mark    []uint64             // chain's scratch: clusters of the chain being followed
}

// owner is a run of clusters of one structure: a directory, a file, the bitmap or
// the up-case table.
type owner struct {
	start, n  int64 // clusters
	id        int   // index in names: the path, "" for none
	structure string
}

// Open reads the boot sector of the exFAT filesystem r of size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < 24*512 {
		return nil, errors.New("exfat: too small for the boot regions")
	}
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("exfat: read the boot sector: %w", err)
	}
	if string(bs[3:11]) != "EXFAT   " {
		return nil, errors.New("exfat: no exFAT boot sector")
	}
	sectorShift, clusterShift := bs[108], bs[109]
	if sectorShift < 9 || sectorShift > 12 || clusterShift > 25-sectorShift {
		return nil, fmt.Errorf("exfat: 2^%d bytes a sector, 2^%d sectors a cluster", sectorShift, clusterShift)
	}
	f := &FS{r: r, size: size}
	f.sector = 1 << sectorShift
	f.clusterSize = f.sector << clusterShift
	f.fatOff = int64(le.Uint32(bs[80:]))
	f.fatLen = int64(le.Uint32(bs[84:]))
	f.heap = int64(le.Uint32(bs[88:]))
	f.clusters = int64(le.Uint32(bs[92:]))
	f.rootCluster = int64(le.Uint32(bs[96:]))
	f.fats = int64(bs[110])
	switch {
	case f.fats != 1 && f.fats != 2:
		return nil, fmt.Errorf("exfat: %d FATs", f.fats)
	case f.fatOff < 24 || f.fatLen*f.sector < 4*(f.clusters+2):
		return nil, errors.New("exfat: the FAT overlaps the boot regions or is too short for the heap")
	case f.heap < f.fatOff+f.fats*f.fatLen:
		return nil, errors.New("exfat: the cluster heap overlaps the FATs")
	case (f.fatOff+f.fatLen)*f.sector > size:
		return nil, errors.New("exfat: the FAT ends past the filesystem")
	case !f.valid(f.rootCluster):
		return nil, fmt.Errorf("exfat: root directory at cluster %d", f.rootCluster)
	}
	return f, nil
}

// ClusterSize is the size of a cluster in bytes.
func (f *FS) ClusterSize() int64 { return f.clusterSize }

// Locate says what the byte range [off, off+n) of the filesystem holds, as spans in
// offset order: consecutive sectors or clusters that hold the same structure of the
// same directory or file make one span.
func (f *FS) Locate(off, n int64) ([]fsmap.Span, error) {
	if off < 0 || n <= 0 || off >= f.size {
		return nil, nil
	}
	if err := f.walk(); err != nil {
		return nil, err
	}
	return fsmap.Spans(off, min(off+n, f.size), -1, f.at), nil
}

// bootRegion names the sectors of a boot region, 12 of them.
var bootRegion = [12]string{
	"boot sector",
	"extended boot sectors", "extended boot sectors", "extended boot sectors", "extended boot sectors",
	"extended boot sectors", "extended boot sectors", "extended boot sectors", "extended boot sectors",
	"OEM parameters", "reserved boot sector", "boot checksum sector",
}

// at says what the byte at pos holds, the owner's id (-1 for none) and where what
// holds it ends.
func (f *FS) at(pos int64) (s fsmap.Span, id int, next int64) {
	sec := pos / f.sector
	nextSec := (sec + 1) * f.sector
	fatEnd := f.fatOff + f.fats*f.fatLen
	switch {
	case sec < 12:
		return fsmap.Span{Structure: bootRegion[sec]}, -1, nextSec
	case sec < 24:
		return fsmap.Span{Structure: "backup " + bootRegion[sec-12]}, -1, nextSec
	case sec < f.fatOff:
		return fsmap.Span{Structure: "reserved sectors"}, -1, f.fatOff * f.sector
	case sec < fatEnd:
		k := (sec - f.fatOff) / f.fatLen
		return fsmap.Span{Structure: fmt.Sprintf("FAT %d", k+1)}, -1, (f.fatOff + (k+1)*f.fatLen) * f.sector
	case sec < f.heap:
		return fsmap.Span{Structure: "reserved sectors"}, -1, f.heap * f.sector
	}
	c := (pos-f.heap*f.sector)/f.clusterSize + 2
	if c >= f.clusters+2 {
		return fsmap.Span{Structure: "past the cluster heap"}, -1, f.size
	}
	cend := f.heap*f.sector + (c-1)*f.clusterSize
	i := sort.Search(len(f.owners), func(i int) bool { return f.owners[i].start+f.owners[i].n > c })
	if i < len(f.owners) && f.owners[i].start <= c {
		o := f.owners[i]
		s := fsmap.Span{Structure: o.structure}
		if p := f.names[o.id]; p != "" {
			s.Paths = []string{p}
		}
		return s, o.id, cend + (o.start+o.n-1-c)*f.clusterSize
	}
	// No structure holds c: the allocation bitmap says whether it is free, and the
	// clusters up to the next owned one that it says the same of go with it.
	limit := f.clusters + 2
	if i < len(f.owners) {
		limit = f.owners[i].start
	}
	name, e := fsmap.Run(c, limit, f.unowned)
	return fsmap.Span{Structure: name}, -1, cend + (e-1-c)*f.clusterSize
}

// unowned names cluster c, which no structure holds, by its allocation bit.
func (f *FS) unowned(c int64) string {
	b := (c - 2) / 8
	switch {
	case f.bitmap == nil || b >= int64(len(f.bitmap)):
		return "clusters, allocation unknown"
	case f.bitmap[b]&(1<<((c-2)%8)) == 0:
		return "free clusters"
	}
	return "allocated, owner unknown"
}

// next is the FAT's entry for cluster c: the next cluster of its chain, or a
// number valid rejects (free, bad, end of chain, or past the FAT).
func (f *FS) next(c int64) int64 {
	if c < 0 || 4*c+4 > int64(len(f.fat)) {
		return 0
	}
	return int64(le.Uint32(f.fat[4*c:]))
}

// valid reports whether c is a cluster of the heap.
func (f *FS) valid(c int64) bool { return c >= 2 && c < f.clusters+2 }

// addRun records that cluster c belongs to owner id, extending its last run.
func (f *FS) addRun(c int64, id int, structure string) {
	if k := len(f.owners) - 1; k >= 0 && f.owners[k].id == id && f.owners[k].start+f.owners[k].n == c {
		f.owners[k].n++
		return
	}
	f.owners = append(f.owners, owner{start: c, n: 1, id: id, structure: structure})
}

// sortRuns orders the runs by their first cluster, for Locate's search.
func (f *FS) sortRuns() {
	slices.SortFunc(f.owners, func(a, b owner) int { return cmp.Compare(a.start, b.start) })
}
