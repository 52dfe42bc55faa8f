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
