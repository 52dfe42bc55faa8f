package cas

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func newStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "cache"), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestPutGet(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 1000, 1 << 20, 3<<20 + 7} {
		b := randBytes(r, n)
		d, err := s.PutBytes(b)
		if err != nil {
			t.Fatal(err)
		}
		if d != Sum(b) {
			t.Fatalf("PutBytes: digest %s, want %s", d, Sum(b))
		}
		if !s.Has(d) {
			t.Fatalf("Has(%s) = false after Put", d)
		}
		got, err := s.Get(d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, b) {
			t.Fatalf("Get(%d bytes) returned different bytes", n)
		}
		// Streaming put of the same content names the same blob and writes nothing new.
		before := countFiles(t, s.Dir())
		d2, n2, err := s.Put(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if d2 != d || n2 != int64(n) {
			t.Fatalf("Put = %s, %d; want %s, %d", d2, n2, d, n)
		}
		if after := countFiles(t, s.Dir()); after != before {
			t.Fatalf("putting a present blob changed the file count from %d to %d", before, after)
		}
		rc, err := s.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		streamed, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(streamed, b) {
			t.Fatalf("Open: err %v, equal %v", err, bytes.Equal(streamed, b))
		}
		if _, err := s.Stat(d); err != nil {
			t.Fatal(err)
		}
	}
	missing := Sum([]byte("never stored"))
	if _, err := s.Get(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(missing); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat(missing) = %v, want ErrNotFound", err)
	}
}

// countFiles counts regular files under dir, tmp/ included.
func countFiles(t testing.TB, dir string) int {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			n++
		}
		return nil
	})
	return n
}

func TestCorruptBlob(t *testing.T) {
	b := bytes.Repeat([]byte("vmb corrupt test "), 10000)
	for _, tc := range []struct {
		name   string
		damage func(raw []byte) []byte
	}{
		{"flipped byte", func(raw []byte) []byte { raw[len(raw)/2] ^= 0x40; return raw }},
		{"truncated", func(raw []byte) []byte { return raw[:len(raw)/2] }},
		{"empty", func(raw []byte) []byte { return nil }},
		{"other blob", func([]byte) []byte {
			s := newStore(t)
			d, _ := s.PutBytes([]byte("other"))
			raw, _ := os.ReadFile(s.objectPath(d))
			return raw
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			d, err := s.PutBytes(b)
			if err != nil {
				t.Fatal(err)
			}
			p := s.objectPath(d)
			raw, _ := os.ReadFile(p)
			if err := os.WriteFile(p, tc.damage(raw), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(d)
			var ce *CorruptError
			if !errors.As(err, &ce) || got != nil {
				t.Fatalf("Get = %d bytes, %v; want no data and a CorruptError", len(got), err)
			}
			if !strings.Contains(err.Error(), d.String()) || !strings.Contains(err.Error(), p) {
				t.Fatalf("error %q does not name the digest and the path", err)
			}
			rc, err := s.Open(d)
			if err != nil {
				t.Fatal(err)
			}
			_, err = io.ReadAll(rc)
			rc.Close()
			if !errors.As(err, &ce) {
				t.Fatalf("streaming read of a corrupt blob: %v, want a CorruptError", err)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("Open(a regular file) = %v, want an error naming it", err)
	}
	if _, err := Open(""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
	ro := filepath.Join(dir, "ro")
	os.Mkdir(ro, 0o555)
	if _, err := os.Create(filepath.Join(ro, "x")); err == nil {
		t.Log("running as root: permissions do not stop writes; see TestReadOnlyCache for a read-only mount")
	} else if _, err := Open(ro); err == nil || !strings.Contains(err.Error(), ro) {
		t.Fatalf("Open(read-only dir) = %v, want an error naming it", err)
	}
}

func TestDefaultDir(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"VMB_CACHE": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"}, "/c"},
		{map[string]string{"XDG_CACHE_HOME": "/x", "HOME": "/h"}, "/x/vmb"},
		{map[string]string{"HOME": "/h"}, "/h/.cache/vmb"},
	} {
		got, err := DefaultDir(func(k string) string { return tc.env[k] })
		if err != nil || got != tc.want {
			t.Errorf("DefaultDir(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
	if _, err := DefaultDir(func(string) string { return "" }); err == nil {
		t.Error("DefaultDir with no environment succeeded")
	}
}

// Many goroutines putting the same and different blobs at once all succeed, and the
// store ends with exactly one valid blob per content and no staging files.
func TestConcurrentPut(t *testing.T) {
	s := newStore(t)
	const distinct = 20
	blobs := make([][]byte, distinct)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range blobs {
		blobs[i] = randBytes(r, 1000+r.IntN(300000))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range distinct {
				b := blobs[(i+w)%distinct]
				var err error
				if w%2 == 0 {
					_, err = s.PutBytes(b)
				} else {
					_, _, err = s.Put(bytes.NewReader(b))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	checkStore(t, s, distinct)
}

// checkStore verifies every blob, expects n objects and no staging files.
func checkStore(t *testing.T, s *Store, n int) {
	t.Helper()
	rep, err := s.Verify(t.Context(), false)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("verify: %+v", rep.Problems)
	}
	if n >= 0 && rep.Objects != n {
		t.Fatalf("store holds %d objects, want %d", rep.Objects, n)
	}
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Temps != 0 {
		t.Fatalf("%d staging files left in tmp/", st.Temps)
	}
}

// fakeClock is a settable clock for gc tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
