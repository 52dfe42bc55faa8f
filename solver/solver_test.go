package solver_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/solver/executortest"
)

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
	exec     *executortest.Fake // the build VM, counting calls
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
	e.exec = &executortest.Fake{Store: e.store}
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
	if sum.Executed != 9 || sum.Cached != 0 || e.exec.Count() != 9 {
		t.Fatalf("first solve: %+v, %d runs; want 9 executed", sum, e.exec.Count())
	}
	for k, c := range e.exec.Runs() {
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
	if err != nil || sum.Executed != 0 || sum.Cached != 9 || e.exec.Count() != 9 {
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
	if got := r["a[0] run \"echo A\" on root:1"]; !strings.Contains(got, `params changed`) || !strings.Contains(got, "echo a") {
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
	before := e.exec.Count()
	sum, err = e.solve(t, t.Context(), solver.Options{NoCache: true}, "a")
	if err != nil || sum.Executed != 7 || e.exec.Count() != before+7 {
		t.Fatalf("--no-cache a: %+v, %v", sum, err)
	}
}

func TestSolveFailure(t *testing.T) {
	e := newEnv(t)
	e.exec.Fail = func(n *graph.Node) error {
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
	if je.ExitCode != 1 {
		t.Errorf("the failure's exit status is %d; want the fake's 1", je.ExitCode)
	}
	if sum.Failed != 1 || sum.Skipped < 1 {
		t.Fatalf("summary %+v: want 1 failed and a's export skipped", sum)
	}
	// What finished is kept: a second solve runs only what did not finish.
	e.exec.Fail = nil
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
	e.exec.Block = make(chan struct{})
	e.exec.Started = make(chan *graph.Node)
	done := make(chan error, 1)
	go func() {
		_, err := e.solve(t, t.Context(), solver.Options{Jobs: 2}, "a", "b")
		done <- err
	}()
	started := map[string]bool{}
	deadline := time.After(time.Minute) // a guard against a deadlock, not a timing
	for len(started) < 2 {
		select {
		case n := <-e.exec.Started:
			started[n.Image] = true
		case <-deadline:
			t.Fatalf("only %v started; the branches do not run in parallel", started)
		}
	}
	close(e.exec.Block)
	go func() {
		for range e.exec.Started {
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
	e.exec.Block = make(chan struct{})
	e.exec.Started = make(chan *graph.Node, 10)
	ctx, cancel := context.WithCancel(t.Context())
	go func() { <-e.exec.Started; cancel() }()
	sum, err := e.solve(t, ctx, solver.Options{Jobs: 1}, "a")
	if !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "interrupted") {
		t.Fatalf("cancelled solve = %v, want interrupted, context.Canceled", err)
	}
	if sum.Executed != 0 || sum.Failed != 0 || sum.Interrupted != 1 {
		t.Fatalf("cancelled solve: %+v, want 1 interrupted, none executed or failed", sum)
	}
	e.exec.Block = nil
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

// With an executor that runs chains, each image's nodes that miss run as one
// chain after the node they build on, branches as chains of their own; the
// results are those of one run a node, and a failure keeps what came before it.
func TestSolveChains(t *testing.T) {
	plain, chained := newEnv(t), newEnv(t)
	chained.exec.Chain = true
	for _, e := range []*env{plain, chained} {
		sum, err := e.solve(t, t.Context(), solver.Options{Jobs: 1})
		if err != nil || sum.Executed != 9 || e.exec.Count() != 9 {
			t.Fatalf("chain %v: %+v, %v, %d runs; want 9 executed", e.exec.Chain, sum, err, e.exec.Count())
		}
	}
	// disk, base's 4 steps and a's 2 in one chain (a comes first), b's 2 in another.
	if got := chained.exec.Chains(); !slices.Equal(got, []int{7, 2}) {
		t.Errorf("chains of %v; want [7 2]", got)
	}
	if got := plain.exec.Chains(); len(got) != 0 {
		t.Errorf("the fake that does not chain ran chains %v", got)
	}
	for k := range plain.exec.Runs() {
		p, err1 := plain.store.GetAction(cas.ActionID(k))
		c, err2 := chained.store.GetAction(cas.ActionID(k))
		if err1 != nil || err2 != nil {
			t.Fatalf("node %s: records %v, %v", k.Short(), err1, err2)
		}
		if !slices.Equal(p.Outputs, c.Outputs) {
			t.Errorf("node %s: outputs %v alone, %v in a chain", k.Short(), p.Outputs, c.Outputs)
		}
	}

	// A failure inside a chain: what came before it is kept, the rest skipped.
	e := newEnv(t)
	e.exec.Chain = true
	e.exec.Fail = func(n *graph.Node) error {
		if strings.Contains(n.Label(), "echo a") {
			return errors.New("exit status 3")
		}
		return nil
	}
	sum, err := e.solve(t, t.Context(), solver.Options{Jobs: 1}, "a")
	var je *solver.JobError
	if !errors.As(err, &je) || !strings.Contains(je.Node.Label(), "echo a") || je.ExitCode != 1 {
		t.Fatalf("solve = %v, want the failure of a's run with exit status 1", err)
	}
	if sum.Executed != 5 || sum.Failed != 1 || sum.Skipped != 1 {
		t.Fatalf("summary %+v: want base's 5 executed, a's run failed, its export skipped", sum)
	}
	e.exec.Fail = nil
	sum, err = e.solve(t, t.Context(), solver.Options{}, "a")
	if err != nil || sum.Cached != 5 || sum.Executed != 2 {
		t.Fatalf("after the failure: %+v, %v; want the base cached, a's 2 run", sum, err)
	}
}

// With a tracer provider set (vmb solve --trace), a solve makes a span, its plan
// one under it, and every node that runs one under it (chained or not), each with
// a record span under it.
func TestSolveTrace(t *testing.T) {
	sr := tracetest.NewSpanRecorder()
	prev := otel.GetTracerProvider()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr)))
	t.Cleanup(func() { otel.SetTracerProvider(prev) })
	e := newEnv(t)
	e.exec.Chain = true
	if _, err := e.solve(t, t.Context(), solver.Options{}); err != nil {
		t.Fatal(err)
	}
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range sr.Ended() {
		name := s.Name()
		if strings.HasPrefix(name, "job ") {
			name = "job"
		}
		byName[name] = append(byName[name], s)
	}
	if len(byName["solve"]) != 1 || len(byName["plan"]) != 1 || len(byName["job"]) != 9 || len(byName["record"]) != 9 {
		t.Fatalf("spans: %d solve, %d plan, %d job, %d record; want 1, 1, 9, 9", len(byName["solve"]), len(byName["plan"]), len(byName["job"]), len(byName["record"]))
	}
	root := byName["solve"][0].SpanContext().SpanID()
	if byName["plan"][0].Parent().SpanID() != root {
		t.Error("the plan span is not the solve's child")
	}
	jobs := map[string]bool{}
	for _, s := range byName["job"] {
		if s.Parent().SpanID() != root {
			t.Errorf("span %s is not the solve's child", s.Name())
		}
		jobs[s.SpanContext().SpanID().String()] = true
	}
	for _, s := range byName["record"] {
		if !jobs[s.Parent().SpanID().String()] {
			t.Errorf("a record span's parent is no job span")
		}
	}
}
