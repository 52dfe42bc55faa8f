// Package fat maps the byte ranges of a FAT12, FAT16 or FAT32 filesystem (vfat; the
// EFI system partition) to what they hold: the boot sector, the FSInfo sector and
// the backup boot sector (FAT32), the other reserved sectors, each copy of the FAT,
// the fixed root directory (FAT12/16), directories' and files' clusters (with their
// paths, long names included), free or bad clusters, and the space after the last
// cluster. It reads the filesystem through an io.ReaderAt, only what it needs, and
// trusts no number it reads: cluster chains are followed at most once per cluster,
// so a loop or a cross-link in a corrupt FAT ends the walk rather than the program.
//
// For vmb diff's files level it lists every path (Paths), reads a directory
// entry's type, size, DOS attributes and times (Stat) and a file's content by its
// cluster chain (ReadFile): file.go.
//
// The layout, from the start: reserved sectors (the boot sector first), the FATs,
// the root directory (FAT12/16 only: FAT32's is a cluster chain), then the data
// region, clusters numbered from 2. The FAT holds, per cluster, the next cluster of
// its chain, an end-of-chain mark, 0 (free) or a bad-cluster mark; a directory entry
// holds its first cluster.
package fat

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

// FS is a FAT filesystem opened for mapping.
type FS struct {
	r    io.ReaderAt
	size int64

	bits        int   // 12, 16 or 32: the width of a FAT entry
	sector      int64 // bytes per sector
	clusterSize int64 // in bytes
	reserved    int64 // sectors before the first FAT
	fats        int64 // how many FATs
	fatSectors  int64 // sectors per FAT
	rootEntries int64 // entries of the fixed root directory (FAT12/16)
	rootSector  int64 // where the fixed root directory starts (FAT12/16)
	dataSector  int64 // where cluster 2 starts
	clusters    int64 // data clusters: numbered 2 to clusters+1
	rootCluster int64 // FAT32's root directory's first cluster
	fsInfo      int64 // FAT32's FSInfo sector, 0 if none
	backupBoot  int64 // FAT32's backup boot sector, 0 if none

	walked  bool
	walkErr error
	fat     []byte  // FAT 1, as read
	owners  []owner // runs of clusters of a directory or file, sorted by start
	names   []string
	dirents map[string]*[32]byte // every path's directory entry (the root has none)
	mark    []uint64             // chain's scratch: clusters of the chain being followed
}

// owner is a run of clusters of one directory or file.
type owner struct {
	start, n int64 // clusters
	id       int   // index in names: the path
	dir      bool
}

// Open reads the boot sector of the FAT filesystem r of size bytes.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	if size < 512 {
		return nil, errors.New("fat: too small for a boot sector")
	}
	bs := make([]byte, 512)
	if _, err := r.ReadAt(bs, 0); err != nil {
		return nil, fmt.Errorf("fat: read the boot sector: %w", err)
	}
	f := &FS{r: r, size: size}
	f.sector = int64(le.Uint16(bs[11:]))
	spc := int64(bs[13])
	f.reserved = int64(le.Uint16(bs[14:]))
	f.fats = int64(bs[16])
	f.rootEntries = int64(le.Uint16(bs[17:]))
	total := int64(le.Uint16(bs[19:]))
	if total == 0 {
		total = int64(le.Uint32(bs[32:]))
	}
	f.fatSectors = int64(le.Uint16(bs[22:]))
	fat32 := f.fatSectors == 0 // as Linux tells FAT32: no 16-bit FAT size
	if fat32 {
		f.fatSectors = int64(le.Uint32(bs[36:]))
		f.rootCluster = int64(le.Uint32(bs[44:]))
		f.fsInfo = int64(le.Uint16(bs[48:]))
		f.backupBoot = int64(le.Uint16(bs[50:]))
		if f.fsInfo >= f.reserved {
			f.fsInfo = 0
		}
		if f.backupBoot >= f.reserved {
			f.backupBoot = 0
		}
	}
	switch f.sector {
	case 512, 1024, 2048, 4096:
	default:
		return nil, fmt.Errorf("fat: %d bytes per sector", f.sector)
	}
	if spc == 0 || spc&(spc-1) != 0 {
		return nil, fmt.Errorf("fat: %d sectors per cluster", spc)
	}
	f.clusterSize = spc * f.sector
	if f.reserved == 0 || f.fats == 0 || f.fatSectors == 0 || (fat32 && f.rootEntries != 0) {
		return nil, errors.New("fat: boot sector geometry out of range")
	}
	rootSectors := (f.rootEntries*32 + f.sector - 1) / f.sector
	f.rootSector = f.reserved + f.fats*f.fatSectors
	f.dataSector = f.rootSector + rootSectors
	if f.dataSector >= total || f.dataSector*f.sector > size {
		return nil, errors.New("fat: the FATs and root directory end past the filesystem")
	}
	f.clusters = (total - f.dataSector) / spc
	switch {
	case fat32:
		f.bits = 32
	case f.clusters < 4085:
		f.bits = 12
	default:
		f.bits = 16
	}
	if entries := f.fatSectors * f.sector * 8 / int64(f.bits); f.clusters+2 > entries {
		return nil, fmt.Errorf("fat: %d clusters, a FAT of %d entries", f.clusters, entries)
	}
	if fat32 && (f.rootCluster < 2 || f.rootCluster >= f.clusters+2) {
		return nil, fmt.Errorf("fat: root directory at cluster %d", f.rootCluster)
	}
	return f, nil
}

