package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/tracing"
	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/qemu"
)

func runSolve(e *env, args []string) int {
	fs := newFlags(e, "solve", "[flags] [DIR] [IMAGE...]")
	a := solveFlags(fs)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	var code int
	if a.dir, _, a.images, code = repository(e, "", fs.Args()); code >= 0 {
		return code
	}
	return solve(e, *a)
}

type solveArgs struct {
	cacheDir, out, progress, dir string
	repo                         string // the imported repository's name, if it was named so
	jobs                         int
	dryRun, noCache, verbose     bool
	vmPerJob                     bool
	trace                        string
	noApplianceBuild             bool
	images                       []string
	tags                         tagList
	remotes                      []string // --remote, in order
	push                         bool
	keys                         *remoteArgs
}

// solveFlags defines on fs the flags of vmb solve, which vmb build takes too, and
// returns where they are parsed to.
func solveFlags(fs *flag.FlagSet) *solveArgs {
	a := &solveArgs{}
	fs.StringVar(&a.cacheDir, "cache", "", cacheUsage)
	fs.StringVar(&a.out, "out", "out", "directory the images' outputs are written to")
	fs.IntVar(&a.jobs, "j", 0, "jobs run at once (default: the number of CPUs)")
	fs.BoolVar(&a.dryRun, "dry-run", false, "print the plan, run nothing")
	fs.BoolVar(&a.noCache, "no-cache", false, "run every node, still storing results")
	fs.StringVar(&a.progress, "progress", "auto", "progress output: auto (tty on a terminal, else plain), tty, plain or json")
	fs.BoolVar(&a.verbose, "x", false, "print each job's qemu command line")
	fs.BoolVar(&a.vmPerJob, "vm-per-job", false, "boot a build VM for every job, not one for each chain of jobs")
	fs.StringVar(&a.trace, "trace", "", "send an OpenTelemetry trace of the solve to `DEST`: an OTLP/HTTP collector's URL, or a file (JSON)")
	noApplianceBuildFlag(fs, &a.noApplianceBuild)
	fs.Var(&a.tags, "t", tagsUsage)
	fs.Func("remote", "look up what the cache misses in the remote at `URL` (a directory, http(s):// or s3://; repeatable, read in order)", func(v string) error {
		a.remotes = append(a.remotes, v)
		return nil
	})
	fs.BoolVar(&a.push, "push", false, "push the results of the jobs that run to every --remote")
	a.keys = remoteFlags(fs)
	return a
}

// openRemotes opens the remotes of a solve, or returns nil if there are none.
func openRemotes(ctx context.Context, e *env, store *cas.Store, a solveArgs) (*cas.Remotes, error) {
	if len(a.remotes) == 0 {
		return nil, nil
	}
	trust, key, err := a.keys.keys(e)
	if err != nil {
		return nil, err
	}
	rs := &cas.Remotes{Store: store, Trust: trust, Key: key, Push: a.push,
		Warn: func(err error) { fmt.Fprintln(e.stderr, "vmb: warning:", err) }}
	for _, u := range a.remotes {
		r, err := cas.OpenRemote(ctx, u)
		if err != nil {
			return nil, err
		}
		rs.Remotes = append(rs.Remotes, r)
	}
	store.SetFetch(rs.Fetch)
	return rs, nil
}

// noApplianceBuildFlag defines --no-appliance-build, which vmb solve, build and
// shell take.
func noApplianceBuildFlag(fs *flag.FlagSet, p *bool) {
	fs.BoolVar(p, "no-appliance-build", false, "fail if the cache has no appliance, instead of building one")
}

