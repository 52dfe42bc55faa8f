package cas

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// buildAction stores a snapshot of a random disk and a log, and records them under a
// fresh action ID, as a job would.
func buildAction(t testing.TB, s *Store, r *rand.Rand, size int64) (ActionID, *Result) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk")
	sparseImage(t, r, p, size, 8)
	snap, _, err := s.IngestDisk(t.Context(), p, IngestOptions{})
	if err != nil {
		t.Fatal(err)
	}
	log, err := s.PutBytes(randBytes(r, 500))
	if err != nil {
		t.Fatal(err)
	}
	var a ActionID
	copy(a[:], randBytes(r, Size))
	res := &Result{
		Outputs:  []Output{{Name: "root", Kind: KindSnapshot, Digest: snap}},
		Log:      log,
		Duration: 1500 * time.Millisecond,
		Executor: "test",
		Created:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	if err := s.PutAction(a, res); err != nil {
		t.Fatal(err)
	}
	return a, res
}

func TestActionRecord(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(20, 21))
	a, want := buildAction(t, s, r, 4<<20)
	got, err := s.GetAction(a)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("GetAction differs (-want +got):\n%s", diff)
	}
	if o, ok := got.Output("root"); !ok || o.Kind != KindSnapshot {
		t.Fatalf("Output(root) = %v, %v", o, ok)
	}

	var other ActionID
	other[0] = 1
	if _, err := s.GetAction(other); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetAction(unknown) = %v, want ErrNotFound", err)
	}

	// A record cannot be written before its blobs.
	bad := &Result{Outputs: []Output{{Name: "x", Kind: KindBlob, Digest: Sum([]byte("absent"))}}}
	if err := s.PutAction(other, bad); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("PutAction naming a missing blob = %v, want ErrIncomplete", err)
	}

	// A record whose log went missing is unusable.
	os.Remove(s.objectPath(want.Log))
	if _, err := s.GetAction(a); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("GetAction with a missing log = %v, want ErrIncomplete", err)
	}

	// A record that is not JSON is corrupt, and the error names it.
	os.WriteFile(s.actionPath(a), []byte("{"), 0o644)
	var ce *CorruptError
	if _, err := s.GetAction(a); !errors.As(err, &ce) || !strings.Contains(err.Error(), a.String()) {
		t.Fatalf("GetAction of a garbled record = %v, want a CorruptError naming it", err)
	}
}

func TestVerifyQuarantines(t *testing.T) {
	s := newStore(t)
	r := rand.New(rand.NewPCG(22, 23))
	a1, res1 := buildAction(t, s, r, 4<<20)
	a2, _ := buildAction(t, s, r, 4<<20)
	rep, err := s.Verify(t.Context(), true)
	if err != nil || !rep.OK() || rep.Actions != 2 {
		t.Fatalf("verify of a sound store: %+v, %v", rep, err)
	}

	// Corrupt one chunk of a1's snapshot.
	m, _ := s.Manifest(res1.Outputs[0].Digest)
	victim := m.Chunks[0].Digest
	os.WriteFile(s.objectPath(victim), []byte("not zstd"), 0o644)

	rep, err = s.Verify(t.Context(), true)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, p := range rep.Problems {
		if p.Quarantined == "" {
			t.Errorf("problem not quarantined: %+v", p)
		}
		paths = append(paths, p.Path)
	}
	want := []string{s.objectPath(victim), s.actionPath(a1)}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Fatalf("verify problems (-want +got):\n%s", diff)
	}
	// The store is consistent again: a1 is gone, a2 still reads, verify is clean.
	if _, err := s.GetAction(a1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("quarantined action still readable: %v", err)
	}
	if _, err := s.GetAction(a2); err != nil {
		t.Fatal(err)
	}
	if rep, _ := s.Verify(t.Context(), true); !rep.OK() {
		t.Fatalf("verify after quarantine: %+v", rep.Problems)
	}
	st, _ := s.Stats()
	if st.Quarantined != 2 {
		t.Fatalf("stats count %d quarantined files, want 2", st.Quarantined)
	}
}

