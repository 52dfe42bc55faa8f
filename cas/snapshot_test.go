package cas

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// sparseImage writes a sparse disk image of the given size at path: random data,
// explicit zeros and holes in random places, aligned or not. It returns its bytes.
func sparseImage(t testing.TB, r *rand.Rand, path string, size int64, writes int) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	for range writes {
		n := 1 + r.Int64N(min(size, 3*DefaultChunkSize))
		off := r.Int64N(size - n + 1)
		if r.IntN(3) == 0 {
			off = off / 4096 * 4096
		}
		var b []byte
		switch r.IntN(4) {
		case 0:
			b = make([]byte, n) // allocated zeros
		case 1:
			b = bytes.Repeat([]byte{byte(r.IntN(256))}, int(n)) // compressible, repeating
		default:
			b = randBytes(r, int(n))
		}
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatal(err)
		}
	}
	all, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func roundTrip(t testing.TB, s *Store, path string, want []byte, opt IngestOptions) (Digest, IngestStats) {
	t.Helper()
	d, st, err := s.IngestDisk(t.Context(), path, opt)
	if err != nil {
		t.Fatal(err)
	}
	out := path + ".out"
	if err := s.Materialize(t.Context(), d, out); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("materialized image differs from the ingested one (%d vs %d bytes)", len(got), len(want))
	}
	m, err := s.Manifest(d)
	if err != nil {
		t.Fatal(err)
	}
	// Zero chunks come back as holes: the file allocates no more than its chunks.
	var fi syscall.Stat_t
	syscall.Stat(out, &fi)
	if alloc, limit := fi.Blocks*512, int64(len(m.Chunks))*m.ChunkSize+64<<10; alloc > limit {
		t.Fatalf("materialized file allocates %d bytes, more than its %d chunks (%d)", alloc, len(m.Chunks), limit)
	}
	os.Remove(out)
	return d, st
}

func TestSnapshotRoundTrip(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(5, 6))
	dir := t.TempDir()
	for i, size := range []int64{0, 1, 4095, DefaultChunkSize, DefaultChunkSize + 1, 7 << 20, 64<<20 + 12345} {
		for _, cs := range []int64{0, 64 << 10, 1 << 20} {
			p := filepath.Join(dir, "disk")
			os.Remove(p)
			want := []byte{}
			if size > 0 {
				want = sparseImage(t, r, p, size, 1+i*3)
			} else {
				os.WriteFile(p, nil, 0o644)
			}
			roundTrip(t, s, p, want, IngestOptions{ChunkSize: cs})
		}
	}
}

