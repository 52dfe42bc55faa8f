package solver

import (
	"context"
	"errors"
	"io"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// State is an image's state between two jobs: a snapshot per disk.
type State struct {
	Disks map[string]cas.Digest `json:"disks"`
}

// Result is what a job produced: the disks' new state and the files it wrote to the
// output directory (stored as blobs, by output name).
type Result struct {
	State
	Files map[string]cas.Digest `json:"files,omitempty"`
}

// Executor runs one job. It deals only in digests, in terms an executor package
// satisfies without importing solver: it reads the input disks' snapshots from the
// store and ingests its results into it. It must not leave a process or a temp
// file behind, whatever happens, and must stop when ctx is cancelled.
// solver/executortest checks an executor against this contract.
type Executor interface {
	// Identity names the executor in every key: the appliance digest and the agent
	// protocol version. Nothing host-specific.
	Identity() string
	// Run runs node n's job on disks (a snapshot by disk name), writing its log to
	// log. It returns every disk after the job (those the job did not change as
	// they came) and the files the job wrote to its output directory (a blob by
	// output name), all in the store. It must not change the map it was given:
	// the solver hands one parent's disks to all its children. A job that ran and
	// failed is an error with a JobFailure in its chain.
	Run(ctx context.Context, n *graph.Node, disks map[string]cas.Digest, log io.Writer) (out, files map[string]cas.Digest, err error)
}

// JobFailure is how an executor says that a job ran and failed (a non-zero exit
// status, a build VM that did not finish), as opposed to an executor that could
// not run it. The solver finds one in an error's chain with errors.As: any error
// type with the method is one, so an executor need not import solver to make it.
// A failure that also has a method LogTail() string gives the last lines of the
// job's log, when the executor knows them better than the log it wrote.
type JobFailure interface {
	error
	ExitCode() int // the job's exit status; -1 when it reported none
}

// JobError is a job that failed, as the solver reports it (in events and as
// Solve's error): ExitCode -1 when the executor's error was no JobFailure, which
// is an executor that could not run the job.
type JobError struct {
	Node     *graph.Node
	ExitCode int
	Tail     string // the last lines of the job's log
	Err      error
}

func (e *JobError) Error() string {
	return e.Node.Label() + ": " + e.Err.Error()
}

func (e *JobError) Unwrap() error { return e.Err }

// jobError is the JobError of node n for the executor's error err, given the log
// the job wrote.
func jobError(n *graph.Node, err error, log string) *JobError {
	je := &JobError{Node: n, ExitCode: -1, Err: err, Tail: tail(log, 20)}
	var f JobFailure
	if errors.As(err, &f) {
		je.ExitCode = f.ExitCode()
	}
	var lt interface{ LogTail() string }
	if errors.As(err, &lt) && lt.LogTail() != "" {
		je.Tail = lt.LogTail()
	}
	return je
}

// Chainer is an Executor that runs a chain of nodes, each the parent of the
// next, for less than one Run each: vmexec runs a chain's jobs in one build VM,
// booted once. The solver runs the nodes of an image that miss as chains where
// the executor allows, and records each node as it finishes, so that a chain that
// fails keeps every result before the failure, as one Run a node would.
type Chainer interface {
	Executor
	// Joins reports whether node n, a child of the chain's last node, may run
	// in the same chain.
	Joins(chain []*graph.Node, n *graph.Node) bool
	// RunChain runs the nodes in order, the first on disks and each next one on
	// the disks the one before it returned, each as Run would run it alone (the
	// same disks and files). It calls start(i) as node i begins, for the writer
	// node i's log goes to and a context that carries node i's trace span (for
	// the spans of its phases; ctx alone stops the chain), and done(i, out,
	// files) once node i succeeded and before node i+1 begins; an error from done
	// ends the chain with that error. It returns the error of the node that
	// failed (as Run's), or nil when every node ran. The maps given to done are
	// the callee's to keep.
	RunChain(ctx context.Context, nodes []*graph.Node, disks map[string]cas.Digest,
		start func(i int) (context.Context, io.Writer), done func(i int, out, files map[string]cas.Digest) error) error
}
