package lang

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHashTree(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	writeFile(t, filepath.Join(tree, "a.txt"), "a\n")
	writeFile(t, filepath.Join(tree, "sub/b.txt"), "b\n")
	if err := os.Symlink("a.txt", filepath.Join(tree, "link")); err != nil {
		t.Fatal(err)
	}
	digest := func() string {
		t.Helper()
		d, err := newHasher(t.Context(), "").digest(tree)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	before := digest()
	for _, tc := range []struct {
		name   string
		change func()
		same   bool
	}{
		{"mtime", func() { os.Chtimes(filepath.Join(tree, "a.txt"), time.Unix(1, 0), time.Unix(1, 0)) }, true},
		{"group write bit", func() { os.Chmod(filepath.Join(tree, "a.txt"), 0o664) }, true},
		{"execute bit", func() { os.Chmod(filepath.Join(tree, "a.txt"), 0o755) }, false},
		{"content", func() { writeFile(t, filepath.Join(tree, "sub/b.txt"), "B\n") }, false},
		{"symlink target", func() {
			os.Remove(filepath.Join(tree, "link"))
			os.Symlink("sub/b.txt", filepath.Join(tree, "link"))
		}, false},
		{"new empty directory", func() { os.Mkdir(filepath.Join(tree, "empty"), 0o755) }, false},
		{"rename", func() { os.Rename(filepath.Join(tree, "sub"), filepath.Join(tree, "sub2")) }, false},
	} {
		tc.change()
		after := digest()
		if (after == before) != tc.same {
			t.Errorf("%s: digest same %v, want %v", tc.name, after == before, tc.same)
		}
		before = after
	}
}

// TestStatCache: re-hashing an unchanged tree reads no file; a changed file is
// read again, and only it.
func TestStatCache(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for _, f := range []string{"a", "b", "c/d"} {
		writeFile(t, filepath.Join(tree, f), f)
	}
	cache := filepath.Join(dir, "state", "stat-cache.json")
	run := func() (string, int) {
		t.Helper()
		h := newHasher(t.Context(), cache)
		h.racy = 0
		d, err := h.digest(tree)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.save(); err != nil {
			t.Fatal(err)
		}
		return d, h.reads
	}
	d1, n1 := run()
	d2, n2 := run()
	if n1 != 3 || n2 != 0 || d1 != d2 {
		t.Fatalf("reads %d then %d, digests equal %v: want 3 then 0, equal", n1, n2, d1 == d2)
	}
	// Same size, new content: the mtime or ctime tells.
	writeFile(t, filepath.Join(tree, "b"), "B")
	d3, n3 := run()
	if n3 != 1 || d3 == d2 {
		t.Errorf("after a change: %d reads, digest changed %v; want 1, true", n3, d3 != d2)
	}
	if err := os.WriteFile(cache, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if d4, n4 := run(); d4 != d3 || n4 != 3 {
		t.Errorf("a damaged cache: %d reads, digest equal %v; want 3, true", n4, d4 == d3)
	}
}

// TestStatCacheRacy: a file changed in the last racyWindow is hashed again, since
// another change within the same clock tick would not show in its stat.
func TestStatCacheRacy(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	writeFile(t, file, "a")
	cache := filepath.Join(dir, "stat-cache.json")
	for i := range 2 {
		h := newHasher(t.Context(), cache)
		if _, err := h.digest(file); err != nil {
			t.Fatal(err)
		}
		h.save()
		if h.reads != 1 {
			t.Errorf("run %d: %d reads of a file written just now, want 1", i, h.reads)
		}
	}
}
