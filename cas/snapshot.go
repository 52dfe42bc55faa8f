package cas

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"sync/atomic"

	"golang.org/x/sys/unix"
)

// DefaultChunkSize is the chunk size of new snapshots. It was chosen by measurement
// (bench/chunksize): see BUILD.md, "Disk snapshots".
const DefaultChunkSize = 256 << 10

// Chunk sizes must be a power of two in this range.
const (
	minChunkSize = 4 << 10
	maxChunkSize = 64 << 20
)

// Manifest describes a disk snapshot: the disk's size and, for every chunk that is
// not all zeros, its offset and the digest of its content. Chunks not listed are zero.
// Every chunk is ChunkSize bytes long except the last one of the disk, which ends at
// Size.
type Manifest struct {
	Size      int64
	ChunkSize int64
	Chunks    []Chunk // sorted by Offset, no duplicates
}

// Chunk is one stored chunk of a disk.
type Chunk struct {
	Offset int64
	Digest Digest
}

// Len returns the length of the chunk at off in a disk described by m.
func (m *Manifest) chunkLen(off int64) int64 { return min(m.ChunkSize, m.Size-off) }

const manifestMagic = "vmb-snapshot 1"

// Encode returns the canonical text form of m, whose digest names the snapshot:
//
//	vmb-snapshot 1
//	size <bytes>
//	chunk-size <bytes>
//	<offset> <digest>     one line per non-zero chunk, in offset order
func (m *Manifest) Encode() []byte {
	var b bytes.Buffer
	b.Grow(64 + len(m.Chunks)*(2*Size+14))
	fmt.Fprintf(&b, "%s\nsize %d\nchunk-size %d\n", manifestMagic, m.Size, m.ChunkSize)
	var line []byte
	for _, c := range m.Chunks {
		line = strconv.AppendInt(line[:0], c.Offset, 10)
		line = append(line, ' ')
		line = hexAppend(line, c.Digest)
		line = append(line, '\n')
		b.Write(line)
	}
	return b.Bytes()
}

func hexAppend(dst []byte, d Digest) []byte {
	const hexdigits = "0123456789abcdef"
	for _, c := range d {
		dst = append(dst, hexdigits[c>>4], hexdigits[c&15])
	}
	return dst
}

// DecodeManifest parses the text form of a manifest and checks that it is well formed.
func DecodeManifest(b []byte) (*Manifest, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<16)
	line := 0
	next := func() (string, bool) {
		ok := sc.Scan()
		line++
		return sc.Text(), ok
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("manifest line %d: %s", line, fmt.Sprintf(format, args...))
	}
	if l, _ := next(); l != manifestMagic {
		return nil, bad("want %q, have %q", manifestMagic, l)
	}
	m := &Manifest{}
	for _, f := range []struct {
		name string
		v    *int64
	}{{"size", &m.Size}, {"chunk-size", &m.ChunkSize}} {
		l, _ := next()
		v, ok := strings.CutPrefix(l, f.name+" ")
		n, err := strconv.ParseInt(v, 10, 64)
		if !ok || err != nil || n < 0 {
			return nil, bad("want %q and a number, have %q", f.name, l)
		}
		*f.v = n
	}
	if err := checkChunkSize(m.ChunkSize); err != nil {
		return nil, bad("%v", err)
	}
	for {
		l, ok := next()
		if !ok {
			break
		}
		o, h, ok := strings.Cut(l, " ")
		off, err := strconv.ParseInt(o, 10, 64)
		if !ok || err != nil {
			return nil, bad("want \"<offset> <digest>\", have %q", l)
		}
		d, err := ParseDigest(h)
		if err != nil {
			return nil, bad("%v", err)
		}
		if off < 0 || off%m.ChunkSize != 0 || off >= m.Size {
			return nil, bad("chunk offset %d is not a multiple of %d inside the disk", off, m.ChunkSize)
		}
		if n := len(m.Chunks); n > 0 && off <= m.Chunks[n-1].Offset {
			return nil, bad("chunk offset %d is not after %d", off, m.Chunks[n-1].Offset)
		}
		m.Chunks = append(m.Chunks, Chunk{Offset: off, Digest: d})
	}
	if err := sc.Err(); err != nil {
		return nil, bad("%v", err)
	}
	return m, nil
}