func solve(e *env, a solveArgs) int {
	mode, ok := progressMode(e, a.progress)
	if !ok {
		fmt.Fprintf(e.stderr, "vmb: --progress %q: want auto, tty, plain or json\n", a.progress)
		return exitInvalid
	}
	cfg, err := loadConfig(e)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitInvalid
	}
	if len(a.remotes) == 0 { // --remote replaces the config's remotes
		a.remotes, a.push = cfg.remotes, a.push || cfg.push
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if a.trace != "" {
		stop, err := tracing.Start(ctx, a.trace, vmbVersion())
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb:", err)
			return exitInvalid
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := stop(sctx); err != nil {
				fmt.Fprintln(e.stderr, "vmb: trace:", err)
			}
		}()
	}
	store, g, app, code := openPrepared(ctx, e, a.cacheDir, a.dir, a.tags, a.remotes, a.noApplianceBuild, a.dryRun)
	if code >= 0 {
		return code
	}
	rs, err := openRemotes(ctx, e, store, a)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitInvalid
	}
	var x solver.Executor = noExecutor{}
	if app == nil {
		fmt.Fprintf(e.stderr, "vmb: keys use a placeholder executor: no appliance in cache %s (a solve that runs a job builds one first)\n", store.Dir())
	} else {
		qx := &vmexec.Executor{Store: store, Appliance: app, KVM: qemu.KVMUsable(), Verbose: a.verbose, RepoDir: g.Dir, NoChain: a.vmPerJob,
			ReadAll: e.getenv("VMB_READ_WHOLE_DISKS") == "1"}
		defer qx.Close()
		x = qx
	}
	p := newProgress(e, mode, a)
	defer p.close()
	opt := solver.Options{Jobs: a.jobs, NoCache: a.noCache, DryRun: a.dryRun, OutDir: a.out, Events: p.event}
	if rs != nil {
		opt.Remote = rs
	}
	s := solver.New(store, x, opt)
	sum, err := s.Solve(ctx, g, a.images...)
	if rs != nil && a.push {
		rep := rs.Wait()
		fmt.Fprintf(e.stderr, "vmb: pushed %d action records and %d objects (%s)\n", rep.Actions, rep.Objects, graph.FormatSize(rep.Bytes))
	}
	if sum != nil {
		p.summary(sum, err)
	}
	if !a.dryRun {
		trimCache(ctx, e, store)
	}
	var je *solver.JobError
	switch {
	case errors.As(err, &je):
		return exitFailed
	case err != nil && sum == nil:
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitInvalid
	case err != nil:
		return exitFailed
	}
	return exitOK
}

// progressSink shows a solve's events.
type progressSink interface {
	event(solver.Event)
	// summary ends the display with the solve's summary and error.
	summary(*solver.Summary, error)
	// close ends the display if summary did not.
	close()
}

// progressMode resolves --progress: auto is tty when stderr is a terminal (and TERM
// is not dumb), else plain.
func progressMode(e *env, mode string) (string, bool) {
	switch mode {
	case "tty", "plain", "json":
		return mode, true
	case "auto":
		if _, ok := terminalFd(e.stderr); ok && e.getenv("TERM") != "dumb" {
			return "tty", true
		}
		return "plain", true
	}
	return "", false
}

func newProgress(e *env, mode string, a solveArgs) progressSink {
	hint := func(n *graph.Node) string { return shellCommand(a, n) }
	if mode == "tty" {
		p := newTTYProgress(e.stderr, time.Now, ttySize(e.stderr), hint, a.dryRun)
		p.run(100 * time.Millisecond)
		return p
	}
	return &progress{e: e, json: mode == "json", hint: hint}
}

// progress prints a solve's events as plain lines or JSON objects.
type progress struct {
	e    *env
	json bool
	hint func(*graph.Node) string // the vmb shell command for a failed node
	mu   sync.Mutex
}

func (p *progress) close() {}

type jsonEvent struct {
	Type     string  `json:"type"`
	Key      string  `json:"key,omitempty"`
	Node     string  `json:"node,omitempty"`
	Cached   bool    `json:"cached,omitempty"`
	Reason   string  `json:"reason,omitempty"`
	Line     string  `json:"line,omitempty"`
	Seconds  float64 `json:"seconds,omitempty"`
	Error    string  `json:"error,omitempty"`
	ExitCode int     `json:"exit_code,omitempty"`
	Path     string  `json:"path,omitempty"`
	Shell    string  `json:"shell,omitempty"` // failed: the vmb shell command that opens the state it started from
}

