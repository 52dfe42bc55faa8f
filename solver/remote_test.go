package solver_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/solver"
)

// Machine A builds and pushes; machine B, with an empty cache, runs nothing and
// writes the same outputs.
func TestSolveRemote(t *testing.T) {
	remoteDir := filepath.Join(t.TempDir(), "remote")
	remotes := func(store *cas.Store, push bool) *cas.Remotes {
		r, err := cas.OpenRemote(t.Context(), remoteDir)
		if err != nil {
			t.Fatal(err)
		}
		rs := &cas.Remotes{Store: store, Remotes: []*cas.Remote{r}, Trust: cas.Trust{Unsigned: true}, Push: push,
			Warn: func(err error) { t.Errorf("warning: %v", err) }}
		store.SetFetch(rs.Fetch)
		return rs
	}
	a := newEnv(t)
	ra := remotes(a.store, true)
	if sum, err := a.solve(t, t.Context(), solver.Options{Remote: ra}); err != nil || sum.Executed != 9 {
		t.Fatalf("machine A: %+v, %v", sum, err)
	}
	if rep := ra.Wait(); rep.Actions != 9 {
		t.Errorf("machine A pushed %+v, want 9 records", rep)
	}

	b := newEnv(t)
	b.dir = a.dir
	if sum, err := b.solve(t, t.Context(), solver.Options{Remote: remotes(b.store, false)}); err != nil || sum.Executed != 0 {
		t.Fatalf("machine B: %+v, %v; want nothing executed", sum, err)
	}
	for _, p := range []string{"a/a.qcow2", "b/motd"} {
		wa, _ := os.ReadFile(filepath.Join(a.out, p))
		wb, err := os.ReadFile(filepath.Join(b.out, p))
		if err != nil || !bytes.Equal(wa, wb) {
			t.Errorf("output %s on B: %v, differs from A's", p, err)
		}
	}
	if rep, err := b.store.Verify(t.Context(), false); err != nil || !rep.OK() {
		t.Errorf("B's cache: %v %+v", err, rep)
	}
}