func checkChunkSize(n int64) error {
	if n < minChunkSize || n > maxChunkSize || n&(n-1) != 0 {
		return fmt.Errorf("chunk size %d is not a power of two from %d to %d", n, minChunkSize, maxChunkSize)
	}
	return nil
}

// Manifest reads and verifies the manifest of snapshot d.
func (s *Store) Manifest(d Digest) (*Manifest, error) {
	b, err := s.Get(d)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.Short(), err)
	}
	m, err := DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %w", d.Short(), err)
	}
	return m, nil
}

// Extent is a byte range of a disk.
type Extent struct{ Off, Len int64 }

// IngestOptions tunes IngestDisk.
type IngestOptions struct {
	// ChunkSize of the new snapshot; 0 means DefaultChunkSize. With Base, it must
	// be Base's chunk size.
	ChunkSize int64
	// Base, if set, is the snapshot the disk was materialized from, and Changed
	// the byte ranges the job may have written (as a dirty bitmap or an overlay's
	// allocation map tells). Chunks outside Changed are taken from Base without
	// reading them, so ingest costs what the job wrote. A nil Changed with a Base
	// means every range may have changed.
	Base    *Manifest
	Changed []Extent
	// Workers is the number of chunks hashed and compressed at once; 0 means GOMAXPROCS.
	Workers int
	// DeferCompression stores new chunks uncompressed (as raw zstd frames), for
	// Compact to compress later, off the critical path of a build.
	DeferCompression bool
}

// IngestStats says what an ingest read and wrote.
type IngestStats struct {
	Size        int64 `json:"size"`         // disk size
	ReadBytes   int64 `json:"read_bytes"`   // bytes read from the disk (holes and unchanged ranges are not read)
	Chunks      int   `json:"chunks"`       // non-zero chunks in the snapshot
	NewChunks   int   `json:"new_chunks"`   // chunks that were not in the store
	NewBytes    int64 `json:"new_bytes"`    // their uncompressed size
	StoredBytes int64 `json:"stored_bytes"` // their stored size: what the store grew by
}