func TestGC(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	s := newStore(t, WithClock(clock.now))
	r := rand.New(rand.NewPCG(24, 25))
	var ids []ActionID
	for range 4 {
		a, _ := buildAction(t, s, r, 4<<20)
		ids = append(ids, a)
		// Age each record so that they are used in order, the last most recently.
		clock.add(2 * time.Hour)
		os.Chtimes(s.actionPath(a), clock.now(), clock.now())
	}
	clock.add(2 * time.Hour)
	// An orphan blob, old, and a fresh one a concurrent writer has just stored.
	orphan, _ := s.PutBytes([]byte("orphan"))
	old := clock.now().Add(-3 * time.Hour)
	os.Chtimes(s.objectPath(orphan), old, old)
	fresh, _ := s.PutBytes([]byte("fresh"))
	os.Chtimes(s.objectPath(fresh), clock.now(), clock.now())
	// A staging file a crashed writer left long ago.
	stale := filepath.Join(s.Dir(), tmpDir, "put-crashed")
	os.WriteFile(stale, []byte("torn"), 0o644)
	os.Chtimes(stale, old, old)

	// No budget: only garbage goes.
	rep, err := s.GC(t.Context(), GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.RemovedActions != 0 || rep.RemovedObjects != 1 || rep.RemovedTemps != 1 {
		t.Fatalf("gc without budget: %+v, want 1 object and 1 temp removed", rep)
	}
	if s.Has(orphan) || !s.Has(fresh) {
		t.Fatalf("orphan kept %v, fresh kept %v", s.Has(orphan), s.Has(fresh))
	}

	// A budget that fits about two of the four actions keeps the two most recent.
	st, _ := s.Stats()
	perAction := (st.ObjectBytes) / 4
	rep, err = s.GC(t.Context(), GCOptions{MaxSize: perAction*2 + perAction/2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.KeptActions != 2 || rep.RemovedActions != 2 {
		t.Fatalf("gc with a budget of 2.5 actions: %+v", rep)
	}
	for i, a := range ids {
		_, err := s.GetAction(a)
		if kept := err == nil; kept != (i >= 2) {
			t.Errorf("action %d kept = %v (%v)", i, kept, err)
		}
	}
	if !s.Has(fresh) {
		t.Error("gc removed a blob written within the grace period")
	}
	checkStore(t, s, -1)
}

func TestSync(t *testing.T) {
	src := newStore(t)
	dst := newStore(t)
	r := rand.New(rand.NewPCG(26, 27))
	a1, _ := buildAction(t, src, r, 8<<20)
	a2, _ := buildAction(t, src, r, 8<<20)
	a3, _ := buildAction(t, src, r, 8<<20)

	rep, err := Sync(t.Context(), dst, src, []ActionID{a1, a2})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Actions != 2 || rep.Objects == 0 {
		t.Fatalf("sync: %+v", rep)
	}
	for _, a := range []ActionID{a1, a2} {
		res, err := dst.GetAction(a)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), "disk")
		if err := dst.Materialize(t.Context(), res.Outputs[0].Digest, out); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dst.GetAction(a3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("sync copied an action it was not asked for: %v", err)
	}
	// A second sync copies nothing.
	rep, err = Sync(t.Context(), dst, src, []ActionID{a1, a2})
	if err != nil || rep.Actions != 0 || rep.Objects != 0 || rep.SkippedAction != 2 {
		t.Fatalf("second sync: %+v, %v", rep, err)
	}
	// A corrupt blob in the source is not propagated, and the record is not written.
	res3, _ := src.GetAction(a3)
	os.WriteFile(src.objectPath(res3.Log), []byte("bad"), 0o644)
	_, err = Sync(t.Context(), dst, src, nil)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("sync of a corrupt blob = %v, want a CorruptError", err)
	}
	if _, err := dst.GetAction(a3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record written despite a failed blob copy: %v", err)
	}
	checkStore(t, dst, -1)
}