func (p *progress) event(ev solver.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		je := jsonEvent{Type: string(ev.Type), Cached: ev.Cached, Reason: ev.Reason, Line: ev.Line,
			Seconds: ev.Duration.Seconds(), Path: ev.Path}
		if ev.Node != nil {
			je.Key, je.Node = ev.Node.Key.String(), ev.Node.Label()
		}
		if ev.Err != nil {
			je.Error, je.ExitCode = ev.Err.Error(), ev.Err.ExitCode
			je.Shell = p.hint(ev.Node)
		}
		b, _ := json.Marshal(je)
		fmt.Fprintf(p.e.stdout, "%s\n", b)
		return
	}
	w := p.e.stderr
	switch ev.Type {
	case solver.EventPlan:
		if !ev.Cached {
			fmt.Fprintf(w, "plan    %s %s: %s\n", ev.Node.Key.Short(), ev.Node.Label(), ev.Reason)
		}
	case solver.EventCached:
		fmt.Fprintf(w, "cached  %s %s\n", ev.Node.Key.Short(), ev.Node.Label())
	case solver.EventStart:
		fmt.Fprintf(w, "run     %s %s\n", ev.Node.Key.Short(), ev.Node.Label())
	case solver.EventLog:
		fmt.Fprintf(w, "        │ %s\n", ev.Line)
	case solver.EventDone:
		fmt.Fprintf(w, "done    %s %s (%s)\n", ev.Node.Key.Short(), ev.Node.Label(), ev.Duration.Round(time.Millisecond))
	case solver.EventFailed:
		fmt.Fprintf(w, "FAILED  %s %s: %v\n", ev.Node.Key.Short(), ev.Node.Label(), ev.Err)
		if ev.Node.Pos != "" {
			fmt.Fprintf(w, "        defined at %s\n", ev.Node.Pos)
		}
		if ev.Err.Tail != "" {
			fmt.Fprintf(w, "        last lines of its log:\n        %s\n", strings.ReplaceAll(ev.Err.Tail, "\n", "\n        "))
		}
		if h := p.hint(ev.Node); h != "" {
			fmt.Fprintf(w, "        a shell on the state it started from: %s\n", h)
		}
	case solver.EventSkipped:
		fmt.Fprintf(w, "skipped %s %s\n", ev.Node.Key.Short(), ev.Node.Label())
	case solver.EventInterrupted:
		fmt.Fprintf(w, "stopped %s %s (%s): interrupted\n", ev.Node.Key.Short(), ev.Node.Label(), ev.Duration.Round(time.Millisecond))
	case solver.EventOutput:
		fmt.Fprintf(w, "output  %s\n", ev.Path)
	}
}

func (p *progress) summary(sum *solver.Summary, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.json {
		b, _ := json.Marshal(struct {
			Type string `json:"type"`
			*solver.Summary
			Error string `json:"error,omitempty"`
		}{"summary", sum, errString(err)})
		fmt.Fprintf(p.e.stdout, "%s\n", b)
		return
	}
	fmt.Fprintln(p.e.stderr, summaryLine(sum))
	if err != nil {
		fmt.Fprintln(p.e.stderr, "vmb:", err)
	}
}

// summaryLine is the last line of a plain or tty display.
func summaryLine(sum *solver.Summary) string {
	s := fmt.Sprintf("%d executed, %d cached, %d failed, %d skipped", sum.Executed, sum.Cached, sum.Failed, sum.Skipped)
	if sum.Interrupted > 0 {
		s += fmt.Sprintf(", %d interrupted", sum.Interrupted)
	}
	return s + " in " + sum.Duration.Round(time.Millisecond).String()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// trimCache lets the cache trim itself (cas.Store.Trim: at most once a day) to the
// budget $VMB_CACHE_BUDGET says ("off": never), cas.DefaultBudget when unset.
func trimCache(ctx context.Context, e *env, store *cas.Store) {
	budget := int64(cas.DefaultBudget)
	switch v := e.getenv("VMB_CACHE_BUDGET"); v {
	case "":
	case "off":
		return
	default:
		n, err := graph.ParseSize(v)
		if err != nil || n <= 0 {
			fmt.Fprintf(e.stderr, "vmb: $VMB_CACHE_BUDGET=%q: want a size such as 100GiB, or off; the cache was not trimmed\n", v)
			return
		}
		budget = n
	}
	rep, err := store.Trim(ctx, budget)
	switch {
	case err != nil:
		fmt.Fprintln(e.stderr, "vmb: trim the cache:", err)
	case rep != nil && rep.RemovedObjects+rep.RemovedActions > 0:
		fmt.Fprintf(e.stderr, "vmb: the cache trimmed itself to %s: %d records and %d objects (%s) removed\n",
			graph.FormatSize(budget), rep.RemovedActions, rep.RemovedObjects, graph.FormatSize(rep.RemovedBytes))
	}
}
