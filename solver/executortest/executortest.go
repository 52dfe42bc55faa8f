// Package executortest checks an executor against the contract of
// solver.Executor, as go-containerregistry's validate.Image checks an image: Run
// is one check that every executor passes, the real one (vmexec, in its tests)
// and Fake, the stand-in solver's own tests count calls on. The jobs it runs are
// real graph jobs, so both run the same ones.
//
// Only tests import this package.
package executortest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/solver"
)

// FailMarker names the command of the job Run expects to fail: it exists nowhere,
// and Fake fails a job whose description holds it.
const FailMarker = "vmb-executortest-fails"

// Options fit Run to an executor.
type Options struct {
	// Processes, if set, lists the processes the executor still runs (qemu on
	// its temp directory, say): after a cancelled Run there must be none.
	Processes func() []string
	// CancelAfter is how long a job runs before Run cancels it to see it stop;
	// default one second.
	CancelAfter time.Duration
}

// prompt bounds how long Run may take to return once its context is cancelled.
const prompt = 15 * time.Second

// Run checks that x, whose results go to store, keeps the contract of
// solver.Executor:
//
//   - Identity is not empty and does not change;
//   - create-disk, then jobs on one of two disks, return every disk they were
//     given, the other one unchanged, as snapshots the store can read, and leave
//     the map they were given as it was;
//   - a job with an output returns that file, in the store;
//   - the same node on the same disks gives the same disks and files again;
//   - a job that fails (a command that does not exist) returns an error holding
//     a solver.JobFailure with a non-zero exit status;
//   - a context cancelled before or while a job runs makes Run return promptly
//     with an error that is context.Canceled, and leave no process behind;
//   - a Chainer's chain of the format, the hash and the failing run (as far as
//     Joins lets them join) gives each node the disks and files its Run gave,
//     reports each node as it starts and ends, in order, and ends at the failure
//     with a JobFailure, the node after it never started; a chain whose context
//     was cancelled stops as Run does.
func Run(t *testing.T, x solver.Executor, store *cas.Store, opt Options) {
	t.Helper()
	id := x.Identity()
	if id == "" {
		t.Fatal("Identity is empty")
	}
	c := &checker{t: t, x: x, store: store}

	created := c.must(nil, &graph.CreateDisk{Disk: "d", Size: 64 << 20}, map[string]cas.Digest{})
	c.disks(created, "d")
	both := c.must(created.n, &graph.CreateDisk{Disk: "e", Size: 16 << 20}, created.out)
	c.disks(both, "d", "e")
	c.unchanged(both, "d")

	format := c.must(both.n, &graph.Format{Place: graph.Place{Disk: "d"}, FS: "ext4"}, both.out)
	c.disks(format, "d", "e")
	c.unchanged(format, "e")
	if format.out["d"] == both.out["d"] {
		t.Errorf("%s returned disk d as it came", format.n.Label())
	}

	hash := c.must(format.n, &graph.Hash{Disk: "d", Algorithm: "sha256", Dest: "d.sha256"}, format.out)
	c.disks(hash, "d", "e")
	if d, ok := hash.files["d.sha256"]; !ok {
		t.Errorf("%s returned no file d.sha256, only %v", hash.n.Label(), hash.files)
	} else if b, err := store.Get(d); err != nil || len(b) == 0 {
		t.Errorf("%s: its file d.sha256 (%s) in the store: %q, %v", hash.n.Label(), d.Short(), b, err)
	}

	for _, s := range []*step{format, hash} {
		again := c.run(t.Context(), s.n, s.in)
		if again.err != nil {
			t.Fatalf("%s again: %v\n%s", s.n.Label(), again.err, again.log)
		}
		if !maps.Equal(again.out, s.out) || !maps.Equal(again.files, s.files) {
			t.Errorf("%s is not deterministic: disks %v then %v, files %v then %v", s.n.Label(), s.out, again.out, s.files, again.files)
		}
	}

	fail := c.run(t.Context(), graph.NewNode(id, format.n, &graph.Run{Root: graph.Place{Disk: "d"}, Mode: "chroot", Workdir: "/",
		Command: graph.Command{"/" + FailMarker}}, nil), format.out)
	var f solver.JobFailure
	switch {
	case fail.err == nil:
		t.Errorf("%s succeeded; want a job failure\n%s", fail.n.Label(), fail.log)
	case !errors.As(fail.err, &f):
		t.Errorf("%s: %v (%T), not a solver.JobFailure\n%s", fail.n.Label(), fail.err, fail.err, fail.log)
	case f.ExitCode() == 0:
		t.Errorf("%s: %v, a job failure with exit status 0", fail.n.Label(), fail.err)
	}

	if ch, ok := x.(solver.Chainer); ok {
		c.chain(ch, []*step{format, hash}, fail, opt)
	}

	if id2 := x.Identity(); id2 != id {
		t.Errorf("Identity changed from %q to %q", id, id2)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	c.cancelled(c.run(ctx, format.n, both.out), opt, time.Now())

	after := opt.CancelAfter
	if after == 0 {
		after = time.Second
	}
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	at := make(chan time.Time, 1)
	timer := time.AfterFunc(after, func() { at <- time.Now(); cancel() })
	s := c.run(ctx, format.n, both.out)
	if timer.Stop() {
		t.Logf("%s finished in %s, before it was cancelled: only a cancelled start was checked", s.n.Label(), s.took)
		return
	}
	c.cancelled(s, opt, <-at)
}

// step is one Run of the executor.
type step struct {
	n          *graph.Node
	in         map[string]cas.Digest
	out, files map[string]cas.Digest
	err        error
	log        string
	end        time.Time
	took       time.Duration
}

type checker struct {
	t     *testing.T
	x     solver.Executor
	store *cas.Store
}

// run runs node n on disks in, and checks that it left in alone.
func (c *checker) run(ctx context.Context, n *graph.Node, in map[string]cas.Digest) *step {
	c.t.Helper()
	given := maps.Clone(in)
	var log bytes.Buffer
	start := time.Now()
	out, files, err := c.x.Run(ctx, n, in, &log)
	s := &step{n: n, in: given, out: out, files: files, err: err, log: log.String(), end: time.Now()}
	s.took = s.end.Sub(start)
	if !maps.Equal(in, given) {
		c.t.Errorf("%s changed the disks it was given: %v, now %v", n.Label(), given, in)
	}
	return s
}

// must runs job j after parent on disks in, and fails the test if it fails.
func (c *checker) must(parent *graph.Node, j graph.Job, in map[string]cas.Digest) *step {
	c.t.Helper()
	s := c.run(c.t.Context(), graph.NewNode(c.x.Identity(), parent, j, nil), in)
	if s.err != nil {
		c.t.Fatalf("%s: %v\n%s", s.n.Label(), s.err, s.log)
	}
	return s
}

// disks checks that s returned exactly the named disks, as snapshots in the store.
func (c *checker) disks(s *step, names ...string) {
	c.t.Helper()
	if len(s.out) != len(names) {
		c.t.Errorf("%s returned disks %v; want %v", s.n.Label(), s.out, names)
	}
	for _, name := range names {
		d, ok := s.out[name]
		if !ok {
			c.t.Errorf("%s returned no disk %q: %v", s.n.Label(), name, s.out)
			continue
		}
		if _, err := c.store.Manifest(d); err != nil {
			c.t.Errorf("%s: disk %q's snapshot %s: %v", s.n.Label(), name, d.Short(), err)
		}
	}
}

// unchanged checks that s returned the named disk as it came.
func (c *checker) unchanged(s *step, name string) {
	c.t.Helper()
	if s.out[name] != s.in[name] {
		c.t.Errorf("%s changed disk %q, which it does not use: %s, now %s", s.n.Label(), name, s.in[name].Short(), s.out[name].Short())
	}
}

// cancelled checks a Run whose context was cancelled at the time given.
func (c *checker) cancelled(s *step, opt Options, at time.Time) {
	c.t.Helper()
	if !errors.Is(s.err, context.Canceled) {
		c.t.Errorf("%s with its context cancelled: %v; want context.Canceled", s.n.Label(), s.err)
	}
	if d := s.end.Sub(at); d > prompt {
		c.t.Errorf("%s returned %s after its context was cancelled", s.n.Label(), d.Round(time.Millisecond))
	}
	if opt.Processes != nil {
		if left := opt.Processes(); len(left) > 0 {
			c.t.Errorf("%s left processes running after it was cancelled: %v", s.n.Label(), left)
		}
	}
}

// chain runs the steps ok, then fail, then ok's first again, as one chain, as far
// as ch lets them join, and checks each node's result against its single Run.
func (c *checker) chain(ch solver.Chainer, ok []*step, fail *step, opt Options) {
	c.t.Helper()
	nodes := []*graph.Node{ok[0].n}
	for _, s := range ok[1:] {
		if !ch.Joins(nodes, s.n) {
			c.t.Logf("%s does not join a chain after %s: chains of %d checked", s.n.Label(), nodes[len(nodes)-1].Label(), len(nodes))
			break
		}
		nodes = append(nodes, s.n)
	}
	fails := len(nodes) == len(ok) && ch.Joins(nodes, fail.n)
	if fails {
		nodes = append(nodes, fail.n)
		// A node after the failure, which must not start.
		nodes = append(nodes, graph.NewNode(c.x.Identity(), fail.n, ok[0].n.Job, nil))
	}
	if len(nodes) < 2 {
		return
	}
	in := maps.Clone(ok[0].in)
	var started, finished []int
	var logs []*bytes.Buffer
	err := ch.RunChain(c.t.Context(), nodes, in,
		func(i int) (context.Context, io.Writer) {
			started = append(started, i)
			logs = append(logs, &bytes.Buffer{})
			return c.t.Context(), logs[len(logs)-1]
		},
		func(i int, out, files map[string]cas.Digest) error {
			finished = append(finished, i)
			if i < len(ok) && (!maps.Equal(out, ok[i].out) || !maps.Equal(files, ok[i].files)) {
				c.t.Errorf("%s in a chain: disks %v, files %v; alone: disks %v, files %v\n%s", nodes[i].Label(), out, files, ok[i].out, ok[i].files, logs[i])
			}
			return nil
		})
	if !maps.Equal(in, ok[0].in) {
		c.t.Errorf("RunChain changed the disks it was given: %v, now %v", ok[0].in, in)
	}
	wantStarted, wantDone := len(nodes), len(nodes)
	if fails {
		wantStarted, wantDone = len(ok)+1, len(ok)
		var f solver.JobFailure
		if !errors.As(err, &f) || f.ExitCode() == 0 {
			c.t.Errorf("a chain ending in %s: %v (%T); want a job failure with a non-zero exit status", fail.n.Label(), err, err)
		}
	} else if err != nil {
		c.t.Errorf("a chain of %d: %v", len(nodes), err)
	}
	if !slices.Equal(started, seq(wantStarted)) || !slices.Equal(finished, seq(wantDone)) {
		c.t.Errorf("a chain of %d (failing: %v) started %v and finished %v; want %v and %v", len(nodes), fails, started, finished, seq(wantStarted), seq(wantDone))
	}

	ctx, cancel := context.WithCancel(c.t.Context())
	cancel()
	err = ch.RunChain(ctx, nodes, in, func(int) (context.Context, io.Writer) { return ctx, io.Discard },
		func(int, map[string]cas.Digest, map[string]cas.Digest) error { return nil })
	c.cancelled(&step{n: nodes[0], err: err, end: time.Now()}, opt, time.Now())
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}
