// Package diff explains how two disk snapshots differ, at the three levels vmb
// diff has (DESIGN.md, "Reproducibility"):
//
//  1. chunks: the byte ranges whose chunks differ, from the two manifests alone
//     (digests: no chunk is read);
//  2. structure: those ranges narrowed to the bytes that differ, read from the
//     cache in place (cas.SnapshotReader), and named: the partition (or the
//     partition table, or unpartitioned space) each lies in, the filesystem there
//     (by its magic, as blkid names it), and for ext2/3/4 the structure (superblock,
//     group descriptors, bitmaps, inode table, journal, directory, file data, free
//     blocks) with its inodes and their paths, for FAT12/16/32 (vfat) the
//     structure (boot sector, FSInfo, reserved sectors, FAT 1 and 2, root
//     directory, directory, file data, free clusters) with its path, for exFAT
//     the structure (boot region and its backup sector by sector, FAT, allocation
//     bitmap, up-case table, root directory, directory, file data, free clusters)
//     with its path, for NTFS the structure (boot sector and its backup, MFT
//     record with its number and path, MFT mirror and bitmap, the system files'
//     data by name, index blocks, file data, free clusters) with its path, for
//     UDF the structure (volume recognition sequence, anchors, main and reserve
//     volume descriptor sequences, integrity descriptor, space bitmap, file set
//     descriptor, file entry, directory, file data, free blocks) with its path,
//     for XFS the structure (superblock and its secondary copies, AGF, AGI, AGFL,
//     free-space, inode, rmap and refcount btrees, inode chunk, directory, file
//     data, extent btree, log, free space) with its inodes and paths, for btrfs
//     the superblock and mirrors, the tree a node belongs to (root, chunk, extent,
//     fs, checksum, free space, device, log …, fs tree leaves with their inodes),
//     file data with its inode and path, a chunk's unused space by type, or space
//     outside every chunk (internal/fsmap);
//  3. files: for each filesystem whose files it can read (a fileTree: ext2/3/4,
//     FAT12/16/32, exFAT), in both snapshots, that holds a differing range, the paths
//     added, removed or changed, and how: content (a unified diff for small text
//     files), and the fields the filesystem records: mode, owner, DOS
//     attributes, times, xattrs, symlink target, file type, hard-link count
//     (files.go).
//
// It is a package of its own, not part of cas, because cas imports nothing of
// vmb's while naming structures needs imagefmt's partition tables and fsmap's
// filesystem readers; vmb diff wires it, and vmb check will report with it.
package diff

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/internal/fsmap"
	"vmb.dev/vmb/internal/fsmap/btrfs"
	"vmb.dev/vmb/internal/fsmap/exfat"
	"vmb.dev/vmb/internal/fsmap/ext"
	"vmb.dev/vmb/internal/fsmap/fat"
	"vmb.dev/vmb/internal/fsmap/ntfs"
	"vmb.dev/vmb/internal/fsmap/udf"
	"vmb.dev/vmb/internal/fsmap/xfs"
	"vmb.dev/vmb/vmexec/imagefmt"
)

// Options tunes Snapshots.
type Options struct {
	// Level is where to stop: 1 (Ranges are the differing chunks, unnamed), 2
	// (ranges named), or 3 (and files compared), the default.
	Level int
}

// Report is how two snapshots differ.
type Report struct {
	A         cas.Digest `json:"a"`
	B         cas.Digest `json:"b"`
	SizeA     int64      `json:"size_a"`
	SizeB     int64      `json:"size_b"`
	ChunkSize int64      `json:"chunk_size"` // B's
	Chunks    []Extent   `json:"chunks"`     // level 1: the differing chunks, adjacent ones merged
	Ranges    []Range    `json:"ranges"`     // level 2: the bytes that differ, named
	Bytes     int64      `json:"bytes"`      // how many bytes the ranges cover
	// Level 3: the filesystems the ranges lie in whose files it reads (ext2/3/4,
	// FAT, exFAT), and their files that differ.
	Filesystems []Filesystem `json:"filesystems,omitempty"`
}

// Extent is a byte range of a disk.
type Extent struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// Range is a byte range of the disk that differs, and what it holds in B (and in
// A, where that is something else).
type Range struct {
	Off       int64    `json:"off"`
	Len       int64    `json:"len"`
	Partition string   `json:"partition,omitempty"`   // "NAME:N", or "N" for a partition without a name
	FS        string   `json:"fs,omitempty"`          // ext4, xfs, …
	FSOff     int64    `json:"fs_off,omitempty"`      // Off within the filesystem
	Structure string   `json:"structure,omitempty"`   // "inode table", "file data", "GPT header", "unpartitioned space", …
	Inodes    []uint64 `json:"inodes,omitempty"`      // the inodes it holds or belongs to
	Paths     []string `json:"paths,omitempty"`       // their paths
	InA       string   `json:"structure_a,omitempty"` // what A holds there, if it is not the same
}

