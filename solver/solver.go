package solver

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
	"vmb.dev/vmb/internal/tracing"
)

// Options configures a Solver.
type Options struct {
	Jobs    int    // jobs run at once; 0 means GOMAXPROCS
	NoCache bool   // run every node, still recording results
	DryRun  bool   // plan only
	OutDir  string // where images' outputs go; "" writes none
	// Need, when set, names the nodes to build instead of the images' final
	// states (vmb shell builds the state a step starts from, which a solve skips
	// when the steps after it are cached); nodes after them do not run. The
	// solve writes no outputs and records no last build then.
	Need []graph.Key
	// Events receives progress; it is called from many goroutines, one event at a time.
	Events func(Event)
	// Now replaces time.Now, for tests.
	Now func() time.Time
	// Remote, when set, is asked for the results the store misses, and told of
	// every result recorded (to push it).
	Remote Remote
}

// Remote is a shared cache behind the store (cas.Remotes): Lookup returns a
// trusted, complete record or an error (a miss); Pushed is told of each record the
// solve writes. Neither may block the solve for long or fail it.
type Remote interface {
	Lookup(ctx context.Context, a cas.ActionID) (*cas.Result, error)
	Pushed(a cas.ActionID)
}

// Solver plans and runs builds against a store through an executor.
type Solver struct {
	store *cas.Store
	exec  Executor
	opt   Options
	mu    sync.Mutex // serializes Events
}

// New returns a solver.
func New(store *cas.Store, exec Executor, opt Options) *Solver {
	if opt.Jobs <= 0 {
		opt.Jobs = runtime.GOMAXPROCS(0)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Solver{store: store, exec: exec, opt: opt}
}

func (s *Solver) emit(e Event) {
	if s.opt.Events == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opt.Events(e)
}

// Step is the plan for one node.
type Step struct {
	Node   *graph.Node
	Cached bool
	Reason string // why it runs
	result *Result
}

// Plan decides, for every node that builds the named images (all if none), whether
// its result is in the cache, and why not. Only results that are needed are looked
// up: those of each image's last node, of every node with an output, and of the
// parent of every node that runs. Walking from the last nodes back, a cached node
// makes the nodes before it unneeded: they count as cached without a look (their
// snapshots may even have been collected), so a no-op solve reads a few records an
// image, not one a step.
func (s *Solver) Plan(g *graph.Graph, images ...string) ([]*Step, error) {
	return s.plan(context.Background(), g, images...)
}

func (s *Solver) plan(ctx context.Context, g *graph.Graph, images ...string) ([]*Step, error) {
	nodes, err := g.Select(images...) // parents before children
	if err != nil {
		return nil, err
	}
	var last map[string]*lastBuild // read when a node misses
	reason := func(n *graph.Node) string {
		if last == nil {
			last = s.lastBuilds(g, images)
		}
		return s.reason(n, last)
	}
	needed := make(map[graph.Key]bool, len(nodes))
	for _, n := range nodes {
		needed[n.Key] = true
	}
	for _, n := range nodes {
		if n.Parent != nil && graph.Output(n.Parent.Job) == "" {
			needed[n.Parent.Key] = false // unless a child of it runs
		}
	}
	for _, im := range g.Images {
		if len(images) == 0 || slices.Contains(images, im.Name) {
			needed[im.Final().Key] = true // an image's state, though others build on it
		}
	}
	if len(s.opt.Need) > 0 {
		// Only the needed nodes and the chains before them.
		keep := map[graph.Key]bool{}
		for _, k := range s.opt.Need {
			i := slices.IndexFunc(nodes, func(n *graph.Node) bool { return n.Key == k })
			if i < 0 {
				return nil, fmt.Errorf("solve: node %s is not one of the images' nodes", k.Short())
			}
			for n := nodes[i]; n != nil && !keep[n.Key]; n = n.Parent {
				keep[n.Key] = true
			}
		}
		// (A new slice: nodes may be the graph's own.)
		nodes = slices.DeleteFunc(slices.Clone(nodes), func(n *graph.Node) bool { return !keep[n.Key] })
		clear(needed)
		for _, k := range s.opt.Need {
			needed[k] = true
		}
	}
	steps := make([]*Step, len(nodes))
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		st := &Step{Node: n}
		steps[i] = st
		if s.opt.NoCache {
			st.Reason = reason(n)
			continue
		}
		if !needed[n.Key] {
			st.Cached = true
			s.store.TouchAction(cas.ActionID(n.Key))
			continue
		}
		rec, err := s.store.GetAction(cas.ActionID(n.Key))
		if err != nil && s.opt.Remote != nil {
			rctx, span := tracing.Tracer().Start(ctx, "pull", trace.WithAttributes(attribute.String("vmb.node", n.Label())))
			rec, err = s.opt.Remote.Lookup(rctx, cas.ActionID(n.Key))
			span.SetAttributes(attribute.Bool("vmb.hit", err == nil))
			span.End()
		}
		if err == nil {
			if res, err := fromRecord(rec); err == nil {
				st.Cached, st.result = true, res
			}
		}
		if !st.Cached {
			st.Reason = reason(n)
			if n.Parent != nil {
				needed[n.Parent.Key] = true
			}
		}
	}
	return steps, nil
}

