package solver

import (
	"context"
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

// Executor runs one job. It reads the input state's snapshots from the store and
// ingests its results into it, so the solver deals only in digests. It must not
// leave a process or a temp file behind, whatever happens, and must stop when ctx
// is cancelled.
type Executor interface {
	// Identity names the executor in every key: the appliance digest and the agent
	// protocol version. Nothing host-specific.
	Identity() string
	// Run runs node n's job on state in, writing its log to log.
	Run(ctx context.Context, n *graph.Node, in State, log io.Writer) (*Result, error)
}

// JobError is a job that ran and failed, as opposed to an executor that could not
// run it.
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
