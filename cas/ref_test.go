package cas

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestRef(t *testing.T) {
	s := newStore(t)
	d, _ := s.PutBytes([]byte("manifest"))
	want := &Ref{Outputs: []Output{{Name: "manifest", Kind: KindBlob, Digest: d}}}
	if err := s.SetRef("appliance", want); err != nil {
		t.Fatal(err)
	}
	got, err := s.Ref("appliance")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ref read back (-want +got):\n%s", diff)
	}
	if _, err := s.Ref("nothing"); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing ref: %v, want ErrNotFound", err)
	}
	for _, bad := range []string{"", "Appliance", "a/../b", "/a", "a/", "last/x.json", ".hidden"} {
		if err := s.SetRef(bad, want); err == nil {
			t.Errorf("SetRef(%q) succeeded, want a bad-name error", bad)
		}
	}
	// A ref to what the store does not have is refused, as a record would be.
	var missing Digest
	missing[0] = 1
	if err := s.SetRef("x", &Ref{Outputs: []Output{{Kind: KindBlob, Digest: missing}}}); !errors.Is(err, ErrIncomplete) {
		t.Errorf("ref to a missing blob: %v, want ErrIncomplete", err)
	}
	if err := s.SetRef("x", &Ref{Actions: []ActionID{ActionID(missing)}}); !errors.Is(err, ErrIncomplete) {
		t.Errorf("ref to a missing record: %v, want ErrIncomplete", err)
	}
	// A ref file as vmb wrote refs/appliance before: a bare digest names that blob.
	os.MkdirAll(filepath.Join(s.Dir(), refsDir, "old"), 0o755)
	os.WriteFile(filepath.Join(s.Dir(), refsDir, "old", "appliance"), []byte(d.String()+"\n"), 0o644)
	if r, err := s.Ref("old/appliance"); err != nil || len(r.Outputs) != 1 || r.Outputs[0].Digest != d {
		t.Errorf("legacy ref: %+v, %v", r, err)
	}
	// Files that are not refs (an older vmb's temp files and explanations) are not listed.
	os.WriteFile(filepath.Join(s.Dir(), refsDir, "appliance.123.tmp"), nil, 0o644)
	os.WriteFile(filepath.Join(s.Dir(), refsDir, "old", "ab.json"), []byte("{}"), 0o644)
	names, err := s.Refs()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"appliance", "old/appliance"}, names); diff != "" {
		t.Errorf("Refs (-want +got):\n%s", diff)
	}
	// A ref that is not JSON is corrupt, and says which.
	os.WriteFile(s.refPath("broken"), []byte("{"), 0o644)
	var ce *CorruptError
	if _, err := s.Ref("broken"); !errors.As(err, &ce) {
		t.Errorf("broken ref: %v, want a CorruptError", err)
	}
	if err := s.DeleteRef("broken"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Ref("broken"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted ref: %v", err)
	}
}

