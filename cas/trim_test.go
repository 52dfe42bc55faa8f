package cas

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// Trim collects at most once per TrimInterval, to the budget, and keeps refs.
func TestTrimOncePerInterval(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s, err := Open(t.TempDir(), WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	old, _ := s.PutBytes([]byte("an old result nobody keeps"))
	if err := s.PutAction(ActionID{1}, &Result{Outputs: []Output{{Name: "out", Kind: KindBlob, Digest: old}}}); err != nil {
		t.Fatal(err)
	}
	kept, _ := s.PutBytes([]byte("what a ref keeps"))
	if err := s.SetRef("keep", &Ref{Outputs: []Output{{Name: "k", Kind: KindBlob, Digest: kept}}}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * DefaultGrace)

	rep, err := s.Trim(t.Context(), 1)
	if err != nil || rep == nil {
		t.Fatalf("first trim: %v, %v", rep, err)
	}
	if s.Has(old) || !s.Has(kept) {
		t.Errorf("after a trim to 1 byte: old kept %v, ref's blob kept %v; want false, true", s.Has(old), s.Has(kept))
	}
	again, _ := s.PutBytes([]byte("stored after the trim"))
	s.PutAction(ActionID{2}, &Result{Outputs: []Output{{Name: "out", Kind: KindBlob, Digest: again}}})
	now = now.Add(TrimInterval - time.Minute)
	if rep, err := s.Trim(t.Context(), 1); rep != nil || err != nil {
		t.Errorf("a second trim within the interval ran: %v, %v", rep, err)
	}
	now = now.Add(2 * time.Minute)
	if rep, err := s.Trim(t.Context(), 1); rep == nil || err != nil || s.Has(again) {
		t.Errorf("a trim after the interval: %v, %v; blob kept %v", rep, err, s.Has(again))
	}
}

// gc removes an older vmb's top-level scratch directories, and fetched files
// written out for jobs once they are old; it leaves scratch's other places alone.
func TestGCScratch(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	dir := t.TempDir()
	s, err := Open(dir, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"appliance-work/debs/x.deb", "lang/stat-cache.json", "scratch/fetch/f", "scratch/appliance-work/debs/y.deb"} {
		os.MkdirAll(filepath.Join(dir, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(dir, p), []byte("x"), 0o644)
		os.Chtimes(filepath.Join(dir, p), now, now)
	}
	rep, err := s.GC(t.Context(), GCOptions{DryRun: true})
	if err != nil || !slices.Equal(rep.RemovedLegacy, []string{"appliance-work", "lang"}) {
		t.Fatalf("dry run: %v, %v", rep, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "lang")); err != nil {
		t.Error("a dry run removed lang/")
	}
	if _, err := s.GC(t.Context(), GCOptions{}); err != nil {
		t.Fatal(err)
	}
	exists := func(p string) bool { _, err := os.Stat(filepath.Join(dir, p)); return err == nil }
	if exists("appliance-work") || exists("lang") || !exists("scratch/fetch/f") || !exists("scratch/appliance-work/debs/y.deb") {
		t.Errorf("after gc: appliance-work %v, lang %v, a fresh fetched file %v, scratch's packages %v",
			exists("appliance-work"), exists("lang"), exists("scratch/fetch/f"), exists("scratch/appliance-work/debs/y.deb"))
	}
	now = now.Add(2 * DefaultGrace)
	if _, err := s.GC(t.Context(), GCOptions{}); err != nil {
		t.Fatal(err)
	}
	if exists("scratch/fetch/f") || !exists("scratch/appliance-work/debs/y.deb") {
		t.Errorf("after the grace: fetched file %v, packages %v", exists("scratch/fetch/f"), exists("scratch/appliance-work/debs/y.deb"))
	}
}
