package executortest

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// Fake stands in for the build VM where a test is about the solver, not about
// jobs: it "runs" a job by storing, for each disk the job uses, a snapshot named
// after the node's key (an empty disk whose size the key picks), and for its
// output a blob "output of <key>"; it counts its runs. It fails, with exit status
// 1, a job whose description holds FailMarker and any job Fail returns an error
// for. Fake passes Run.
type Fake struct {
	Store *cas.Store
	// Fail, if set, fails the jobs it returns an error for.
	Fail func(*graph.Node) error
	// Block, if set, makes every run wait on it (or on its context).
	Block chan struct{}
	// Started, if set, receives every run's node as it starts.
	Started chan *graph.Node
	// Chain makes the fake join every node but create-disk to its parent's chain
	// (Joins), to run it in RunChain as the real executor runs a chain in one VM.
	Chain bool

	mu     sync.Mutex
	runs   map[graph.Key]int
	chains []int // the length of each chain run
}

// Identity is the fake's identity in keys.
func (f *Fake) Identity() string { return "fake" }

// Run "runs" node n on disks.
func (f *Fake) Run(ctx context.Context, n *graph.Node, disks map[string]cas.Digest, log io.Writer) (map[string]cas.Digest, map[string]cas.Digest, error) {
	f.mu.Lock()
	if f.runs == nil {
		f.runs = map[graph.Key]int{}
	}
	f.runs[n.Key]++
	f.mu.Unlock()
	if f.Started != nil {
		f.Started <- n
	}
	if f.Block != nil {
		select {
		case <-f.Block:
		case <-ctx.Done():
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	fmt.Fprintf(log, "running %s\nsecond line\n", n.Label())
	if strings.Contains(n.Job.Describe(), FailMarker) {
		return nil, nil, failure{fmt.Errorf("%s: not found", FailMarker)}
	}
	if f.Fail != nil {
		if err := f.Fail(n); err != nil {
			return nil, nil, failure{err}
		}
	}
	out := maps.Clone(disks)
	if out == nil {
		out = map[string]cas.Digest{}
	}
	var used []string
	if cd, ok := n.Job.(*graph.CreateDisk); ok {
		used = append(used, cd.Disk)
		out[cd.Disk] = cas.Digest{}
	}
	u := n.Job.Uses()
	used = append(used, u.Disks...)
	for _, p := range append(u.Reads, u.Writes...) {
		used = append(used, p.Disk)
	}
	for _, disk := range used {
		if _, ok := out[disk]; !ok {
			return nil, nil, fmt.Errorf("disk %q has no snapshot", disk)
		}
		m := &cas.Manifest{Size: 1<<20 + int64(n.Key[0]) + int64(n.Key[1])<<8, ChunkSize: 65536}
		d, err := f.Store.PutBytes(m.Encode())
		if err != nil {
			return nil, nil, err
		}
		out[disk] = d
	}
	files := map[string]cas.Digest{}
	if name := graph.Output(n.Job); name != "" {
		d, err := f.Store.PutBytes([]byte("output of " + n.Key.String()))
		if err != nil {
			return nil, nil, err
		}
		files[name] = d
	}
	return out, files, nil
}

// Joins lets every node but create-disk join a chain when Chain is set.
func (f *Fake) Joins(chain []*graph.Node, n *graph.Node) bool {
	_, create := n.Job.(*graph.CreateDisk)
	return f.Chain && !create
}

// RunChain runs the nodes one after another, as Run runs each.
func (f *Fake) RunChain(ctx context.Context, nodes []*graph.Node, disks map[string]cas.Digest,
	start func(int) (context.Context, io.Writer), done func(int, map[string]cas.Digest, map[string]cas.Digest) error) error {
	f.mu.Lock()
	f.chains = append(f.chains, len(nodes))
	f.mu.Unlock()
	for i, n := range nodes {
		_, log := start(i)
		out, files, err := f.Run(ctx, n, disks, log)
		if err != nil {
			return err
		}
		if err := done(i, maps.Clone(out), files); err != nil {
			return err
		}
		disks = out
	}
	return nil
}

// Chains returns the length of every chain RunChain ran, in the order they began.
func (f *Fake) Chains() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.chains)
}

// Runs returns how many times each node ran.
func (f *Fake) Runs() map[graph.Key]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return maps.Clone(f.runs)
}

// Count returns how many runs there were.
func (f *Fake) Count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.runs {
		n += c
	}
	return n
}

// failure is a job the fake failed: a solver.JobFailure.
type failure struct{ err error }

func (e failure) Error() string { return e.err.Error() }
func (e failure) Unwrap() error { return e.err }
func (e failure) ExitCode() int { return 1 }
