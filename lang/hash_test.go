package lang

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHasherStatCache(t *testing.T) {
	dir := writeRepo(t, map[string]string{"tree/a": "aaa", "tree/sub/b": "bbb", "tree/c": "ccc"})
	os.Symlink("a", filepath.Join(dir, "tree", "link"))
	old := time.Now().Add(-time.Hour)
	for _, f := range []string{"tree/a", "tree/sub/b", "tree/c"} {
		os.Chtimes(filepath.Join(dir, f), old, old)
	}
	cache := filepath.Join(t.TempDir(), "stat-cache.json")
	tree := filepath.Join(dir, "tree")

	h := newHasher(cache)
	h.racy = 0 // the files were just written; the test sets their mtimes, not their ctimes
	d1, err := h.digest(tree)
	if err != nil {
		t.Fatal(err)
	}
	if h.reads != 3 {
		t.Fatalf("first hash read %d files, want 3", h.reads)
	}
	h.save()

	// A new process with the saved cache reads nothing for an unchanged tree.
	h = newHasher(cache)
	h.racy = 0
	if d2, _ := h.digest(tree); d2 != d1 || h.reads != 0 {
		t.Fatalf("unchanged tree: digest %s (was %s), %d files read", d2, d1, h.reads)
	}

	// Same size, mtime put back: the ctime still tells, and the digest changes.
	os.WriteFile(filepath.Join(dir, "tree/c"), []byte("CCC"), 0o644)
	os.Chtimes(filepath.Join(dir, "tree/c"), old, old)
	d3, _ := h.digest(tree)
	if d3 == d1 || h.reads != 1 {
		t.Fatalf("changed file: digest changed %v, %d files read (want 1)", d3 != d1, h.reads)
	}

	// Modes normalize as git's do: a group-writable file digests as 0644.
	os.WriteFile(filepath.Join(dir, "tree/c"), []byte("ccc"), 0o664)
	os.Chmod(filepath.Join(dir, "tree/c"), 0o664)
	d4, _ := newHasher("").digest(tree)
	if d4 != d1 {
		t.Fatal("a umask-dependent mode changed the digest")
	}
	os.Chmod(filepath.Join(dir, "tree/c"), 0o755)
	if d5, _ := newHasher("").digest(tree); d5 == d1 {
		t.Fatal("making a file executable did not change the digest")
	}
}

// A file changed moments ago is not cached: a second change in the same clock tick
// would leave its stat unchanged.
func TestHasherRacyFile(t *testing.T) {
	dir := writeRepo(t, map[string]string{"f": "x"})
	h := newHasher(filepath.Join(t.TempDir(), "c.json"))
	h.digest(filepath.Join(dir, "f"))
	if len(h.cache) != 0 {
		t.Fatal("a file written just now was cached")
	}
}