// interrupted is a solve's error when its context ended (Ctrl-C): what finished is
// kept, what was running is not. It unwraps to the context's error.
type interrupted struct{ cause error }

func (e interrupted) Error() string {
	return "interrupted: the jobs that finished are kept in the cache"
}
func (e interrupted) Unwrap() error { return e.cause }

// Summary says what a solve did.
type Summary struct {
	Executed int `json:"executed"`
	Cached   int `json:"cached"`
	Failed   int `json:"failed"`
	Skipped  int `json:"skipped"` // not run because a node before them failed
	// Interrupted counts the jobs stopped by the solve's interruption.
	Interrupted int           `json:"interrupted,omitempty"`
	Outputs     []string      `json:"outputs"`
	Duration    time.Duration `json:"duration"`
}

// Solve builds the named images (all if none): it runs every node whose result is not
// cached, in dependency order, independent branches in parallel, and writes the
// images' outputs. A failed node stops no running job but starts no new one; what
// finished is kept. It returns the first job's failure, if any, as a *JobError.
func (s *Solver) Solve(ctx context.Context, g *graph.Graph, images ...string) (sum *Summary, err error) {
	start := s.opt.Now()
	ctx, span := tracing.Tracer().Start(ctx, "solve", trace.WithAttributes(attribute.StringSlice("vmb.images", images)))
	defer func() {
		if sum != nil {
			span.SetAttributes(attribute.Int("vmb.executed", sum.Executed), attribute.Int("vmb.cached", sum.Cached),
				attribute.Int("vmb.failed", sum.Failed))
		}
		tracing.End(span, err)
	}()
	pctx, pspan := tracing.Tracer().Start(ctx, "plan")
	steps, err := s.plan(pctx, g, images...)
	pspan.SetAttributes(attribute.Int("vmb.nodes", len(steps)))
	tracing.End(pspan, err)
	if err != nil {
		return nil, err
	}
	sum = &Summary{Outputs: []string{}}
	for _, st := range steps {
		s.emit(Event{Type: EventPlan, Node: st.Node, Cached: st.Cached, Reason: st.Reason})
	}
	if s.opt.DryRun {
		for _, st := range steps {
			if st.Cached {
				sum.Cached++
			}
		}
		return sum, nil
	}

	type slot struct {
		done chan struct{}
		res  *Result // nil if the node failed or was skipped
	}
	slots := make(map[graph.Key]*slot, len(steps))
	for _, st := range steps {
		slots[st.Node.Key] = &slot{done: make(chan struct{}), res: st.result}
	}
	var (
		mu       sync.Mutex
		firstErr error
		stop     bool // a job failed: start no new one
	)
	skip := func(rest []*graph.Node) {
		mu.Lock()
		sum.Skipped += len(rest)
		mu.Unlock()
		for _, n := range rest {
			s.emit(Event{Type: EventSkipped, Node: n})
			close(slots[n.Key].done)
		}
	}
	sem := make(chan struct{}, s.opt.Jobs)
	var eg errgroup.Group
	for _, st := range steps {
		if st.Cached {
			sum.Cached++
			s.emit(Event{Type: EventCached, Node: st.Node})
			close(slots[st.Node.Key].done)
		}
	}
	for _, chain := range s.chains(steps) {
		eg.Go(func() error {
			first := chain[0]
			in := State{Disks: map[string]cas.Digest{}}
			if first.Parent != nil {
				ps := slots[first.Parent.Key]
				<-ps.done
				if ps.res == nil {
					skip(chain)
					return nil
				}
				in = ps.res.State
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				skip(chain)
				return nil
			}
			defer func() { <-sem }()
			mu.Lock()
			stopped := stop || ctx.Err() != nil
			mu.Unlock()
			if stopped {
				skip(chain)
				return nil
			}
			ran, err := s.runChain(ctx, chain, in, func(i int, res *Result) {
				mu.Lock()
				sum.Executed++
				mu.Unlock()
				sl := slots[chain[i].Key]
				sl.res = res
				close(sl.done)
			})
			if err == nil {
				return nil
			}
			mu.Lock()
			if ctx.Err() != nil {
				sum.Interrupted++
			} else {
				sum.Failed++
				stop = true
				if firstErr == nil {
					firstErr = err
				}
			}
			mu.Unlock()
			close(slots[chain[ran].Key].done)
			skip(chain[ran+1:])
			return nil
		})
	}
	eg.Wait()
	if ctx.Err() != nil && firstErr == nil {
		firstErr = interrupted{ctx.Err()}
	}
	// Outputs of every image whose nodes all finished, cached or not.
	led := openLedger(s.opt.OutDir)
	for _, im := range g.Images {
		if s.opt.OutDir == "" || len(s.opt.Need) > 0 {
			break
		}
		if len(images) > 0 && !slices.Contains(images, im.Name) {
			continue
		}
		paths, err := s.writeOutputs(im, led, func(k graph.Key) *Result { return slots[k].res })
		sum.Outputs = append(sum.Outputs, paths...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if err := led.save(); err != nil && firstErr == nil {
		firstErr = fmt.Errorf("record outputs: %w", err)
	}
	if firstErr == nil && len(s.opt.Need) == 0 {
		s.saveLastBuilds(g, images)
	}
	sum.Duration = s.opt.Now().Sub(start)
	return sum, firstErr
}

// chains groups the steps that run into chains, parents first: a node joins the
// chain of its parent when the parent runs too, the node is the parent's first
// child to run, and the executor (a Chainer) lets it. Every other node starts a
// chain of its own, so branches still run side by side.
func (s *Solver) chains(steps []*Step) [][]*graph.Node {
	c, _ := s.exec.(Chainer)
	var chains [][]*graph.Node
	ends := map[graph.Key]int{} // the chain a node ends, while no child has joined it
	for _, st := range steps {
		if st.Cached {
			continue
		}
		n := st.Node
		if c != nil && n.Parent != nil {
			if i, ok := ends[n.Parent.Key]; ok && c.Joins(chains[i], n) {
				delete(ends, n.Parent.Key)
				chains[i] = append(chains[i], n)
				ends[n.Key] = i
				continue
			}
		}
		chains = append(chains, []*graph.Node{n})
		ends[n.Key] = len(chains) - 1
	}
	return chains
}

// runChain runs a chain of nodes from state in, one executor call for them all
// when there are several, and records each node as it finishes, calling ok. It
// returns how many nodes finished and, if one failed (or the solve was
// interrupted), that node's error, as run returns it; the node is nodes[ran].
func (s *Solver) runChain(ctx context.Context, nodes []*graph.Node, in State, ok func(i int, res *Result)) (ran int, err error) {
	if len(nodes) == 1 {
		res, err := s.run(ctx, nodes[0], in)
		if err != nil {
			return 0, err
		}
		ok(0, res)
		return 1, nil
	}
	var cur *running
	recorded := false // done's error is one run has already reported
	err = s.exec.(Chainer).RunChain(ctx, nodes, in.Disks,
		func(i int) (context.Context, io.Writer) {
			cur = s.begin(ctx, nodes[i])
			return cur.ctx, cur.log
		},
		func(i int, disks, files map[string]cas.Digest) error {
			r := cur
			cur = nil
			res, err := s.finish(ctx, r, disks, files, nil)
			if err != nil {
				recorded = true
				return err
			}
			ok(i, res)
			ran = i + 1
			return nil
		})
	if err == nil || recorded {
		return ran, err
	}
	if cur == nil { // failed between two nodes: the next one's failure
		cur = s.begin(ctx, nodes[ran])
	}
	_, err = s.finish(ctx, cur, nil, nil, err)
	return ran, err
}

// run executes one node and records its result.
func (s *Solver) run(ctx context.Context, n *graph.Node, in State) (*Result, error) {
	r := s.begin(ctx, n)
	disks, files, err := s.exec.Run(r.ctx, n, in.Disks, r.log)
	return s.finish(ctx, r, disks, files, err)
}

// running is a node whose job has begun: its log so far, and its trace span.
type running struct {
	n     *graph.Node
	start time.Time
	buf   bytes.Buffer
	lines *lineWriter
	log   io.Writer // to buf and, line by line, to log events
	ctx   context.Context
	span  trace.Span
}

// begin says that node n starts, and starts its span.
func (s *Solver) begin(ctx context.Context, n *graph.Node) *running {
	r := &running{n: n, start: s.opt.Now()}
	r.ctx, r.span = tracing.Tracer().Start(ctx, "job "+n.Job.Kind(), trace.WithAttributes(
		attribute.String("vmb.node", n.Label()), attribute.String("vmb.key", n.Key.String())))
	r.lines = &lineWriter{emit: func(line string) { s.emit(Event{Type: EventLog, Node: n, Line: line}) }}
	r.log = io.MultiWriter(&r.buf, r.lines)
	s.emit(Event{Type: EventStart, Node: n})
	return r
}

// finish records the result of a node's job, or reports its failure (err), and
// says so.
func (s *Solver) finish(ctx context.Context, r *running, disks, files map[string]cas.Digest, err error) (*Result, error) {
	n := r.n
	r.lines.flush()
	res := &Result{State: State{Disks: disks}, Files: files}
	dur := s.opt.Now().Sub(r.start)
	logDigest, lerr := s.store.PutBytes(r.buf.Bytes())
	if err == nil && lerr != nil {
		err = fmt.Errorf("store log: %w", lerr)
	}
	if err == nil {
		_, span := tracing.Tracer().Start(r.ctx, "record")
		rec := toRecord(res, logDigest, dur, s.exec.Identity(), s.opt.Now())
		err = s.store.PutAction(cas.ActionID(n.Key), rec)
		if err == nil && s.opt.Remote != nil {
			s.opt.Remote.Pushed(cas.ActionID(n.Key))
		}
		tracing.End(span, err)
	}
	tracing.End(r.span, err)
	if err != nil {
		if ctx.Err() != nil {
			s.emit(Event{Type: EventInterrupted, Node: n, Duration: dur, Log: logDigest})
			return nil, interrupted{ctx.Err()}
		}
		je := jobError(n, err, r.buf.String())
		s.emit(Event{Type: EventFailed, Node: n, Duration: dur, Err: je, Log: logDigest})
		return nil, je
	}
	s.emit(Event{Type: EventDone, Node: n, Duration: dur, Log: logDigest})
	return res, nil
}

// writeOutputs writes the files an image's nodes produced to OutDir/<image>/<name>.
func (s *Solver) writeOutputs(im *graph.Image, led *ledger, result func(graph.Key) *Result) ([]string, error) {
	var paths []string
	for _, n := range graph.Chain(im.Final()) {
		name := graph.Output(n.Job)
		if name == "" {
			continue
		}
		res := result(n.Key)
		if res == nil {
			continue // failed or skipped
		}
		d, ok := res.Files[name]
		if !ok {
			return paths, fmt.Errorf("%s: the executor returned no output %q", n.Label(), name)
		}
		p := filepath.Join(s.opt.OutDir, im.Name, filepath.FromSlash(name))
		if !led.current(p, d) {
			if err := s.writeBlob(d, p); err != nil {
				return paths, fmt.Errorf("write output %s: %w", p, err)
			}
			led.wrote(p, d)
		}
		paths = append(paths, p)
		s.emit(Event{Type: EventOutput, Node: n, Path: p})
	}
	return paths, nil
}

// writeBlob writes blob d to path atomically, verifying it on the way: a blob that
// does not verify leaves path as it was.
func (s *Solver) writeBlob(d cas.Digest, path string) error {
	r, err := s.store.Open(d)
	if err != nil {
		return err
	}
	defer r.Close()
	return atomicfile.Write(path, 0o644, func(w io.Writer) error {
		_, err := io.Copy(w, r)
		return err
	})
}

// toRecord turns a job's result into an action record.
func toRecord(r *Result, log cas.Digest, dur time.Duration, executor string, now time.Time) *cas.Result {
	rec := &cas.Result{Log: log, Duration: dur, Executor: executor, Created: now.UTC()}
	for _, name := range sortedKeys(r.Disks) {
		rec.Outputs = append(rec.Outputs, cas.Output{Name: "disk:" + name, Kind: cas.KindSnapshot, Digest: r.Disks[name]})
	}
	for _, name := range sortedKeys(r.Files) {
		rec.Outputs = append(rec.Outputs, cas.Output{Name: "file:" + name, Kind: cas.KindBlob, Digest: r.Files[name]})
	}
	return rec
}

// fromRecord reads a job's result back from its action record.
func fromRecord(rec *cas.Result) (*Result, error) {
	r := &Result{State: State{Disks: map[string]cas.Digest{}}, Files: map[string]cas.Digest{}}
	for _, o := range rec.Outputs {
		switch {
		case strings.HasPrefix(o.Name, "disk:") && o.Kind == cas.KindSnapshot:
			r.Disks[strings.TrimPrefix(o.Name, "disk:")] = o.Digest
		case strings.HasPrefix(o.Name, "file:") && o.Kind == cas.KindBlob:
			r.Files[strings.TrimPrefix(o.Name, "file:")] = o.Digest
		default:
			return nil, fmt.Errorf("action record output %q (%s) is not a disk or a file", o.Name, o.Kind)
		}
	}
	return r, nil
}

func sortedKeys(m map[string]cas.Digest) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
