// Package fsmaptest is what the tests of fsmap's mappers share: making the files
// an image is built from, running the tools that build and read it, and the
// checks every mapper's Locate answers must pass. Only _test.go files import it.
package fsmaptest

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap"
)

// Locator is a mapper: an ext, FAT, exFAT, NTFS, UDF, XFS or btrfs FS.
type Locator interface {
	Locate(off, n int64) ([]fsmap.Span, error)
}

// Need skips the test unless every tool is on the PATH; installs names the
// packages dev/setup installs them from.
func Need(t testing.TB, installs string, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (dev/setup installs %s)", tool, installs)
		}
	}
}

// Run runs a command and returns its output, stdout and stderr together; the
// test fails if it does.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// Blank makes img an empty (sparse) file of size bytes, for a mkfs to format.
func Blank(t testing.TB, img string, size int64) {
	t.Helper()
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
}

// Write writes content to the file at path p below root, making its directories.
func Write(t testing.TB, root, p string, content []byte) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// WriteFiles writes files (path: content) below root.
func WriteFiles(t testing.TB, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		Write(t, root, p, []byte(content))
	}
}

// Stamped is content of n bytes whose every block (of block bytes) starts with
// its path and index, so that a block's bytes say which file and which block
// they are; StampRE reads them back.
func Stamped(p string, n, block int) []byte {
	b := make([]byte, n)
	for k := 0; k*block < n; k++ {
		copy(b[k*block:], fmt.Sprintf("vmb:%s#%d\n", p, k))
	}
	return b
}

// StampRE matches the stamp Stamped puts at the start of a block: the path and
// the block's index.
var StampRE = regexp.MustCompile(`^vmb:([^#]+)#(\d+)\n`)

// Open opens the image img with a mapper's open (closed when the test ends) and
// returns the mapper and the image's size.
func Open[FS any](t testing.TB, img string, open func(io.ReaderAt, int64) (FS, error)) (FS, int64) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	fs, err := open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs, fi.Size()
}

// Locate is fs.Locate(off, n); an error fails the test.
func Locate(t *testing.T, fs Locator, off, n int64) []fsmap.Span {
	t.Helper()
	got, err := fs.Locate(off, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// Tile checks that spans tile [0, size) and that no two neighbours could merge.
func Tile(t *testing.T, all []fsmap.Span, size int64) {
	t.Helper()
	pos := int64(0)
	for i, s := range all {
		if s.Off != pos || s.Len <= 0 {
			t.Fatalf("span %d %+v: want it at %d", i, s, pos)
		}
		pos += s.Len
		if i > 0 && all[i-1].Structure == s.Structure && cmp.Equal(all[i-1].Paths, s.Paths) {
			t.Errorf("spans %+v and %+v not merged", all[i-1], s)
		}
	}
	if pos != size {
		t.Errorf("spans end at %d, want %d", pos, size)
	}
}

// InBounds checks that every span lies in a filesystem (or volume: noun) of size
// bytes.
func InBounds(t *testing.T, spans []fsmap.Span, size int64, noun string) {
	t.Helper()
	for _, s := range spans {
		if s.Off < 0 || s.Len <= 0 || s.Off+s.Len > size {
			t.Errorf("span %+v off a %s of %d bytes", s, noun, size)
		}
	}
}

// FuzzLocate fuzzes open and Locate from seed, a whole image, checking that no
// span lies outside the filesystem (or volume: noun) fuzzed: a filesystem vmb
// did not write cannot make the mapper panic or loop.
func FuzzLocate[FS Locator](f *testing.F, seed []byte, open func(io.ReaderAt, int64) (FS, error), noun string) {
	f.Add(seed, int64(0), int64(len(seed)))
	f.Fuzz(func(t *testing.T, disk []byte, off, n int64) {
		fs, err := open(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		spans, _ := fs.Locate(off, n%(1<<20))
		InBounds(t, spans, int64(len(disk)), noun)
	})
}

// BenchTree writes the benchmarks' tree below root: 3000 files of 1000 to 4663
// bytes, with long names, in 30 directories.
func BenchTree(tb testing.TB, root string) {
	tb.Helper()
	for d := range 30 {
		for i := range 100 {
			Write(tb, root, fmt.Sprintf("/directory %02d/a file with a long name %03d.txt", d, i), bytes.Repeat([]byte{byte(i)}, 1000+i*37))
		}
	}
}

// BenchLocateAll times open and a Locate of the whole of img (which walks every
// directory), wanting a span at least for each of BenchTree's files.
func BenchLocateAll[FS Locator](b *testing.B, img string, open func(io.ReaderAt, int64) (FS, error)) {
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b.ResetTimer()
	for b.Loop() {
		fs, err := open(f, fi.Size())
		if err != nil {
			b.Fatal(err)
		}
		spans, err := fs.Locate(0, fi.Size())
		if err != nil || len(spans) < 3000 {
			b.Fatalf("%d spans, %v", len(spans), err)
		}
	}
}

// BenchFiles are 4000 files (path: content) of up to 9 KB in 40 directories.
func BenchFiles() map[string]string {
	files := map[string]string{}
	for i := range 4000 {
		files[fmt.Sprintf("d%02d/f%04d", i%40, i)] = strings.Repeat("z", i%9000)
	}
	return files
}

// BenchOpen times open and a Locate of 4 KiB from the middle of img: what a
// mapper reads before it can answer.
func BenchOpen[FS Locator](b *testing.B, img string, open func(io.ReaderAt, int64) (FS, error)) {
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	for b.Loop() {
		fs, err := open(f, fi.Size())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fs.Locate(fi.Size()/2, 4096); err != nil {
			b.Fatal(err)
		}
	}
}

// Locate1 is the one span fs.Locate(off, n) answers; an error, or more or fewer
// spans, fails the test.
func Locate1(t *testing.T, fs Locator, off, n int64) fsmap.Span {
	t.Helper()
	got, err := fs.Locate(off, n)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("Locate(%d, %d): %d spans, want 1: %+v", off, n, len(got), got)
	}
	return got[0]
}

// ReadImage is the content of the image img.
func ReadImage(t testing.TB, img string) []byte {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// CheckRead checks that read, which writes the content of the file at p, writes
// no more than its size and, when it succeeds, all of it.
func CheckRead(t *testing.T, p string, size int64, read func(io.Writer) error) {
	t.Helper()
	var n countWriter
	if err := read(&n); err == nil && int64(n) != size {
		t.Errorf("%s: read %d bytes of %d", p, n, size)
	}
	if int64(n) > size {
		t.Errorf("%s: read %d bytes, more than its size %d", p, n, size)
	}
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }
