// Package fstest holds what the tests of the filesystem fixers (internal/fsfix/*)
// share: making image files and running the host's mkfs and check tools.
// Tests only.
package fstest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Run runs a host tool and returns what it printed; it fails the test if the tool
// fails.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Image returns the path of a new sparse file of size bytes, called name, in a
// directory of the test's own.
func Image(t testing.TB, name string, size int64) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	return img
}

// AddImage adds to f's corpus the first keep bytes of an image that mkfs writes
// on the path it is given (an image file of size bytes), where the host has tool:
// a seed whose structures a fuzzer can mutate.
func AddImage(f *testing.F, tool string, size, keep int64, mkfs func(img string)) {
	if _, err := exec.LookPath(tool); err != nil {
		return
	}
	img := Image(f, "seed.img", size)
	mkfs(img)
	b, err := os.ReadFile(img)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b[:min(keep, int64(len(b)))])
}

// FuzzImage fuzzes fn with each input written as an image file, at the path fn
// is given.
func FuzzImage(f *testing.F, fn func(t *testing.T, img string)) {
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		img := filepath.Join(dir, "fuzz.img")
		if err := os.WriteFile(img, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fn(t, img)
	})
}
