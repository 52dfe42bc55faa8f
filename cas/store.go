package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"

	"vmb.dev/vmb/internal/atomicfile"
)

// ErrNotFound is returned (wrapped) when a blob or action record is not in the store.
var ErrNotFound = errors.New("not found")

// CorruptError reports a stored blob, record or ref whose content does not match its
// name or cannot be decoded. It is never returned together with data.
type CorruptError struct {
	What   string // "blob", "action record" or "ref NAME"
	Digest Digest // of the blob or record; zero for a ref
	Path   string
	Err    error
}

func (e *CorruptError) Error() string {
	if e.Digest.IsZero() {
		return fmt.Sprintf("%s is corrupt (%s): %v", e.What, e.Path, e.Err)
	}
	return fmt.Sprintf("%s %s is corrupt (%s): %v", e.What, e.Digest, e.Path, e.Err)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// touchAfter is how old an mtime must be before a use of the file bumps it. Bumping
// on every use would turn every read into a write; see gc.go for how mtimes are used.
const touchAfter = 10 * time.Minute

// Store is a content-addressed store in a directory. Its methods are safe for use by
// many goroutines, and many processes (on one or many machines) may share a directory.
type Store struct {
	dir string
	now func() time.Time

	enc *zstd.Encoder // EncodeAll only: safe for concurrent use
	dec *zstd.Decoder // DecodeAll only: safe for concurrent use

	fetch func(context.Context, Digest) error // SetFetch
}

// SetFetch gives the store a way to bring in a chunk it lacks when a snapshot is
// materialized: a remote's Fetch, for records pulled lazily (Remotes.Lookup). Call
// it before the store is used.
func (s *Store) SetFetch(fetch func(context.Context, Digest) error) { s.fetch = fetch }

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now, for tests of gc and usage tracking.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// Open opens the store in dir, creating its layout if needed. It fails with an error
// naming the directory if the directory cannot be created or written.
func Open(dir string, opts ...Option) (*Store, error) {
	if dir == "" {
		return nil, errors.New("open cache: no directory given")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open cache %s: %w", dir, err)
	}
	for _, sub := range []string{objectsDir, actionsDir, tmpDir} {
		if err := os.MkdirAll(filepath.Join(abs, sub), 0o755); err != nil {
			return nil, fmt.Errorf("open cache %s: %w", abs, err)
		}
	}
	// A directory we can list but not write would fail in the middle of a build; find out now.
	probe, err := os.CreateTemp(filepath.Join(abs, tmpDir), "probe-*")
	if err != nil {
		return nil, fmt.Errorf("open cache %s: not writable: %w", abs, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithZeroFrames(true))
	if err != nil {
		return nil, err
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<34))
	if err != nil {
		return nil, err
	}
	s := &Store{dir: abs, now: time.Now, enc: enc, dec: dec}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// OpenExisting opens the store in dir if there is one, and fails with ErrNotFound,
// creating nothing, if there is none.
func OpenExisting(dir string, opts ...Option) (*Store, error) {
	if fi, err := os.Stat(filepath.Join(dir, objectsDir)); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("cache %s: %w", dir, ErrNotFound)
	}
	return Open(dir, opts...)
}

// DefaultDir returns the cache directory used when no --cache flag is given:
// $VMB_CACHE, else $XDG_CACHE_HOME/vmb, else $HOME/.cache/vmb.
func DefaultDir(getenv func(string) string) (string, error) {
	if d := getenv("VMB_CACHE"); d != "" {
		return d, nil
	}
	if d := getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "vmb"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "vmb"), nil
	}
	return "", errors.New("no cache directory: set --cache, $VMB_CACHE, $XDG_CACHE_HOME or $HOME")
}

const (
	objectsDir    = "objects"
	actionsDir    = "actions"
	tmpDir        = "tmp"
	quarantineDir = "quarantine"
	scratchDir    = "scratch"
)

// Scratch returns the directory scratch/<name> of the store, created: where the
// named user of the cache (vmb's: "fetch", "appliance-boot", "appliance-work",
// "lang") keeps files of its own. The store never reads them; what is there must be
// derived or disposable, so that removing it is always safe (gc does not, yet).
func (s *Store) Scratch(name string) (string, error) {
	p := ScratchDir(s.dir, name)
	if err := os.MkdirAll(p, 0o755); err != nil {
		return "", fmt.Errorf("cache scratch %s: %w", name, err)
	}
	return p, nil
}

// ScratchDir is the path of Scratch(name) of the cache in dir, for a user that
// holds a directory and not a Store; it creates nothing.
func ScratchDir(dir, name string) string { return filepath.Join(dir, scratchDir, name) }

// Dir returns the store's absolute directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) objectPath(d Digest) string {
	h := d.String()
	return filepath.Join(s.dir, objectsDir, h[:2], h)
}

// Has reports whether the blob d is present. It does not verify its content.
func (s *Store) Has(d Digest) bool {
	_, err := os.Stat(s.objectPath(d))
	return err == nil
}

// BlobInfo describes a stored blob.
type BlobInfo struct {
	Digest     Digest
	Path       string
	StoredSize int64 // compressed bytes on disk
	ModTime    time.Time
}

// Stat returns what the store knows of blob d without reading it.
func (s *Store) Stat(d Digest) (BlobInfo, error) {
	p := s.objectPath(d)
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return BlobInfo{}, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return BlobInfo{}, err
	}
	return BlobInfo{Digest: d, Path: p, StoredSize: fi.Size(), ModTime: fi.ModTime()}, nil
}

