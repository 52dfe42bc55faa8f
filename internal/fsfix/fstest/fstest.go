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