// Identical reports whether the two snapshots hold the same disk.
func (r *Report) Identical() bool { return r.SizeA == r.SizeB && len(r.Chunks) == 0 }

// Snapshots compares snapshots a and b of store s.
func Snapshots(ctx context.Context, s *cas.Store, a, b cas.Digest, opt Options) (*Report, error) {
	ma, err := s.Manifest(a)
	if err != nil {
		return nil, err
	}
	mb, err := s.Manifest(b)
	if err != nil {
		return nil, err
	}
	rep := &Report{A: a, B: b, SizeA: ma.Size, SizeB: mb.Size, ChunkSize: mb.ChunkSize, Chunks: []Extent{}, Ranges: []Range{}}
	rep.Chunks = chunkDiff(ma, mb)
	if opt.Level == 1 {
		for _, c := range rep.Chunks {
			rep.Ranges = append(rep.Ranges, Range{Off: c.Off, Len: c.Len})
			rep.Bytes += c.Len
		}
		return rep, nil
	}
	ra, rb := s.NewSnapshotReader(ma), s.NewSnapshotReader(mb)
	exact, err := narrow(ctx, ra, rb, rep.Chunks)
	if err != nil {
		return nil, err
	}
	da, db := newDisk(ra, ma.Size), newDisk(rb, mb.Size)
	touched := map[int64]named{} // by filesystem start: the inodes and paths the ranges name
	touch := func(r Range) {
		if r.FS == "" {
			return
		}
		start := r.Off - r.FSOff
		t, ok := touched[start]
		if !ok {
			t = named{ids: map[uint64]bool{}, paths: map[string]bool{}}
			touched[start] = t
		}
		for _, ino := range r.Inodes {
			t.ids[ino] = true
		}
		for _, p := range r.Paths {
			t.paths[p] = true
		}
	}
	for _, e := range exact {
		rs, err := db.name(e)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			as, err := da.name(Extent{r.Off, r.Len})
			if err == nil {
				for _, x := range as {
					touch(x)
				}
			}
			touch(r)
			if err == nil && len(as) == 1 && label(as[0]) != label(r) {
				r.InA = as[0].Structure
				if as[0].Partition != r.Partition || as[0].FS != r.FS {
					r.InA = strings.TrimSpace(as[0].Partition + " " + as[0].FS + " " + as[0].Structure)
				}
				if len(as[0].Inodes) == 0 && len(as[0].Paths) > 0 { // FAT: no inodes to tell owners apart
					r.InA += " (" + strings.Join(as[0].Paths, ", ") + ")"
				}
			}
			rep.Ranges = append(rep.Ranges, r)
			rep.Bytes += r.Len
		}
	}
	if opt.Level == 2 {
		return rep, nil
	}
	starts := make([]int64, 0, len(touched))
	for start := range touched {
		starts = append(starts, start)
	}
	sort.Slice(starts, func(i, j int) bool { return starts[i] < starts[j] })
	for _, start := range starts {
		fa, fb := da.fs[start], db.fs[start]
		if fb == nil || fb.files == nil || fa == nil || fa.files == nil || fa.typ != fb.typ {
			continue // no filesystem whose files level 3 reads, or not the same on both sides
		}
		fs := Filesystem{Partition: fb.part, FS: fb.typ}
		files, err := compareFiles(ctx, fa.files, fb.files, touched[start])
		switch {
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			fs.Error = err.Error()
		default:
			fs.Files = files
		}
		rep.Filesystems = append(rep.Filesystems, fs)
	}
	return rep, nil
}

// label is what a range holds, in a form two ranges can be compared by.
// Where there are no inodes (FAT), the paths tell owners apart; ext's paths follow
// from its inodes.
func label(r Range) string {
	if len(r.Inodes) == 0 {
		return fmt.Sprintf("%s %s %s %q", r.Partition, r.FS, r.Structure, r.Paths)
	}
	return fmt.Sprintf("%s %s %s %v", r.Partition, r.FS, r.Structure, r.Inodes)
}