// A hole and an allocated range of zeros ingest to the same snapshot: both are zero.
func TestZeroChunksStoreNothing(t *testing.T) {
	s := newStore(t)
	dir := t.TempDir()
	hole := filepath.Join(dir, "hole")
	zeros := filepath.Join(dir, "zeros")
	f, _ := os.Create(hole)
	f.Truncate(10 << 20)
	f.Close()
	os.WriteFile(zeros, make([]byte, 10<<20), 0o644)
	d1, st1, err := s.IngestDisk(t.Context(), hole, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	d2, st2, err := s.IngestDisk(t.Context(), zeros, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Fatalf("a hole and written zeros ingest differently: %s vs %s", d1, d2)
	}
	if st1.ReadBytes != 0 {
		t.Errorf("ingest of a hole read %d bytes; holes should be skipped", st1.ReadBytes)
	}
	if st1.Chunks != 0 || st2.Chunks != 0 || st2.NewChunks != 0 {
		t.Errorf("zero disks stored chunks: %+v %+v", st1, st2)
	}
}

// A second image differing in a few places stores only the chunks that changed, and
// re-ingesting an unchanged image writes nothing.
func TestIngestDedup(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(7, 8))
	p := filepath.Join(t.TempDir(), "disk")
	const size = 32 << 20
	want := sparseImage(t, r, p, size, 40)
	d1, st1 := roundTrip(t, s, p, want, IngestOptions{})
	m1, _ := s.Manifest(d1)
	distinct := map[Digest]bool{}
	for _, c := range m1.Chunks {
		distinct[c.Digest] = true
	}
	if st1.NewChunks != len(distinct) {
		t.Fatalf("first ingest into an empty store: %d new chunks, want %d (distinct of %d)", st1.NewChunks, len(distinct), st1.Chunks)
	}

	files := countFiles(t, s.Dir())
	d2, st2, err := s.IngestDisk(t.Context(), p, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d2 != d1 || st2.NewChunks != 0 || st2.StoredBytes != 0 || countFiles(t, s.Dir()) != files {
		t.Fatalf("re-ingest of an unchanged image: digest %s (was %s), %+v, files %d -> %d",
			d2, d1, st2, files, countFiles(t, s.Dir()))
	}

	// Change 3 places, each inside one chunk, one of them in a hole.
	f, _ := os.OpenFile(p, os.O_RDWR, 0)
	for _, off := range []int64{0, 5*DefaultChunkSize + 100, size - 10} {
		f.WriteAt([]byte("changed"), off)
	}
	f.Close()
	want, _ = os.ReadFile(p)
	_, st3 := roundTrip(t, s, p, want, IngestOptions{})
	if st3.NewChunks != 3 {
		t.Fatalf("after changing 3 chunks, ingest wrote %d new chunks, want 3", st3.NewChunks)
	}
}

// Ingest told which ranges changed since a base reads only those and gives the same
// snapshot as a full ingest, whether the disk grew, shrank or kept its size.
func TestIngestChangedRanges(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, resize := range []int64{0, +3<<20 + 17, -(5<<20 + 3)} {
		s := newStore(t)
		p := filepath.Join(t.TempDir(), "disk")
		const size = 20 << 20
		sparseImage(t, r, p, size, 30)
		base, _, err := s.IngestDisk(t.Context(), p, IngestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bm, _ := s.Manifest(base)
		f, _ := os.OpenFile(p, os.O_RDWR, 0)
		changed := []Extent{{1 << 20, 5000}, {9<<20 + 1, 2 << 20}}
		for _, e := range changed {
			f.WriteAt(randBytes(r, int(e.Len)), e.Off)
		}
		// Four chunks of data discarded (a job's fstrim): changed, and holes
		// now, so zero without a read.
		f.WriteAt(randBytes(r, 4*DefaultChunkSize), 14<<20)
		punch := Extent{14 << 20, 4 * DefaultChunkSize}
		if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, punch.Off, punch.Len); err != nil {
			t.Fatal(err)
		}
		changed = append(changed, punch)
		if resize != 0 {
			f.Truncate(size + resize)
			changed = append(changed, Extent{min(size, size+resize), max(resize, 0)})
		}
		f.Close()
		want, _ := os.ReadFile(p)
		full, _, err := s.IngestDisk(t.Context(), p, IngestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		inc, st := roundTrip(t, s, p, want, IngestOptions{Base: bm, Changed: changed})
		if inc != full {
			fm, _ := s.Manifest(full)
			im, _ := s.Manifest(inc)
			t.Fatalf("resize %d: incremental ingest differs from full:\n%s", resize, cmp.Diff(fm, im))
		}
		// The 10 chunks written, and the one where the sizes meet.
		if limit := int64(11 * DefaultChunkSize); st.ReadBytes > limit {
			t.Errorf("resize %d: incremental ingest read %d bytes, want at most %d", resize, st.ReadBytes, limit)
		}
	}
}

func TestUpdate(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(11, 12))
	dir := t.TempDir()
	var snaps []Digest
	var contents [][]byte
	for i, size := range []int64{16 << 20, 16 << 20, 20<<20 + 5, 3 << 20} {
		p := filepath.Join(dir, "src")
		os.Remove(p)
		contents = append(contents, sparseImage(t, r, p, size, 5+i))
		d, _, err := s.IngestDisk(t.Context(), p, IngestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, d)
	}
	work := filepath.Join(dir, "work")
	if err := s.Materialize(t.Context(), snaps[0], work); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(snaps); i++ {
		if err := s.Update(t.Context(), snaps[i-1], snaps[i], work); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(work)
		if !bytes.Equal(got, contents[i]) {
			t.Fatalf("after update %d the disk differs from the snapshot", i)
		}
	}
}

// A manifest naming a chunk the store lacks, or a corrupt chunk, fails materialization
// with an error naming the chunk, and leaves no file behind.
func TestMaterializeBrokenChunk(t *testing.T) {
	for _, damage := range []string{"missing", "corrupt"} {
		t.Run(damage, func(t *testing.T) {
			s := newStore(t)
			r := rand.New(rand.NewPCG(13, 14))
			dir := t.TempDir()
			p := filepath.Join(dir, "disk")
			sparseImage(t, r, p, 8<<20, 10)
			d, _, err := s.IngestDisk(t.Context(), p, IngestOptions{})
			if err != nil {
				t.Fatal(err)
			}
			m, _ := s.Manifest(d)
			victim := m.Chunks[len(m.Chunks)/2].Digest
			if damage == "missing" {
				os.Remove(s.objectPath(victim))
			} else {
				os.WriteFile(s.objectPath(victim), []byte("garbage"), 0o644)
			}
			out := filepath.Join(dir, "out")
			err = s.Materialize(t.Context(), d, out)
			if err == nil || !strings.Contains(err.Error(), victim.String()) {
				t.Fatalf("Materialize = %v, want an error naming chunk %s", err, victim)
			}
			if damage == "missing" && !errors.Is(err, ErrNotFound) {
				t.Fatalf("Materialize = %v, want ErrNotFound", err)
			}
			if left, _ := filepath.Glob(filepath.Join(dir, "*out*")); len(left) != 0 {
				t.Fatalf("failed materialization left %v", left)
			}
		})
	}
}

func TestDecodeManifestErrors(t *testing.T) {
	d := Sum([]byte("x")).String()
	for _, tc := range []struct{ in, want string }{
		{"", "line 1"},
		{"vmb-snapshot 2\n", "line 1"},
		{"vmb-snapshot 1\nsize x\n", "line 2"},
		{"vmb-snapshot 1\nsize 100\nchunk-size 1000\n", "power of two"},
		{"vmb-snapshot 1\nsize 1000000\nchunk-size 65536\n65536 " + d + "\n0 " + d + "\n", "not after"},
		{"vmb-snapshot 1\nsize 1000000\nchunk-size 65536\n100 " + d + "\n", "multiple"},
		{"vmb-snapshot 1\nsize 1000000\nchunk-size 65536\n0 zz\n", "digest"},
		{"vmb-snapshot 1\nsize 100\nchunk-size 65536\n65536 " + d + "\n", "inside the disk"},
	} {
		_, err := DecodeManifest([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("DecodeManifest(%q) = %v, want error containing %q", tc.in, err, tc.want)
		}
	}
}

func FuzzDecodeManifest(f *testing.F) {
	m := &Manifest{Size: 1 << 20, ChunkSize: 65536, Chunks: []Chunk{{0, Sum([]byte("a"))}, {131072, Sum([]byte("b"))}}}
	f.Add(m.Encode())
	f.Add([]byte("vmb-snapshot 1\nsize 0\nchunk-size 4096\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to a manifest that decodes to the same thing.
		m2, err := DecodeManifest(m.Encode())
		if err != nil {
			t.Fatalf("re-encoded manifest does not decode: %v", err)
		}
		if diff := cmp.Diff(m, m2); diff != "" {
			t.Fatal(diff)
		}
	})
}

// FuzzSnapshot ingests images shaped by the fuzzer and materializes them back.
func FuzzSnapshot(f *testing.F) {
	f.Add(uint64(1), uint64(2), uint16(5000), uint8(3))
	f.Add(uint64(3), uint64(4), uint16(1), uint8(0))
	s := newStore(f)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, a, b uint64, kib uint16, writes uint8) {
		r := rand.New(rand.NewPCG(a, b))
		p := filepath.Join(dir, "disk")
		os.Remove(p)
		size := int64(kib)*1024 + int64(r.IntN(1024))
		want := sparseImage(t, r, p, size, int(writes%16))
		roundTrip(t, s, p, want, IngestOptions{ChunkSize: 64 << 10})
	})
}