// TestGCKeepsWhatRefsReach is the appliance's bug: a root that nothing uses for a
// while is the least recently used thing in the store, and gc --max-size took it
// first. Whatever a ref reaches survives any budget, however old.
func TestGCKeepsWhatRefsReach(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	s := newStore(t, WithClock(clock.now))
	r := rand.New(rand.NewPCG(30, 31))
	var ids []ActionID
	for range 3 {
		a, _ := buildAction(t, s, r, 4<<20)
		ids = append(ids, a)
	}
	kernel, _ := s.PutBytes(randBytes(r, 10000))
	manifest, _ := s.PutBytes([]byte("manifest"))
	p := filepath.Join(t.TempDir(), "disk")
	sparseImage(t, r, p, 4<<20, 4)
	snap, _, err := s.IngestDisk(t.Context(), p, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetRef("appliance", &Ref{Outputs: []Output{
		{Name: "manifest", Kind: KindBlob, Digest: manifest},
		{Name: "kernel", Kind: KindBlob, Digest: kernel},
		{Name: "disk", Kind: KindSnapshot, Digest: snap}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRef("last/x", &Ref{Actions: []ActionID{ids[0]}}); err != nil {
		t.Fatal(err)
	}
	clock.add(24 * time.Hour) // everything is old and unused

	rep, err := s.GC(t.Context(), GCOptions{MaxSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Refs != 2 || rep.KeptActions != 1 || rep.RemovedActions != 2 {
		t.Errorf("gc --max-size 1: %+v, want 2 refs, 1 record kept, 2 removed", rep)
	}
	for _, d := range []Digest{manifest, kernel} {
		if _, err := s.Get(d); err != nil {
			t.Errorf("blob a ref names: %v", err)
		}
	}
	if err := s.Materialize(t.Context(), snap, filepath.Join(t.TempDir(), "d")); err != nil {
		t.Errorf("snapshot a ref names: %v", err)
	}
	res, err := s.GetAction(ids[0])
	if err != nil {
		t.Fatalf("record a ref names: %v", err)
	}
	if err := s.Materialize(t.Context(), res.Outputs[0].Digest, filepath.Join(t.TempDir(), "d")); err != nil {
		t.Errorf("snapshot of a record a ref names: %v", err)
	}
	for _, a := range ids[1:] {
		if _, err := s.GetAction(a); !errors.Is(err, ErrNotFound) {
			t.Errorf("record no ref names survived --max-size 1: %v", err)
		}
	}
	checkStore(t, s, -1)

	// Without its ref, the appliance goes too.
	s.DeleteRef("appliance")
	if _, err := s.GC(t.Context(), GCOptions{MaxSize: 1}); err != nil {
		t.Fatal(err)
	}
	if s.Has(kernel) || s.Has(snap) {
		t.Error("gc kept blobs whose ref was deleted")
	}
	checkStore(t, s, -1)

	// A ref gc cannot read stops gc: it cannot know what the ref would keep.
	os.WriteFile(s.refPath("broken"), []byte("{"), 0o644)
	if _, err := s.GC(t.Context(), GCOptions{MaxSize: 1}); err == nil {
		t.Error("gc with a corrupt ref succeeded")
	}
}

func TestSyncRefs(t *testing.T) {
	src, dst := newStore(t), newStore(t)
	r := rand.New(rand.NewPCG(32, 33))
	a, _ := buildAction(t, src, r, 4<<20)
	b, _ := src.PutBytes([]byte("manifest"))
	want := &Ref{Outputs: []Output{{Name: "manifest", Kind: KindBlob, Digest: b}}, Actions: []ActionID{a}}
	if err := src.SetRef("appliance", want); err != nil {
		t.Fatal(err)
	}
	rep, err := SyncRefs(t.Context(), dst, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Refs != 1 || rep.Actions != 1 || rep.Objects == 0 {
		t.Errorf("sync refs: %+v", rep)
	}
	got, err := dst.Ref("appliance")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("synced ref (-want +got):\n%s", diff)
	}
	if _, err := dst.GetAction(a); err != nil {
		t.Error(err)
	}
	checkStore(t, dst, -1)
}

func TestVerifyQuarantinesRef(t *testing.T) {
	s := newStore(t)
	d, _ := s.PutBytes([]byte("kernel"))
	if err := s.SetRef("appliance", &Ref{Outputs: []Output{{Name: "kernel", Kind: KindBlob, Digest: d}}}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.objectPath(d), []byte("not zstd"), 0o644)
	rep, err := s.Verify(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Refs != 1 || len(rep.Problems) != 2 {
		t.Fatalf("verify: %+v, want the blob and the ref that reaches it", rep)
	}
	if q := rep.Problems[1].Quarantined; filepath.Base(q) != "ref-appliance" {
		t.Errorf("ref quarantined to %q", q)
	}
	if _, err := s.Ref("appliance"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a ref to a corrupt blob is still there: %v", err)
	}
	checkStore(t, s, 0)
}
