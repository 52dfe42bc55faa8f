package solver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"slices"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// Verdicts of a check.
const (
	Reproducible = "reproducible" // the rebuild gave the recorded outputs, bit for bit
	Differs      = "differs"      // it did not
	NotRecorded  = "not-recorded" // nothing to compare with: the node, or its parent, was never built
	CheckFailed  = "failed"       // the rebuild failed (or could not run)
	NotChecked   = "not-checked"  // after an earlier difference in its image, or outside the sample
)

// CheckOptions tunes Check.
type CheckOptions struct {
	// From is the index of the first step of each image to check; earlier
	// steps (and the disks an image declares) are taken as recorded. 0 checks
	// them all.
	From int
	// Sample, if > 0, checks that many nodes drawn at random (Seed) from those
	// selected, rather than all.
	Sample int
	Seed   uint64
	// KeepGoing goes on past a difference: later nodes are rebuilt from the
	// recorded state, as every node is, so each verdict is its own.
	KeepGoing bool
	// Log receives each rebuild's log.
	Log io.Writer
	// Each is called with every node's verdict as it is known.
	Each func(CheckResult)
}

// CheckResult is one node's verdict.
type CheckResult struct {
	Node    *graph.Node
	Verdict string
	// Differing names the outputs that differ ("disk:root", "file:x.img"),
	// with the recorded and the rebuilt digests.
	Differing []OutputDiff
	Err       error
}

// OutputDiff is one output of a node whose rebuild differs from its record.
type OutputDiff struct {
	Name              string
	Recorded, Rebuilt cas.Digest
}

// CheckRef is the name of the ref that keeps the rebuilt outputs of node k, so
// that they survive gc and vmb diff can compare them with the recorded ones again.
func CheckRef(k graph.Key) string { return "check/" + k.String() }

// Check rebuilds the nodes of the images (all when none are named) without using
// their cached results, each from its recorded input state (its parent's recorded
// outputs), and compares what the rebuild gives with the record. A node whose
// outputs differ keeps its rebuilt outputs under CheckRef. It stops descending an
// image at its first difference unless opt.KeepGoing. Nothing recorded is
// changed. The error is for a check that could not go on (ctx done); the verdicts
// say the rest.
func (s *Solver) Check(ctx context.Context, g *graph.Graph, opt CheckOptions, images ...string) ([]CheckResult, error) {
	sel := map[graph.Key]bool{}
	for _, im := range g.Images {
		if len(images) > 0 && !slices.Contains(images, im.Name) {
			continue
		}
		for _, st := range im.Steps {
			if st.Index >= opt.From || opt.From == 0 {
				sel[st.Node.Key] = true
			}
		}
	}
	var order []*graph.Node // parents before children
	for _, n := range g.Nodes {
		if _, ok := sel[n.Key]; ok {
			order = append(order, n)
		}
	}
	for _, name := range images {
		if !slices.ContainsFunc(g.Images, func(im *graph.Image) bool { return im.Name == name }) {
			return nil, fmt.Errorf("no image %q", name)
		}
	}
	if opt.Sample > 0 && opt.Sample < len(order) {
		r := rand.New(rand.NewPCG(opt.Seed, opt.Seed))
		keep := map[graph.Key]bool{}
		for _, i := range r.Perm(len(order))[:opt.Sample] {
			keep[order[i].Key] = true
		}
		for k := range sel {
			sel[k] = keep[k]
		}
	}
	log := opt.Log
	if log == nil {
		log = io.Discard
	}
	var out []CheckResult
	report := func(r CheckResult) {
		out = append(out, r)
		if opt.Each != nil {
			opt.Each(r)
		}
	}
	broken := map[graph.Key]bool{} // nodes that differ, and so do all after them
	for _, n := range order {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if !sel[n.Key] || (!opt.KeepGoing && n.Parent != nil && broken[n.Parent.Key]) {
			if n.Parent != nil && broken[n.Parent.Key] {
				broken[n.Key] = true
			}
			report(CheckResult{Node: n, Verdict: NotChecked})
			continue
		}
		r := s.check1(ctx, n, log)
		if r.Verdict == Differs || r.Verdict == CheckFailed {
			broken[n.Key] = true
		}
		report(r)
	}
	return out, nil
}

// check1 rebuilds one node from its parent's recorded state.
func (s *Solver) check1(ctx context.Context, n *graph.Node, log io.Writer) CheckResult {
	rec, err := Cached(s.store, n)
	if errors.Is(err, cas.ErrNotFound) {
		return CheckResult{Node: n, Verdict: NotRecorded}
	}
	if err != nil {
		return CheckResult{Node: n, Verdict: CheckFailed, Err: err}
	}
	in := State{Disks: map[string]cas.Digest{}}
	if n.Parent != nil {
		parent, err := Cached(s.store, n.Parent)
		if errors.Is(err, cas.ErrNotFound) {
			return CheckResult{Node: n, Verdict: NotRecorded, Err: fmt.Errorf("its parent %s has no record", n.Parent.Label())}
		}
		if err != nil {
			return CheckResult{Node: n, Verdict: CheckFailed, Err: err}
		}
		in.Disks = parent.Disks
	}
	fmt.Fprintf(log, "== check %s\n", n.Label())
	disks, files, err := s.exec.Run(ctx, n, maps.Clone(in.Disks), log)
	if err != nil {
		return CheckResult{Node: n, Verdict: CheckFailed, Err: err}
	}
	var diffs []OutputDiff
	compare := func(prefix string, want, got map[string]cas.Digest) {
		for _, name := range sortedKeys(union(want, got)) {
			if want[name] != got[name] {
				diffs = append(diffs, OutputDiff{Name: prefix + name, Recorded: want[name], Rebuilt: got[name]})
			}
		}
	}
	compare("disk:", rec.Disks, disks)
	compare("file:", rec.Files, files)
	if len(diffs) == 0 {
		return CheckResult{Node: n, Verdict: Reproducible}
	}
	ref := &cas.Ref{}
	for _, d := range diffs {
		if d.Rebuilt.IsZero() {
			continue
		}
		kind := cas.KindBlob
		if _, ok := disks[d.Name[len("disk:"):]]; ok && d.Name[:5] == "disk:" {
			kind = cas.KindSnapshot
		}
		ref.Outputs = append(ref.Outputs, cas.Output{Name: d.Name, Kind: kind, Digest: d.Rebuilt})
	}
	if err := s.store.SetRef(CheckRef(n.Key), ref); err != nil {
		return CheckResult{Node: n, Verdict: Differs, Differing: diffs, Err: fmt.Errorf("keep the rebuilt outputs: %w", err)}
	}
	return CheckResult{Node: n, Verdict: Differs, Differing: diffs}
}

func union(a, b map[string]cas.Digest) map[string]cas.Digest {
	u := maps.Clone(a)
	maps.Copy(u, b)
	return u
}
