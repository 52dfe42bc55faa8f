package cas

import (
	"bytes"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

func TestSnapshotReader(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(3, 4))
	path := filepath.Join(t.TempDir(), "disk")
	size := int64(5*minChunkSize + 1234)
	want := sparseImage(t, r, path, size, 6)
	d, _, err := s.IngestDisk(t.Context(), path, IngestOptions{ChunkSize: minChunkSize})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Manifest(d)
	if err != nil {
		t.Fatal(err)
	}
	sr := s.NewSnapshotReader(m)
	for range 200 {
		off := r.Int64N(size)
		n := r.Int64N(3 * minChunkSize)
		b := make([]byte, n)
		got, err := sr.ReadAt(b, off)
		wantN := min(n, size-off)
		if int64(got) != wantN || (got < len(b) && err != io.EOF) || (got == len(b) && err != nil) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d", n, off, got, err, wantN)
		}
		if !bytes.Equal(b[:got], want[off:off+int64(got)]) {
			t.Fatalf("ReadAt(%d bytes at %d): wrong bytes", n, off)
		}
	}
}

func TestLookup(t *testing.T) {
	s := newStore(t)
	d, err := s.PutBytes([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	a := ActionID(Sum([]byte("key")))
	if err := s.PutAction(a, &Result{Outputs: []Output{{Name: "file", Kind: KindBlob, Digest: d}}}); err != nil {
		t.Fatal(err)
	}
	blobs, actions, err := s.Lookup(d.String()[:6])
	if err != nil || len(blobs) != 1 || blobs[0] != d || len(actions) != 0 {
		t.Errorf("Lookup(blob prefix) = %v, %v, %v", blobs, actions, err)
	}
	blobs, actions, err = s.Lookup(a.String()[:8])
	if err != nil || len(blobs) != 0 || len(actions) != 1 || actions[0] != a {
		t.Errorf("Lookup(action prefix) = %v, %v, %v", blobs, actions, err)
	}
	if _, _, err := s.Lookup("xyz"); err == nil {
		t.Error("Lookup(xyz): no error")
	}
}