// Chunks stored uncompressed for later read back the same, and Compact compresses them
// in place without changing any name.
func TestDeferredCompression(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(50, 51))
	p := filepath.Join(t.TempDir(), "disk")
	want := sparseImage(t, r, p, 16<<20, 20)
	d, st := roundTrip(t, s, p, want, IngestOptions{DeferCompression: true})
	before, _ := s.Stats()
	cst, err := s.Compact(t.Context(), []Digest{d})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.Stats()
	if cst.Objects == 0 || cst.BytesAfter >= cst.BytesBefore || after.ObjectBytes >= before.ObjectBytes {
		t.Fatalf("compact of %d new chunks: %+v; store %d -> %d bytes", st.NewChunks, cst, before.ObjectBytes, after.ObjectBytes)
	}
	if after.Objects != before.Objects {
		t.Fatalf("compact changed the object count from %d to %d", before.Objects, after.Objects)
	}
	out := p + ".2"
	if err := s.Materialize(t.Context(), d, out); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	if !bytes.Equal(got, want) {
		t.Fatal("snapshot differs after compaction")
	}
	if cst, _ := s.Compact(t.Context(), []Digest{d}); cst.Objects != 0 {
		t.Fatalf("second compact compressed %d objects again", cst.Objects)
	}
	checkStore(t, s, -1)

	// gc compresses what a deferred ingest left raw, and only that.
	os.WriteFile(p, bytes.Repeat([]byte("compressible "), 100000), 0o644)
	d2, st2, err := s.IngestDisk(t.Context(), p, IngestOptions{DeferCompression: true})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.GC(t.Context(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Compacted.Objects != st2.NewChunks { // the manifest was written compressed
		t.Fatalf("gc compacted %d objects, want the %d raw chunks", rep.Compacted.Objects, st2.NewChunks)
	}
	if err := s.Materialize(t.Context(), d2, out); err != nil {
		t.Fatal(err)
	}
}

func TestRawFrame(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(52, 53))
	for _, n := range []int{0, 1, maxRawBlock - 1, maxRawBlock, maxRawBlock + 1, 5*maxRawBlock + 3} {
		b := randBytes(r, n)
		got, err := s.dec.DecodeAll(appendRawFrame(nil, b), nil)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("raw frame of %d bytes: decoded %d bytes, %v", n, len(got), err)
		}
	}
}