// IngestDisk stores the raw disk image at path as a snapshot and returns the digest of
// its manifest. All-zero chunks and holes are stored as nothing; chunks the store
// has are not written again, so re-ingesting an unchanged disk writes only nothing.
func (s *Store) IngestDisk(ctx context.Context, path string, opt IngestOptions) (Digest, IngestStats, error) {
	var st IngestStats
	fail := func(err error) (Digest, IngestStats, error) {
		return Digest{}, st, fmt.Errorf("ingest disk %s: %w", path, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	size := fi.Size()
	cs := opt.ChunkSize
	if cs == 0 {
		cs = DefaultChunkSize
		if opt.Base != nil {
			cs = opt.Base.ChunkSize
		}
	}
	if err := checkChunkSize(cs); err != nil {
		return fail(err)
	}
	if opt.Base != nil && opt.Base.ChunkSize != cs {
		return fail(fmt.Errorf("chunk size %d differs from the base snapshot's %d", cs, opt.Base.ChunkSize))
	}
	st.Size = size

	// Which chunks to read: those holding data, limited to Changed when a base
	// tells what the rest holds.
	var read []int64 // chunk offsets, ascending
	var kept []Chunk // chunks taken from the base
	if opt.Base != nil && opt.Changed != nil {
		changed := opt.Changed
		if b := opt.Base.Size; b != size {
			// The chunk where the old and the new size meet changed length: read it.
			edge := min(b, size) / cs * cs
			changed = append(changed[:len(changed):len(changed)], Extent{edge, cs})
		}
		dirty := chunksOf(changed, cs, size)
		kept = baseChunksOutside(opt.Base, dirty, size)
		// A changed chunk that is a hole now (the job discarded it) is zero
		// without a read. Only the changed chunks' extents are looked up: a disk
		// whose free blocks were discarded block by block has many.
		var data []Extent
		for _, c := range dirty {
			ext, err := dataIn(f, c, min(c+cs, size))
			if err != nil {
				return fail(err)
			}
			data = append(data, ext...)
		}
		read = intersectSorted(dirty, chunksOf(data, cs, size))
	} else {
		data, err := dataExtents(f, size)
		if err != nil {
			return fail(err)
		}
		read = chunksOf(data, cs, size)
	}

	digests := make([]Digest, len(read))
	nonzero := make([]bool, len(read))
	var readBytes, newChunks, newBytes, storedBytes atomic.Int64
	var seen sync.Map // digests this ingest has stored or found
	stage := &staging{s: s, raw: opt.DeferCompression}
	defer stage.abort()
	err = forEach(ctx, opt.Workers, len(read), func() func(int) error {
		buf := make([]byte, cs)
		zero := make([]byte, cs)
		return func(i int) error {
			off := read[i]
			b := buf[:min(cs, size-off)]
			if _, err := f.ReadAt(b, off); err != nil {
				return fmt.Errorf("read at %#x: %w", off, err)
			}
			readBytes.Add(int64(len(b)))
			if bytes.Equal(b, zero[:len(b)]) {
				return nil
			}
			d := Sum(b)
			digests[i], nonzero[i] = d, true
			if _, dup := seen.LoadOrStore(d, true); dup {
				return nil // the same content at another offset of this disk
			}
			wrote, stored, err := stage.put(d, b)
			if err != nil {
				return fmt.Errorf("chunk at %#x: %w", off, err)
			}
			if wrote {
				newChunks.Add(1)
				newBytes.Add(int64(len(b)))
				storedBytes.Add(stored)
			}
			return nil
		}
	})
	if err != nil {
		return fail(err)
	}
	if err := stage.commit(); err != nil {
		return fail(err)
	}

	m := &Manifest{Size: size, ChunkSize: cs, Chunks: kept}
	for i, off := range read {
		if nonzero[i] {
			m.Chunks = append(m.Chunks, Chunk{Offset: off, Digest: digests[i]})
		}
	}
	if kept != nil {
		sort.Slice(m.Chunks, func(i, j int) bool { return m.Chunks[i].Offset < m.Chunks[j].Offset })
	}
	st.ReadBytes, st.Chunks = readBytes.Load(), len(m.Chunks)
	st.NewChunks, st.NewBytes, st.StoredBytes = int(newChunks.Load()), newBytes.Load(), storedBytes.Load()
	d, err := s.PutBytes(m.Encode())
	if err != nil {
		return fail(err)
	}
	return d, st, nil
}

// staging collects the chunks an ingest writes. They are written to tmp/ unsynced,
// made durable together, and only then renamed to their names: a crash leaves no
// object that is not whole. Many chunks are made durable by one syncfs instead of
// one fsync each; a few, one fsync each, since syncfs flushes everything else
// written to the filesystem too: the raw disks a build VM just wrote, hundreds of
// MiB that are deleted unread (bench/written: 0.2 s of every job's store).
type staging struct {
	s     *Store
	raw   bool // write raw frames, compress later
	mu    sync.Mutex
	files []stagedFile
}

type stagedFile struct{ tmp, dst string }

// put stages b (hashing to d) unless the store has it, and reports whether it did and
// how many bytes it wrote.
func (g *staging) put(d Digest, b []byte) (bool, int64, error) {
	p := g.s.objectPath(d)
	if g.s.used(p) {
		return false, 0, nil
	}
	buf := encBufs.Get().(*[]byte)
	defer encBufs.Put(buf)
	if g.raw {
		*buf = appendRawFrame((*buf)[:0], b)
	} else {
		*buf = g.s.enc.EncodeAll(b, (*buf)[:0])
	}
	err := g.write(p, *buf)
	return err == nil, int64(len(*buf)), err
}

// write stages data to become the file at p.
func (g *staging) write(p string, data []byte) error {
	f, err := os.CreateTemp(filepath.Join(g.s.dir, tmpDir), "stage-*")
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.files = append(g.files, stagedFile{f.Name(), p})
	g.mu.Unlock()
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// commit makes the staged files durable and gives them their names.
func (g *staging) commit() error {
	if len(g.files) == 0 {
		return nil
	}
	if len(g.files) > fsyncEach {
		if err := syncfs(g.s.dir); err != nil {
			return err
		}
	} else {
		for _, sf := range g.files {
			if err := fsyncFile(sf.tmp); err != nil {
				return err
			}
		}
	}
	for i, sf := range g.files {
		err := os.Rename(sf.tmp, sf.dst)
		if errors.Is(err, fs.ErrNotExist) {
			if err = os.MkdirAll(filepath.Dir(sf.dst), 0o755); err == nil {
				err = os.Rename(sf.tmp, sf.dst)
			}
		}
		if err != nil {
			g.files = g.files[i:]
			return err
		}
	}
	g.files = nil
	return nil
}

// abort removes what was staged and not committed.
func (g *staging) abort() {
	for _, sf := range g.files {
		os.Remove(sf.tmp)
	}
	g.files = nil
}

// fsyncEach is how many staged files commit syncs one by one; more, and it
// flushes the whole filesystem.
const fsyncEach = 64

// fsyncFile flushes the file at p to stable storage.
func fsyncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncfs flushes the filesystem holding dir to stable storage.
func syncfs(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// dataExtents lists the ranges of f that hold data, skipping holes.
func dataExtents(f *os.File, size int64) ([]Extent, error) { return dataIn(f, 0, size) }

// dataIn returns the extents of f between from and to that hold data (SEEK_DATA),
// cut to that range.
func dataIn(f *os.File, from, to int64) ([]Extent, error) {
	var ext []Extent
	fd := int(f.Fd())
	for pos := from; pos < to; {
		start, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after pos
		}
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			return []Extent{{from, to - from}}, nil // no hole support: all of it is data
		}
		if err != nil {
			return nil, fmt.Errorf("seek data: %w", err)
		}
		if start >= to {
			break
		}
		end, err := unix.Seek(fd, start, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole: %w", err)
		}
		end = min(end, to)
		ext = append(ext, Extent{start, end - start})
		pos = end
	}
	return ext, nil
}

// chunksOf returns the offsets of the chunks that the extents touch, ascending.
func chunksOf(ext []Extent, cs, size int64) []int64 {
	ext = append([]Extent(nil), ext...)
	sort.Slice(ext, func(i, j int) bool { return ext[i].Off < ext[j].Off })
	var out []int64
	next := int64(0) // first chunk offset not yet emitted
	for _, e := range ext {
		if e.Len <= 0 {
			continue
		}
		end := min(e.Off+e.Len, size)
		for c := max(e.Off/cs*cs, next); c < end; c += cs {
			out = append(out, c)
			next = c + cs
		}
	}
	return out
}

// intersectSorted returns the offsets in both a and b (each ascending).
func intersectSorted(a, b []int64) []int64 {
	var out []int64
	for i, j := 0, 0; i < len(a) && j < len(b); {
		switch {
		case a[i] < b[j]:
			i++
		case a[i] > b[j]:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
}

// baseChunksOutside returns the chunks of base, within size, whose offsets are not in
// dirty (sorted).
func baseChunksOutside(base *Manifest, dirty []int64, size int64) []Chunk {
	kept := []Chunk{}
	j := 0
	for _, c := range base.Chunks {
		if c.Offset >= size || c.Offset+base.chunkLen(c.Offset) > size {
			continue // the disk shrank; a chunk cut short must be read, and is in dirty if it changed
		}
		for j < len(dirty) && dirty[j] < c.Offset {
			j++
		}
		if j < len(dirty) && dirty[j] == c.Offset {
			continue
		}
		kept = append(kept, c)
	}
	return kept
}

// Materialize writes snapshot d to path as a sparse raw disk image, byte-identical to
// the disk that was ingested. Zero chunks are left as holes. The file appears at path
// only once it is complete.
func (s *Store) Materialize(ctx context.Context, d Digest, path string) error {
	m, err := s.Manifest(d)
	if err != nil {
		return fmt.Errorf("materialize %s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("materialize %s: %w", path, err)
	}
	ok := false
	defer func() {
		tmp.Close()
		if !ok {
			os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Truncate(m.Size); err != nil {
		return fmt.Errorf("materialize %s: %w", path, err)
	}
	if err := s.writeChunks(ctx, tmp, m, m.Chunks); err != nil {
		return fmt.Errorf("materialize snapshot %s to %s: %w", d.Short(), path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("materialize %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("materialize %s: %w", path, err)
	}
	ok = true
	return nil
}

// Update turns the disk image at path, which holds snapshot from, into snapshot to,
// writing only the chunks that differ and punching holes where to has zeros. It is
// how a job's disk is brought to its next state without rewriting all of it.
func (s *Store) Update(ctx context.Context, from, to Digest, path string) error {
	fm, err := s.Manifest(from)
	if err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	tm, err := s.Manifest(to)
	if err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	if fm.ChunkSize != tm.ChunkSize {
		os.Remove(path)
		return s.Materialize(ctx, to, path)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(tm.Size); err != nil {
		return fmt.Errorf("update %s: %w", path, err)
	}
	old := make(map[int64]Digest, len(fm.Chunks))
	for _, c := range fm.Chunks {
		if c.Offset+fm.chunkLen(c.Offset) <= tm.Size { // a chunk cut by a shrink is rewritten
			old[c.Offset] = c.Digest
		}
	}
	var write []Chunk
	for _, c := range tm.Chunks {
		if d, ok := old[c.Offset]; ok && d == c.Digest && fm.chunkLen(c.Offset) == tm.chunkLen(c.Offset) {
			delete(old, c.Offset)
			continue
		}
		delete(old, c.Offset)
		write = append(write, c)
	}
	for off := range old { // data in from, zeros in to
		if err := punch(f, off, tm.chunkLen(off)); err != nil {
			return fmt.Errorf("update %s: %w", path, err)
		}
	}
	if err := s.writeChunks(ctx, f, tm, write); err != nil {
		return fmt.Errorf("update %s to snapshot %s: %w", path, to.Short(), err)
	}
	return nil
}

// punch zeroes [off, off+n) of f, deallocating it where the filesystem can.
func punch(f *os.File, off, n int64) error {
	err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	_, err = f.WriteAt(make([]byte, n), off)
	return err
}

// writeChunks writes the given chunks of m into f, in parallel.
func (s *Store) writeChunks(ctx context.Context, f *os.File, m *Manifest, chunks []Chunk) error {
	return forEach(ctx, 0, len(chunks), func() func(int) error {
		var raw, dst []byte
		return func(i int) error {
			c := chunks[i]
			var err error
			raw, dst, err = s.getInto(c.Digest, raw, dst)
			if errors.Is(err, ErrNotFound) && s.fetch != nil {
				if err = s.fetch(ctx, c.Digest); err == nil {
					raw, dst, err = s.getInto(c.Digest, raw, dst)
				}
			}
			if err != nil {
				return fmt.Errorf("chunk at %#x: %w", c.Offset, err)
			}
			if want := m.chunkLen(c.Offset); int64(len(dst)) != want {
				return fmt.Errorf("chunk at %#x: blob %s holds %d bytes, the manifest wants %d", c.Offset, c.Digest, len(dst), want)
			}
			if _, err := f.WriteAt(dst, c.Offset); err != nil {
				return fmt.Errorf("chunk at %#x: %w", c.Offset, err)
			}
			return nil
		}
	})
}
