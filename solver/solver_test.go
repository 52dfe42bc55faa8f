package solver_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/solver"
)

// fakeExec stands in for the build VM in these unit tests of the solver only: it
// "runs" a job by storing a snapshot named after the node's key, and counts calls.
type fakeExec struct {
	store *cas.Store
	mu    sync.Mutex
	runs  map[graph.Key]int
	fail  func(*graph.Node) error
	block chan struct{} // if set, every run waits on it (or ctx)
	start chan *graph.Node
}

func (f *fakeExec) Identity() string { return "fake" }

func (f *fakeExec) Run(ctx context.Context, n *graph.Node, in solver.State, log io.Writer) (*solver.Result, error) {
	f.mu.Lock()
	f.runs[n.Key]++
	f.mu.Unlock()
	if f.start != nil {
		f.start <- n
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	fmt.Fprintf(log, "running %s\nsecond line\n", n.Label())
	if f.fail != nil {
		if err := f.fail(n); err != nil {
			return nil, &solver.JobError{Node: n, ExitCode: 1, Err: err}
		}
	}
	res := &solver.Result{State: solver.State{Disks: map[string]cas.Digest{}}, Files: map[string]cas.Digest{}}
	for k, v := range in.Disks {
		res.Disks[k] = v
	}
	if cd, ok := n.Job.(*graph.CreateDisk); ok {
		res.Disks[cd.Disk] = cas.Digest{}
	}
	for disk := range res.Disks {
		m := &cas.Manifest{Size: 1<<20 + int64(n.Key[0]) + int64(n.Key[1])<<8, ChunkSize: 65536}
		d, err := f.store.PutBytes(append(m.Encode(), []byte("")...))
		if err != nil {
			return nil, err
		}
		res.Disks[disk] = d
	}
	if out := graph.Output(n.Job); out != "" {
		d, err := f.store.PutBytes([]byte("output of " + n.Key.String()))
		if err != nil {
			return nil, err
		}
		res.Files[out] = d
	}
	return res, nil
}

func (f *fakeExec) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.runs {
		n += c
	}
	return n
}

const repo = `package build

images: base: {
	disks: root: "64MiB"
	steps: [
		{job: "label", disk: "root", type: "gpt"},
		{job: "partition", disk: "root", partitions: [{size: "rest"}]},
		{job: "format", place: "root:1", fs: "ext4"},
		{job: "copy-in", src: "motd", dest: "root:1:/etc/motd"},
	]
}
images: a: {from: "base", steps: [
	{job: "run", root: "root:1", command: "echo a"},
	{job: "export", disk: "root", format: "qcow2", dest: "a.qcow2"},
]}
images: b: {from: "base", steps: [
	{job: "run", root: "root:1", command: "echo b"},
	{job: "copy-out", src: "root:1:/etc/motd", dest: "motd"},
]}
`

type env struct {
	dir, out string
	store    *cas.Store
	exec     *fakeExec
	events   []solver.Event
	mu       sync.Mutex
}

func newEnv(t *testing.T) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), out: t.TempDir()}
	os.WriteFile(filepath.Join(e.dir, "build.cue"), []byte(repo), 0o644)
	os.WriteFile(filepath.Join(e.dir, "motd"), []byte("hello\n"), 0o644)
	var err error
	if e.store, err = cas.Open(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	e.exec = &fakeExec{store: e.store, runs: map[graph.Key]int{}}
	return e
}

func (e *env) solve(t *testing.T, ctx context.Context, opt solver.Options, images ...string) (*solver.Summary, error) {
	t.Helper()
	g, err := lang.Compile(ctx, e.dir, lang.Options{Executor: e.exec.Identity()})
	if err != nil {
		t.Fatal(err)
	}
	opt.OutDir = e.out
	e.events = nil
	opt.Events = func(ev solver.Event) {
		e.mu.Lock()
		e.events = append(e.events, ev)
		e.mu.Unlock()
	}
	return solver.New(e.store, e.exec, opt).Solve(ctx, g, images...)
}

