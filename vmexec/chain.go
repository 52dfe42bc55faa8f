package vmexec

import (
	"context"
	"io"
	"maps"
	"os"
	"slices"

	"go.opentelemetry.io/otel/trace"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// Joins reports whether node n may run in the same chain as the nodes before it
// (solver.Chainer): jobs in the appliance, and hash and export, which read the
// disks on the host while the VM waits. A job that makes or resizes a disk, or
// writes it on the host (dd), ends a chain, as does a boot-mode run; so does a
// network setting other than the chain's, which is the VM's.
func (x *Executor) Joins(chain []*graph.Node, n *graph.Node) bool {
	if x.NoChain || !chainable(n) {
		return false
	}
	for _, c := range chain {
		if !chainable(c) || inVM(c) && inVM(n) && network(c) != network(n) {
			return false
		}
	}
	return true
}

func chainable(n *graph.Node) bool {
	switch j := n.Job.(type) {
	case *graph.CreateDisk, *graph.ResizeDisk, *graph.DD:
		return false
	case *graph.Run:
		return j.Mode != "boot"
	}
	return true
}

// inVM reports whether a chainable node's job runs in the appliance.
func inVM(n *graph.Node) bool { return hostReads(n) == "" }

// hostReads is the disk a job that reads it on the host (hash, export) reads;
// "" for every other job.
func hostReads(n *graph.Node) string {
	switch j := n.Job.(type) {
	case *graph.Hash:
		return j.Disk
	case *graph.Export:
		return j.Disk
	}
	return ""
}

func network(n *graph.Node) graph.Network {
	if r, ok := n.Job.(*graph.Run); ok {
		return r.Network
	}
	return graph.NoNetwork
}

// RunChain runs a chain of nodes (see Joins) in one boot of the appliance
// (solver.Chainer): the disks are materialized once, the VM boots for the first
// job in it, and after each job the host ingests the disks while the VM waits,
// then lets it run the next one. Hash and export run on the host between two
// jobs, on the same raw disks.
func (x *Executor) RunChain(ctx context.Context, nodes []*graph.Node, disks map[string]cas.Digest,
	start func(int) (context.Context, io.Writer), done func(int, map[string]cas.Digest, map[string]cas.Digest) error) error {
	work, err := os.MkdirTemp(x.tmpDir(), "vmb-chain-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	cur := maps.Clone(disks)
	names := slices.Sorted(maps.Keys(cur))
	paths := map[string]string{}
	var (
		s       *session
		first   int   // the node of the session's first job
		held    int   // how many jobs the session holds
		heldErr error // why the node after them could not join
	)
	defer func() { s.release() }()
	for i, n := range nodes {
		nctx, log := start(i)
		if err := ctx.Err(); err != nil {
			return err
		}
		// ctx stops the chain; nctx carries node i's span, for its phases'.
		sctx := trace.ContextWithSpan(ctx, trace.SpanFromContext(nctx))
		if i == 0 {
			for _, name := range names {
				p, err := x.materialize(sctx, work, name, cur[name])
				if err != nil {
					return err
				}
				paths[name] = p
			}
		}
		var files map[string]cas.Digest
		if disk := hostReads(n); disk != "" {
			if files, err = x.hostRead(sctx, work, n, paths[disk], log); err != nil {
				return err
			}
		} else {
			if s == nil {
				var vmNodes []*graph.Node
				for _, m := range nodes[i:] {
					if inVM(m) {
						vmNodes = append(vmNodes, m)
					}
				}
				first = i
				if s, held, heldErr = x.newSession(ctx, work, vmNodes, names, paths, nil); s == nil {
					return heldErr
				}
			}
			k := vmIndex(nodes[first:i])
			if k >= held {
				return heldErr
			}
			if files, err = s.run(sctx, k, log); err != nil {
				return err
			}
			if err := x.storeDisks(sctx, names, paths, cur, s.written, log); err != nil {
				return err
			}
		}
		if err := done(i, maps.Clone(cur), files); err != nil {
			return err
		}
	}
	s.release()
	for _, name := range names {
		x.keep(cur[name], paths[name])
	}
	return nil
}

// vmIndex counts the jobs in the appliance among nodes.
func vmIndex(nodes []*graph.Node) int {
	k := 0
	for _, n := range nodes {
		if inVM(n) {
			k++
		}
	}
	return k
}