// chunkDiff lists the ranges whose chunks differ between a and b, adjacent ones
// merged. A range beyond the smaller disk's end differs. With different chunk
// sizes, every chunk that holds data in either is a candidate.
func chunkDiff(a, b *cas.Manifest) []Extent {
	size := max(a.Size, b.Size)
	var out []Extent
	add := func(off, n int64) {
		n = min(n, size-off)
		if n <= 0 {
			return
		}
		if k := len(out) - 1; k >= 0 && out[k].Off+out[k].Len >= off {
			out[k].Len = max(out[k].Len, off+n-out[k].Off)
			return
		}
		out = append(out, Extent{off, n})
	}
	if a.ChunkSize != b.ChunkSize {
		var all []Extent
		for _, m := range []*cas.Manifest{a, b} {
			for _, c := range m.Chunks {
				all = append(all, Extent{c.Offset, m.ChunkSize})
			}
		}
		sort.Slice(all, func(i, j int) bool { return all[i].Off < all[j].Off })
		for _, e := range all {
			add(e.Off, e.Len)
		}
	} else {
		cs := a.ChunkSize
		i, j := 0, 0
		for i < len(a.Chunks) || j < len(b.Chunks) {
			switch {
			case j == len(b.Chunks) || (i < len(a.Chunks) && a.Chunks[i].Offset < b.Chunks[j].Offset):
				add(a.Chunks[i].Offset, cs)
				i++
			case i == len(a.Chunks) || b.Chunks[j].Offset < a.Chunks[i].Offset:
				add(b.Chunks[j].Offset, cs)
				j++
			default:
				if a.Chunks[i].Digest != b.Chunks[j].Digest {
					add(a.Chunks[i].Offset, cs)
				}
				i++
				j++
			}
		}
	}
	if a.Size != b.Size { // the smaller disk ends where the other goes on
		lo := min(a.Size, b.Size)
		var merged []Extent
		for _, e := range out {
			if e.Off+e.Len <= lo {
				merged = append(merged, e)
			} else if e.Off < lo {
				merged = append(merged, Extent{e.Off, lo - e.Off})
			}
		}
		out = merged
		add(lo, size-lo)
		sort.Slice(out, func(i, j int) bool { return out[i].Off < out[j].Off })
	}
	return out
}

// gap is how many equal bytes may lie between two differing ones and still be
// reported in one range: a few equal bytes inside a changed field or record.
const gap = 32

// narrow reads the ranges from both disks and returns the byte ranges that
// actually differ, runs closer than gap merged. A range beyond the smaller disk
// is kept whole.
func narrow(ctx context.Context, a, b *cas.SnapshotReader, ranges []Extent) ([]Extent, error) {
	lo := min(a.Size(), b.Size())
	var out []Extent
	add := func(off, n int64) {
		if k := len(out) - 1; k >= 0 && out[k].Off+out[k].Len+gap >= off {
			out[k].Len = off + n - out[k].Off
			return
		}
		out = append(out, Extent{off, n})
	}
	const step = 1 << 20
	ba, bb := make([]byte, step), make([]byte, step)
	for _, r := range ranges {
		for off := r.Off; off < min(r.Off+r.Len, lo); off += step {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			n := min(step, r.Off+r.Len-off, lo-off)
			if _, err := a.ReadAt(ba[:n], off); err != nil && err != io.EOF {
				return nil, err
			}
			if _, err := b.ReadAt(bb[:n], off); err != nil && err != io.EOF {
				return nil, err
			}
			for i := int64(0); i < n; {
				if ba[i] == bb[i] {
					i++
					continue
				}
				j := i + 1
				for j < n && ba[j] != bb[j] {
					j++
				}
				add(off+i, j-i)
				i = j
			}
		}
		if r.Off+r.Len > lo {
			start := max(r.Off, lo)
			out = append(out, Extent{start, r.Off + r.Len - start})
		}
	}
	return out, nil
}

// disk names the places of one disk: its partition table and filesystems, read
// once.
type disk struct {
	r     io.ReaderAt
	size  int64
	table *imagefmt.Table       // nil: no partition table
	fs    map[int64]*filesystem // by start offset
}

type filesystem struct {
	typ    string
	part   string   // the partition's name, as Range.Partition
	mapper mapper   // nil for a filesystem without one
	files  fileTree // the mapper, where level 3 can compare its files
}

// mapper names the structures of a filesystem's byte ranges (internal/fsmap).
type mapper interface {
	Locate(off, n int64) ([]fsmap.Span, error)
}