// Type is FAT12, FAT16 or FAT32.
func (f *FS) Type() string { return fmt.Sprintf("FAT%d", f.bits) }

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

// at says what the byte at pos holds, the owner's id (-1 for none) and where what
// holds it ends.
func (f *FS) at(pos int64) (s fsmap.Span, id int, next int64) {
	sec := pos / f.sector
	nextSec := (sec + 1) * f.sector
	switch {
	case sec == 0:
		return fsmap.Span{Structure: "boot sector"}, -1, nextSec
	case sec < f.reserved:
		name := "reserved sectors"
		switch {
		case f.fsInfo > 0 && sec == f.fsInfo:
			name = "FSInfo sector"
		case f.backupBoot > 0 && sec == f.backupBoot:
			name = "backup boot sector"
		case f.backupBoot > 0 && f.fsInfo > 0 && sec == f.backupBoot+f.fsInfo:
			name = "backup FSInfo sector"
		}
		return fsmap.Span{Structure: name}, -1, nextSec
	case sec < f.rootSector:
		k := (sec - f.reserved) / f.fatSectors
		return fsmap.Span{Structure: fmt.Sprintf("FAT %d", k+1)}, -1, (f.reserved + (k+1)*f.fatSectors) * f.sector
	case sec < f.dataSector:
		return fsmap.Span{Structure: "root directory", Paths: []string{"/"}}, -1, f.dataSector * f.sector
	}
	c := (pos-f.dataSector*f.sector)/f.clusterSize + 2
	if c >= f.clusters+2 {
		return fsmap.Span{Structure: "past the last cluster"}, -1, f.size
	}
	cend := f.dataSector*f.sector + (c-1)*f.clusterSize
	i := sort.Search(len(f.owners), func(i int) bool { return f.owners[i].start+f.owners[i].n > c })
	if i < len(f.owners) && f.owners[i].start <= c {
		o := f.owners[i]
		s := fsmap.Span{Structure: "file data", Paths: []string{f.names[o.id]}}
		if o.dir {
			s.Structure = "directory"
		}
		return s, o.id, cend + (o.start+o.n-1-c)*f.clusterSize
	}
	// No directory or file holds c: the FAT says what it is, and the clusters up to
	// the next owned one that it says the same of go with it.
	limit := f.clusters + 2
	if i < len(f.owners) {
		limit = f.owners[i].start
	}
	name, e := fsmap.Run(c, limit, f.unowned)
	return fsmap.Span{Structure: name}, -1, cend + (e-1-c)*f.clusterSize
}

// unowned names cluster c, which no directory or file holds, by its FAT entry.
func (f *FS) unowned(c int64) string {
	switch v := f.entry(c); {
	case v == 0:
		return "free clusters"
	case v == f.bad():
		return "bad clusters"
	}
	return "allocated, owner unknown"
}

// entry is the FAT's entry for cluster c: the next cluster of its chain, 0 (free),
// bad() or an end-of-chain mark (at least eoc()). A cluster the FAT cannot hold
// reads as bad.
func (f *FS) entry(c int64) int64 {
	switch f.bits {
	case 12:
		at := c + c/2
		if c < 0 || at+2 > int64(len(f.fat)) {
			return f.bad()
		}
		v := int64(le.Uint16(f.fat[at:]))
		if c%2 == 1 {
			return v >> 4
		}
		return v & 0xfff
	case 16:
		if c < 0 || 2*c+2 > int64(len(f.fat)) {
			return f.bad()
		}
		return int64(le.Uint16(f.fat[2*c:]))
	}
	if c < 0 || 4*c+4 > int64(len(f.fat)) {
		return f.bad()
	}
	return int64(le.Uint32(f.fat[4*c:]) & 0x0fffffff)
}

// bad is the FAT entry of a bad cluster.
func (f *FS) bad() int64 {
	switch f.bits {
	case 12:
		return 0xff7
	case 16:
		return 0xfff7
	}
	return 0x0ffffff7
}

// valid reports whether c is a data cluster.
func (f *FS) valid(c int64) bool { return c >= 2 && c < f.clusters+2 }

// addRun records that cluster c belongs to owner id, extending its last run.
func (f *FS) addRun(c int64, id int, dir bool) {
	if k := len(f.owners) - 1; k >= 0 && f.owners[k].id == id && f.owners[k].start+f.owners[k].n == c {
		f.owners[k].n++
		return
	}
	f.owners = append(f.owners, owner{start: c, n: 1, id: id, dir: dir})
}

// sortRuns orders the runs by their first cluster, for Locate's search.
func (f *FS) sortRuns() {
	slices.SortFunc(f.owners, func(a, b owner) int { return cmp.Compare(a.start, b.start) })
}
