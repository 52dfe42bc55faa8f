package main

import (
	"os"
	"path/filepath"
	"testing"
)

// Links resolve inside the target's root, as the target sees them.
func TestResolveIn(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "usr/lib"), 0o755)
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	os.WriteFile(filepath.Join(root, "boot/vmlinuz-6.1"), []byte("kernel"), 0o644)
	os.WriteFile(filepath.Join(root, "usr/lib/x"), []byte("x"), 0o644)
	os.Symlink("boot/vmlinuz-6.1", filepath.Join(root, "vmlinuz"))      // relative, as Debian's
	os.Symlink("/boot/vmlinuz-6.1", filepath.Join(root, "boot/abs"))    // absolute: under root
	os.Symlink("usr/lib", filepath.Join(root, "lib"))                   // an intermediate link
	os.Symlink("../../../../etc/passwd", filepath.Join(root, "escape")) // .. stops at root
	os.Symlink("loop", filepath.Join(root, "loop"))
	for p, want := range map[string]string{
		"/vmlinuz":      "boot/vmlinuz-6.1",
		"/boot/abs":     "boot/vmlinuz-6.1",
		"/lib/x":        "usr/lib/x",
		"/lib/../lib/x": "usr/lib/x",
	} {
		got, err := resolveIn(root, p)
		if err != nil || got != filepath.Join(root, want) {
			t.Errorf("resolveIn(%s) = %s, %v; want %s", p, got, err, want)
		}
	}
	if got, err := resolveIn(root, "/escape"); err == nil {
		t.Errorf("/escape resolved outside the root's /etc: %s", got)
	}
	if _, err := resolveIn(root, "/loop"); err == nil {
		t.Error("a link to itself resolved")
	}
}