// mappers open the filesystems by the type fsmap.Detect names. Those that are
// fileTrees too have their files compared at level 3.
var mappers = map[string]func(io.ReaderAt, int64) (mapper, error){
	"ext2":  func(r io.ReaderAt, n int64) (mapper, error) { return ext.Open(r, n) },
	"ext3":  func(r io.ReaderAt, n int64) (mapper, error) { return ext.Open(r, n) },
	"ext4":  func(r io.ReaderAt, n int64) (mapper, error) { return ext.Open(r, n) },
	"vfat":  func(r io.ReaderAt, n int64) (mapper, error) { return fat.Open(r, n) },
	"exfat": func(r io.ReaderAt, n int64) (mapper, error) { return exfat.Open(r, n) },
	"ntfs":  func(r io.ReaderAt, n int64) (mapper, error) { return ntfs.Open(r, n) },
	"udf":   func(r io.ReaderAt, n int64) (mapper, error) { return udf.Open(r, n) },
	"xfs":   func(r io.ReaderAt, n int64) (mapper, error) { return xfs.Open(r, n) },
	"btrfs": func(r io.ReaderAt, n int64) (mapper, error) { return btrfs.Open(r, n) },
}

func newDisk(r io.ReaderAt, size int64) *disk {
	d := &disk{r: r, size: size, fs: map[int64]*filesystem{}}
	if t, err := imagefmt.Partitions(r, size); err == nil {
		d.table = t
	}
	return d
}

// name splits e into ranges by what holds them.
func (d *disk) name(e Extent) ([]Range, error) {
	if e.Off >= d.size {
		return []Range{{Off: e.Off, Len: e.Len, Structure: "beyond the end of the smaller disk"}}, nil
	}
	end := min(e.Off+e.Len, d.size)
	var tail []Range
	if e.Off+e.Len > d.size {
		tail = []Range{{Off: d.size, Len: e.Off + e.Len - d.size, Structure: "beyond the end of the smaller disk"}}
	}
	if d.table == nil {
		rs, err := d.inFS(e.Off, end-e.Off, 0, d.size, "")
		return append(rs, tail...), err
	}
	// Cut points: where the table's regions and the partitions begin and end.
	type place struct {
		imagefmt.Extent
		meta string
		part *imagefmt.Partition
	}
	var places []place
	for _, m := range d.table.Meta {
		places = append(places, place{Extent: m.Extent, meta: m.Name})
	}
	for i := range d.table.Partitions {
		p := &d.table.Partitions[i]
		places = append(places, place{Extent: p.Extent, part: p})
	}
	var out []Range
	for pos := e.Off; pos < end; {
		next := end
		var at *place
		for i := range places {
			p := &places[i]
			if pos >= p.Off && pos < p.Off+p.Len {
				at = p
				next = min(next, p.Off+p.Len)
				break
			}
			if p.Off > pos {
				next = min(next, p.Off)
			}
		}
		switch {
		case at == nil:
			out = append(out, Range{Off: pos, Len: next - pos, Structure: "unpartitioned space"})
		case at.part == nil:
			out = append(out, Range{Off: pos, Len: next - pos, Structure: "partition table: " + at.meta})
		default:
			name := fmt.Sprint(at.part.Number)
			if at.part.Name != "" {
				name = at.part.Name + ":" + name
			}
			rs, err := d.inFS(pos, next-pos, at.part.Off, at.part.Len, name)
			if err != nil {
				return nil, err
			}
			out = append(out, rs...)
		}
		pos = next
	}
	return append(out, tail...), nil
}

// inFS names [off, off+n) of the disk, which lies in the partition (or whole
// disk) of size bytes at start.
func (d *disk) inFS(off, n, start, size int64, part string) ([]Range, error) {
	f, ok := d.fs[start]
	if !ok {
		sr := io.NewSectionReader(d.r, start, size)
		f = &filesystem{typ: fsmap.Detect(sr, size), part: part}
		// A layout a mapper cannot open is named by its type only.
		if open := mappers[f.typ]; open != nil {
			if m, err := open(sr, size); err == nil {
				f.mapper = m
				f.files, _ = m.(fileTree)
			}
		}
		d.fs[start] = f
	}
	r := Range{Off: off, Len: n, Partition: part, FS: f.typ, FSOff: off - start}
	if f.typ == "" {
		r.Structure = "no filesystem known"
		if part == "" {
			r.Structure = "no partition table or filesystem known"
		}
		return []Range{r}, nil
	}
	if f.mapper == nil {
		return []Range{r}, nil
	}
	spans, err := f.mapper.Locate(off-start, n)
	if err != nil {
		return nil, err
	}
	var out []Range
	for _, s := range spans {
		out = append(out, Range{Off: start + s.Off, Len: s.Len, Partition: part, FS: f.typ, FSOff: s.Off,
			Structure: s.Structure, Inodes: s.Inodes, Paths: s.Paths})
	}
	return out, nil
}
