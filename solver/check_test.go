package solver_test

import (
	"context"
	"io"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/solver/executortest"
)

// unsteady is the fake executor, but the job of one node gives another disk each
// time it runs after the first, as a job that writes the time would.
type unsteady struct {
	*executortest.Fake
	node graph.Key
	runs int
}

func (u *unsteady) Run(ctx context.Context, n *graph.Node, disks map[string]cas.Digest, log io.Writer) (map[string]cas.Digest, map[string]cas.Digest, error) {
	out, files, err := u.Fake.Run(ctx, n, disks, log)
	if err != nil || n.Key != u.node {
		return out, files, err
	}
	u.runs++
	for name := range out {
		m := &cas.Manifest{Size: int64(1<<20 + u.runs), ChunkSize: 65536}
		if out[name], err = u.Fake.Store.PutBytes(m.Encode()); err != nil {
			return nil, nil, err
		}
	}
	return out, files, nil
}

// Check rebuilds recorded nodes from their recorded input, says which are
// reproducible, names the one that is not with its differing output, keeps the
// rebuilt output, stops descending after it (unless told to go on), and reports
// nodes never built as not recorded.
func TestCheck(t *testing.T) {
	e := newEnv(t)
	store := e.store
	g, err := lang.Compile(t.Context(), e.dir, lang.Options{Executor: e.exec.Identity()})
	if err != nil {
		t.Fatal(err)
	}
	im := g.Images[slices.IndexFunc(g.Images, func(im *graph.Image) bool { return im.Name == "base" })]
	const at = 2 // the disk, the label, then this one
	flaky := im.Steps[at].Node
	x := &unsteady{Fake: &executortest.Fake{Store: store}, node: flaky.Key}
	s := solver.New(store, x, solver.Options{Jobs: 1})
	if _, err := s.Solve(t.Context(), g, im.Name); err != nil {
		t.Fatal(err)
	}
	verdicts := func(opt solver.CheckOptions) (map[string]string, []solver.CheckResult) {
		t.Helper()
		res, err := s.Check(t.Context(), g, opt, im.Name)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range res {
			got[r.Node.Label()] = r.Verdict
		}
		return got, res
	}
	got, res := verdicts(solver.CheckOptions{})
	want := map[string]string{}
	for i, st := range im.Steps {
		switch {
		case i == at:
			want[st.Node.Label()] = solver.Differs
		case i > at:
			want[st.Node.Label()] = solver.NotChecked
		default:
			want[st.Node.Label()] = solver.Reproducible
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts (-want +got):\n%s", diff)
	}
	for _, r := range res {
		if r.Verdict != solver.Differs {
			continue
		}
		if len(r.Differing) == 0 || r.Differing[0].Recorded == r.Differing[0].Rebuilt {
			t.Errorf("differing outputs: %+v", r.Differing)
		}
		ref, err := store.Ref(solver.CheckRef(r.Node.Key))
		if err != nil || len(ref.Outputs) == 0 || ref.Outputs[0].Digest != r.Differing[0].Rebuilt {
			t.Errorf("the rebuilt output is not kept: %v, %v", ref, err)
		}
	}
	// Going on, every later node is checked from the recorded state, and is
	// reproducible.
	got, _ = verdicts(solver.CheckOptions{KeepGoing: true})
	for _, st := range im.Steps[at+1:] {
		want[st.Node.Label()] = solver.Reproducible
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("verdicts, keep going (-want +got):\n%s", diff)
	}
	// A sample checks that many; the rest are not checked.
	_, res = verdicts(solver.CheckOptions{Sample: 2, KeepGoing: true})
	checked := 0
	for _, r := range res {
		if r.Verdict != solver.NotChecked {
			checked++
		}
	}
	if checked != 2 {
		t.Errorf("a sample of 2 checked %d nodes", checked)
	}
	// In a cache that never built them, nothing is recorded.
	empty, _ := cas.Open(t.TempDir())
	res, err = solver.New(empty, &executortest.Fake{Store: empty}, solver.Options{}).Check(t.Context(), g, solver.CheckOptions{}, im.Name)
	if err != nil || len(res) == 0 || res[0].Verdict != solver.NotRecorded {
		t.Errorf("an empty cache: %v, %v", res, err)
	}
}
