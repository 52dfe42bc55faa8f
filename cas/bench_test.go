package cas

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// benchImage writes a 1 GiB sparse image at path: half of it data, in runs of
// incompressible bytes, of text-like compressible bytes and of zeros, the rest holes.
// It is made once per benchmark binary run.
func benchImage(b *testing.B) string {
	b.Helper()
	p := filepath.Join(os.TempDir(), "vmb-bench-1g.img")
	if fi, err := os.Stat(p); err == nil && fi.Size() == 1<<30 {
		return p
	}
	f, err := os.Create(p + ".tmp")
	if err != nil {
		b.Fatal(err)
	}
	f.Truncate(1 << 30)
	r := rand.New(rand.NewPCG(1, 1))
	text := []byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit; 0123456789 /usr/lib/x86_64\n")
	buf := make([]byte, 4<<20)
	for off := int64(0); off < 1<<30; off += 8 << 20 { // 4 MiB of data every 8 MiB
		switch r.IntN(3) {
		case 0:
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
		case 1:
			for i := range buf {
				buf[i] = text[(i*7+int(off>>20))%len(text)] ^ byte(r.IntN(2))
			}
		case 2:
			clear(buf)
		}
		f.WriteAt(buf, off)
	}
	f.Close()
	if err := os.Rename(p+".tmp", p); err != nil {
		b.Fatal(err)
	}
	return p
}

func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkIngest ingests the 1 GiB image into an empty store: every chunk is new.
// MB/s is of the disk's logical size, as b3sum on the same file counts it.
func BenchmarkIngest(b *testing.B) {
	img := benchImage(b)
	b.SetBytes(1 << 30)
	for b.Loop() {
		b.StopTimer()
		s := benchStore(b)
		b.StartTimer()
		if _, _, err := s.IngestDisk(b.Context(), img, IngestOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(s.Dir())
		b.StartTimer()
	}
}

// BenchmarkIngestUnchanged re-ingests the image into a store that has it: the cost of
// a job that left its disk as it found it, when nothing says which ranges it wrote.
func BenchmarkIngestUnchanged(b *testing.B) {
	img := benchImage(b)
	s := benchStore(b)
	if _, _, err := s.IngestDisk(b.Context(), img, IngestOptions{}); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(1 << 30)
	for b.Loop() {
		if _, st, err := s.IngestDisk(b.Context(), img, IngestOptions{}); err != nil || st.NewChunks != 0 {
			b.Fatal(err, st)
		}
	}
}

// BenchmarkMaterialize writes the image back from the store.
func BenchmarkMaterialize(b *testing.B) {
	img := benchImage(b)
	s := benchStore(b)
	d, _, err := s.IngestDisk(b.Context(), img, IngestOptions{})
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "out")
	b.SetBytes(1 << 30)
	for b.Loop() {
		os.Remove(out)
		if err := s.Materialize(b.Context(), d, out); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkHash hashes every chunk of the image, holes included, on one core: the
// hashing an ingest does, and the same work as b3sum --num-threads 1 on the file.
func BenchmarkHash(b *testing.B) {
	img := benchImage(b)
	b.SetBytes(1 << 30)
	buf := make([]byte, DefaultChunkSize)
	for b.Loop() {
		f, err := os.Open(img)
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < 1<<30; off += DefaultChunkSize {
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
			Sum(buf)
		}
		f.Close()
	}
}

// BenchmarkCompress compresses the image's data chunks on one core: with BenchmarkHash,
// the BLAKE3 + zstd limit of this machine for new data.
func BenchmarkCompress(b *testing.B) {
	img := benchImage(b)
	s := benchStore(b)
	f, _ := os.Open(img)
	defer f.Close()
	ext, _ := dataExtents(f, 1<<30)
	var data int64
	for _, e := range ext {
		data += e.Len
	}
	b.SetBytes(data)
	buf := make([]byte, DefaultChunkSize)
	var dst []byte
	for b.Loop() {
		for _, off := range chunksOf(ext, DefaultChunkSize, 1<<30) {
			f.ReadAt(buf, off)
			dst = s.enc.EncodeAll(buf, dst[:0])
		}
	}
}

// BenchmarkIngestWritten stores a 20 GiB disk after a job that wrote 1 MiB of
// it: "written" from the ranges the job wrote (IngestOptions.Changed, as vmexec
// passes what qemu recorded), "whole" reading every data extent, as vmb did
// before; the disk holds 200 MiB of data at its start, 1 MiB every 128 MiB (a
// filesystem's metadata) and 64 MiB of 4 KiB data and holes in turn (its free
// blocks, discarded one by one), the rest holes. Compare with b3sum of the same
// 20 GiB.
func BenchmarkIngestWritten(b *testing.B) {
	p := filepath.Join(b.TempDir(), "disk")
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.Truncate(20 << 30)
	r := rand.New(rand.NewPCG(2, 2))
	buf := make([]byte, 1<<20)
	fill := func() {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
	}
	for off := int64(0); off < 200<<20; off += 1 << 20 {
		fill()
		f.WriteAt(buf, off)
	}
	for off := int64(256 << 20); off < 20<<30; off += 128 << 20 {
		fill()
		f.WriteAt(buf, off)
	}
	// 64 MiB of free space discarded block by block, as the agent's zeroing of an
	// ext4's free blocks leaves it: a hole every other 4 KiB.
	for off := int64(512 << 20); off < 576<<20; off += 1 << 20 {
		fill()
		f.WriteAt(buf, off)
		for h := off; h < off+1<<20; h += 8 << 10 {
			if err := unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, h, 4<<10); err != nil {
				b.Fatal(err)
			}
		}
	}
	s := benchStore(b)
	base, _, err := s.IngestDisk(b.Context(), p, IngestOptions{})
	if err != nil {
		b.Fatal(err)
	}
	bm, err := s.Manifest(base)
	if err != nil {
		b.Fatal(err)
	}
	job := Extent{Off: 100 << 20, Len: 1 << 20}
	for _, c := range []struct {
		name    string
		changed []Extent
	}{{"written", []Extent{job}}, {"whole", nil}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(job.Len)
			for b.Loop() {
				fill()
				f.WriteAt(buf, job.Off)
				if _, _, err := s.IngestDisk(b.Context(), p, IngestOptions{Base: bm, Changed: c.changed}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
