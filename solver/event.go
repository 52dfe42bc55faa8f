package solver

import (
	"strings"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// EventType says what happened.
type EventType string

const (
	EventPlan    EventType = "plan"    // the node is cached, or will run (Reason says why)
	EventCached  EventType = "cached"  // the node's result was taken from the cache
	EventStart   EventType = "start"   // the node's job started
	EventLog     EventType = "log"     // a line of the job's log
	EventDone    EventType = "done"    // the job succeeded and its result was recorded
	EventFailed  EventType = "failed"  // the job failed (Err)
	EventSkipped EventType = "skipped" // not run: a node before it failed, or the build was stopped
	// EventInterrupted: the job was stopped because the solve was (Ctrl-C, SIGTERM);
	// nothing of it was recorded.
	EventInterrupted EventType = "interrupted"
	EventOutput      EventType = "output" // an output file was written (Path)
)

// Event is one step of a solve's progress.
type Event struct {
	Type     EventType
	Node     *graph.Node
	Cached   bool
	Reason   string
	Line     string
	Duration time.Duration
	Err      *JobError
	Log      cas.Digest
	Path     string
}

// lineWriter cuts a stream into lines for log events.
type lineWriter struct {
	emit    func(string)
	partial []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			break
		}
		w.emit(strings.TrimRight(string(w.partial[:i]), "\r"))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (w *lineWriter) flush() {
	if len(w.partial) > 0 {
		w.emit(string(w.partial))
		w.partial = nil
	}
}