// PutBytes stores b and returns its digest. Storing a blob that is present writes
// nothing.
func (s *Store) PutBytes(b []byte) (Digest, error) {
	d := Sum(b)
	_, err := s.putHashed(d, b)
	return d, err
}

// putHashed stores b, already known to hash to d, and reports whether it wrote it.
func (s *Store) putHashed(d Digest, b []byte) (bool, error) {
	p := s.objectPath(d)
	if s.used(p) {
		return false, nil
	}
	buf := encBufs.Get().(*[]byte)
	defer encBufs.Put(buf)
	*buf = s.enc.EncodeAll(b, (*buf)[:0])
	return true, s.writeFile(p, func(w io.Writer) error {
		_, err := w.Write(*buf)
		return err
	})
}

var encBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

// used reports whether the file at p exists and, if it does, marks it as recently
// used, so that a concurrent gc does not take a blob a writer has just relied on.
func (s *Store) used(p string) bool {
	fi, err := os.Stat(p)
	if err != nil {
		return false
	}
	if now := s.now(); now.Sub(fi.ModTime()) > touchAfter {
		os.Chtimes(p, now, now)
	}
	return true
}

// Put stores the content of r, streaming, and returns its digest and length.
func (s *Store) Put(r io.Reader) (Digest, int64, error) {
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "put-*")
	if err != nil {
		return Digest{}, 0, fmt.Errorf("store blob: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return Digest{}, 0, err
	}
	h := NewHasher()
	n, err := io.Copy(io.MultiWriter(h, zw), r)
	if err != nil {
		zw.Close()
		return Digest{}, 0, fmt.Errorf("store blob: %w", err)
	}
	if err := zw.Close(); err != nil {
		return Digest{}, 0, fmt.Errorf("store blob: %w", err)
	}
	var d Digest
	h.Sum(d[:0])
	p := s.objectPath(d)
	if s.used(p) {
		return d, n, nil
	}
	if err := atomicfile.Commit(f, p); err != nil {
		return Digest{}, 0, fmt.Errorf("store blob %s: %w", d, err)
	}
	ok = true
	return d, n, nil
}

// writeFile writes a file atomically at p: a temp file in tmp/, fsync, rename. A
// crash at any point leaves either no file at p or the whole file.
func (s *Store) writeFile(p string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "w-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := write(f); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := atomicfile.Commit(f, p); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// readFile reads the store's file at p, the file of what; a missing file is
// ErrNotFound.
func readFile(p, what string) ([]byte, error) {
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return b, nil
}

// Get returns the content of blob d, verified against d.
func (s *Store) Get(d Digest) ([]byte, error) {
	p := s.objectPath(d)
	raw, err := readFile(p, "blob "+d.String())
	if err != nil {
		return nil, err
	}
	b, err := s.dec.DecodeAll(raw, nil)
	if err != nil {
		return nil, &CorruptError{What: "blob", Digest: d, Path: p, Err: err}
	}
	if got := Sum(b); got != d {
		return nil, &CorruptError{What: "blob", Digest: d, Path: p, Err: fmt.Errorf("content hashes to %s", got)}
	}
	return b, nil
}

// getInto decodes blob d into dst[:0] and verifies it; for hot paths that reuse buffers.
func (s *Store) getInto(d Digest, raw, dst []byte) ([]byte, []byte, error) {
	p := s.objectPath(d)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return raw, dst, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return raw, dst, fmt.Errorf("read blob %s: %w", d, err)
	}
	defer f.Close()
	bb := bytes.NewBuffer(raw[:0])
	if _, err := bb.ReadFrom(f); err != nil {
		return raw, dst, fmt.Errorf("read blob %s: %w", d, err)
	}
	raw = bb.Bytes()
	dst, err = s.dec.DecodeAll(raw, dst[:0])
	if err != nil {
		return raw, dst, &CorruptError{What: "blob", Digest: d, Path: p, Err: err}
	}
	if got := Sum(dst); got != d {
		return raw, dst, &CorruptError{What: "blob", Digest: d, Path: p, Err: fmt.Errorf("content hashes to %s", got)}
	}
	return raw, dst, nil
}

// Open returns a reader of blob d that verifies the content as it streams: the read
// that reaches the end returns a *CorruptError instead of io.EOF if the content does
// not hash to d. Callers must not trust what they read before they see io.EOF.
func (s *Store) Open(d Digest) (io.ReadCloser, error) {
	p := s.objectPath(d)
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	zr, err := zstd.NewReader(f, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<34))
	if err != nil {
		f.Close()
		return nil, err
	}
	return &verifyReader{d: d, path: p, f: f, zr: zr, h: NewHasher()}, nil
}

type verifyReader struct {
	d    Digest
	path string
	f    *os.File
	zr   *zstd.Decoder
	h    interface {
		io.Writer
		Sum([]byte) []byte
	}
}

func (r *verifyReader) Read(p []byte) (int, error) {
	n, err := r.zr.Read(p)
	r.h.Write(p[:n])
	if err == io.EOF {
		var got Digest
		r.h.Sum(got[:0])
		if got != r.d {
			return n, &CorruptError{What: "blob", Digest: r.d, Path: r.path, Err: fmt.Errorf("content hashes to %s", got)}
		}
		return n, io.EOF
	}
	if err != nil {
		return n, &CorruptError{What: "blob", Digest: r.d, Path: r.path, Err: err}
	}
	return n, nil
}

func (r *verifyReader) Close() error {
	r.zr.Close()
	return r.f.Close()
}