func (e *env) reasons() map[string]string {
	out := map[string]string{}
	for _, ev := range e.events {
		if ev.Type == solver.EventPlan && !ev.Cached {
			out[ev.Node.Label()] = ev.Reason
		}
	}
	return out
}

func TestSolveIncremental(t *testing.T) {
	e := newEnv(t)
	// base: disk + 4 steps; a and b: 2 steps each. The base runs once for both.
	sum, err := e.solve(t, t.Context(), solver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Executed != 9 || sum.Cached != 0 || e.exec.count() != 9 {
		t.Fatalf("first solve: %+v, %d runs; want 9 executed", sum, e.exec.count())
	}
	for k, c := range e.exec.runs {
		if c != 1 {
			t.Fatalf("node %s ran %d times", k, c)
		}
	}
	for _, p := range []string{"a/a.qcow2", "b/motd"} {
		if _, err := os.Stat(filepath.Join(e.out, p)); err != nil {
			t.Fatalf("output %s: %v", p, err)
		}
	}

	// A second solve runs nothing and still writes the outputs.
	os.RemoveAll(e.out)
	sum, err = e.solve(t, t.Context(), solver.Options{})
	if err != nil || sum.Executed != 0 || sum.Cached != 9 || e.exec.count() != 9 {
		t.Fatalf("second solve: %+v, %v", sum, err)
	}
	if len(sum.Outputs) != 2 {
		t.Fatalf("second solve wrote outputs %v", sum.Outputs)
	}
	if b, _ := os.ReadFile(filepath.Join(e.out, "b/motd")); !strings.HasPrefix(string(b), "output of ") {
		t.Fatalf("cached output has %q", b)
	}

	// Changing a's run command re-runs exactly a's last two steps, and says why.
	os.WriteFile(filepath.Join(e.dir, "build.cue"), []byte(strings.Replace(repo, "echo a", "echo A", 1)), 0o644)
	sum, err = e.solve(t, t.Context(), solver.Options{})
	if err != nil || sum.Executed != 2 || sum.Cached != 7 {
		t.Fatalf("after changing a's command: %+v, %v; want 2 executed", sum, err)
	}
	r := e.reasons()
	if got := r["a[0] run [\"/bin/sh\" \"-c\" \"echo A\"] on root:1"]; !strings.Contains(got, `params changed`) || !strings.Contains(got, "echo a") {
		t.Errorf("reason for a's run: %q (all: %v)", got, r)
	}
	if got := r["a[1] export root qcow2 -> a.qcow2"]; got != "an earlier step changed" {
		t.Errorf("reason for a's export: %q", got)
	}

	// Changing the copied-in file re-runs from the copy-in on, in base, a and b.
	os.WriteFile(filepath.Join(e.dir, "motd"), []byte("changed\n"), 0o644)
	sum, err = e.solve(t, t.Context(), solver.Options{})
	if err != nil || sum.Executed != 5 {
		t.Fatalf("after changing motd: %+v, %v; want 5 executed", sum, err)
	}
	if got := e.reasons()["base[3] copy-in motd -> root:1:/etc/motd"]; got != `input src "motd" changed` {
		t.Errorf("reason for the copy-in: %q", got)
	}

	// --no-cache runs everything again; --dry-run runs nothing.
	sum, _ = e.solve(t, t.Context(), solver.Options{DryRun: true})
	if sum.Executed != 0 || sum.Cached != 9 {
		t.Fatalf("dry run: %+v", sum)
	}
	before := e.exec.count()
	sum, err = e.solve(t, t.Context(), solver.Options{NoCache: true}, "a")
	if err != nil || sum.Executed != 7 || e.exec.count() != before+7 {
		t.Fatalf("--no-cache a: %+v, %v", sum, err)
	}
}

func TestSolveFailure(t *testing.T) {
	e := newEnv(t)
	e.exec.fail = func(n *graph.Node) error {
		if strings.Contains(n.Label(), "echo a") {
			return errors.New("exit status 3")
		}
		return nil
	}
	sum, err := e.solve(t, t.Context(), solver.Options{Jobs: 1})
	var je *solver.JobError
	if !errors.As(err, &je) || !strings.Contains(je.Node.Label(), "echo a") {
		t.Fatalf("solve = %v, want the failure of a's run", err)
	}
	if sum.Failed != 1 || sum.Skipped < 1 {
		t.Fatalf("summary %+v: want 1 failed and a's export skipped", sum)
	}
	// What finished is kept: a second solve runs only what did not finish.
	e.exec.fail = nil
	sum, err = e.solve(t, t.Context(), solver.Options{})
	if err != nil || sum.Cached < 5 {
		t.Fatalf("after the failure: %+v, %v; want the base cached", sum, err)
	}
	var failedLog bool
	for _, ev := range e.events {
		failedLog = failedLog || ev.Type == solver.EventLog
	}
	if !failedLog {
		t.Error("no log events")
	}
}

// Independent branches run at once: with -j 2, a's and b's first jobs must both
// start before either finishes.
func TestSolveParallel(t *testing.T) {
	e := newEnv(t)
	if _, err := e.solve(t, t.Context(), solver.Options{}, "base"); err != nil {
		t.Fatal(err)
	}
	e.exec.block = make(chan struct{})
	e.exec.start = make(chan *graph.Node)
	done := make(chan error, 1)
	go func() {
		_, err := e.solve(t, t.Context(), solver.Options{Jobs: 2}, "a", "b")
		done <- err
	}()
	started := map[string]bool{}
	deadline := time.After(time.Minute) // a guard against a deadlock, not a timing
	for len(started) < 2 {
		select {
		case n := <-e.exec.start:
			started[n.Image] = true
		case <-deadline:
			t.Fatalf("only %v started; the branches do not run in parallel", started)
		}
	}
	close(e.exec.block)
	go func() {
		for range e.exec.start {
		}
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Cancelling a solve stops the running job, records nothing for it, and keeps what
// finished.
func TestSolveCancel(t *testing.T) {
	e := newEnv(t)
	if _, err := e.solve(t, t.Context(), solver.Options{}, "base"); err != nil {
		t.Fatal(err)
	}
	e.exec.block = make(chan struct{})
	e.exec.start = make(chan *graph.Node, 10)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-e.exec.start; cancel() }()
	sum, err := e.solve(t, ctx, solver.Options{Jobs: 1}, "a")
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "interrupted") {
		t.Fatalf("cancelled solve = %v, want interrupted, context.Canceled", err)
	}
	if sum.Executed != 0 || sum.Failed != 0 || sum.Interrupted != 1 {
		t.Fatalf("cancelled solve: %+v, want 1 interrupted, none executed or failed", sum)
	}
	e.exec.block = nil
	sum, err = e.solve(t, t.Context(), solver.Options{}, "a")
	if err != nil || sum.Cached != 5 || sum.Executed != 2 {
		t.Fatalf("after cancel: %+v, %v", sum, err)
	}
	if rep, _ := e.store.Verify(t.Context(), false); !rep.OK() {
		t.Fatalf("store after cancel: %+v", rep.Problems)
	}
}

// A cached solve leaves outputs that are in place alone, and writes again those that
// were removed or changed by hand.
func TestSolveOutputsInPlace(t *testing.T) {
	e := newEnv(t)
	if _, err := e.solve(t, t.Context(), solver.Options{}); err != nil {
		t.Fatal(err)
	}
	qcow, motd := filepath.Join(e.out, "a/a.qcow2"), filepath.Join(e.out, "b/motd")
	old, err := os.Stat(qcow)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(motd)
	os.WriteFile(motd, []byte("edited by hand, same length?\n"), 0o644)

	var written []string
	sum, err := e.solve(t, t.Context(), solver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range e.events {
		if ev.Type == solver.EventOutput {
			written = append(written, ev.Path)
		}
	}
	if len(sum.Outputs) != 2 || len(written) != 2 {
		t.Fatalf("outputs %v, events for %v: every output is reported", sum.Outputs, written)
	}
	if cur, _ := os.Stat(qcow); !os.SameFile(old, cur) || !cur.ModTime().Equal(old.ModTime()) {
		t.Errorf("%s was written again though it was in place", qcow)
	}
	if got, _ := os.ReadFile(motd); string(got) != string(want) {
		t.Errorf("an output changed by hand was not written again: %q, want %q", got, want)
	}
	os.Remove(qcow)
	if _, err := e.solve(t, t.Context(), solver.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(qcow); err != nil {
		t.Errorf("a removed output was not written again: %v", err)
	}
}

// forgetRun removes the action record of image a's run step, the node before its
// export, as gc would collect it, and returns the graph, a's chain and that node.
func (e *env) forgetRun(t *testing.T) (*graph.Graph, []*graph.Node, *graph.Node) {
	t.Helper()
	g, err := lang.Compile(t.Context(), e.dir, lang.Options{Executor: e.exec.Identity()})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := g.Image("a")
	chain := graph.Chain(a.Final())
	run := chain[len(chain)-2]
	if err := os.Remove(filepath.Join(e.store.Dir(), "actions", run.Key.String()[:2], run.Key.String())); err != nil {
		t.Fatalf("remove the record of %s: %v", run.Label(), err)
	}
	return g, chain, run
}

// A solve whose images' last nodes are cached does not need the nodes before them:
// it neither reads their records nor runs them when they are gone (collected), and
// runs them again when a later step changes and needs their state.
func TestSolveUnneeded(t *testing.T) {
	e := newEnv(t)
	if _, err := e.solve(t, t.Context(), solver.Options{}); err != nil {
		t.Fatal(err)
	}
	_, _, run := e.forgetRun(t)
	sum, err := e.solve(t, t.Context(), solver.Options{})
	if err != nil || sum.Executed != 0 || sum.Cached != 9 {
		t.Fatalf("with a step before a cached one gone: %+v, %v; want nothing run", sum, err)
	}
	// a's export changes: its parent's state is needed, and rebuilt.
	os.WriteFile(filepath.Join(e.dir, "build.cue"), []byte(strings.Replace(repo, `format: "qcow2", dest: "a.qcow2"`, `format: "vmdk", dest: "a.vmdk"`, 1)), 0o644)
	sum, err = e.solve(t, t.Context(), solver.Options{})
	if err != nil || sum.Executed != 2 {
		t.Fatalf("after changing a's export: %+v, %v; want a's run and export executed", sum, err)
	}
	if got := e.reasons()[run.Label()]; got == "" {
		t.Errorf("no reason given for re-running %s: %v", run.Label(), e.reasons())
	}
}

// Need asks for a node the plan would skip (its child is cached): it is built
// again, the nodes before it are taken as cached and the node after it is left
// alone.
func TestSolveNeed(t *testing.T) {
	e := newEnv(t)
	if _, err := e.solve(t, t.Context(), solver.Options{}); err != nil {
		t.Fatal(err)
	}
	g, chain, run := e.forgetRun(t)
	sum, err := e.solve(t, t.Context(), solver.Options{Need: []graph.Key{run.Key}}, "a")
	if err != nil || sum.Executed != 1 || sum.Cached != len(chain)-2 {
		t.Fatalf("solve needing %s: %+v, %v; want it alone executed, the %d nodes before it cached", run.Label(), sum, err, len(chain)-2)
	}
	if _, err := solver.Cached(e.store, run); err != nil {
		t.Fatalf("%s after the solve that needed it: %v", run.Label(), err)
	}
	other, _ := g.Image("b")
	if _, err := e.solve(t, t.Context(), solver.Options{Need: []graph.Key{other.Final().Key}}, "a"); err == nil || !strings.Contains(err.Error(), "not one of the images' nodes") {
		t.Errorf("a solve of a needing a node of b only: %v", err)
	}
}
