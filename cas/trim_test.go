package cas

import (
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
