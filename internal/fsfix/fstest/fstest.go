// Package fstest holds what the tests of the filesystem fixers (internal/fsfix/*)
// share: running the host's mkfs and check tools. Tests only.
package fstest

import (
	"os/exec"
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
