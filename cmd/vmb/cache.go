package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"vmb.dev/vmb/cas"
)

func runCache(e *env, args []string) int {
	subs := map[string]func(*env, []string) int{
		"stats":       cacheStats,
		"verify":      cacheVerify,
		"gc":          cacheGC,
		"ingest":      cacheIngest,
		"materialize": cacheMaterialize,
		"sync":        cacheSync,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		fmt.Fprintln(e.stderr, "usage: vmb cache stats|verify|gc|ingest|materialize|sync [flags]")
		return exitInvalid
	}
	return subs[args[0]](e, args[1:])
}

// cacheFlags are the flags every cache subcommand takes.
type cacheFlags struct {
	dir  string
	json bool
}

func (c *cacheFlags) register(e *env, name, usage string) *flag.FlagSet {
	fs := newFlags(e, name, usage)
	fs.StringVar(&c.dir, "cache", "", "cache directory (default $VMB_CACHE, $XDG_CACHE_HOME/vmb or ~/.cache/vmb)")
	fs.BoolVar(&c.json, "json", false, "print a JSON object instead of text")
	return fs
}

// open opens the cache the flags name.
func (c *cacheFlags) open(e *env) (*cas.Store, bool) {
	dir := c.dir
	if dir == "" {
		var err error
		if dir, err = cas.DefaultDir(e.getenv); err != nil {
			fmt.Fprintln(e.stderr, "vmb:", err)
			return nil, false
		}
	}
	s, err := cas.Open(dir)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return nil, false
	}
	return s, true
}

// printJSON writes v as indented JSON on stdout.
func printJSON(e *env, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(e.stdout, "%s\n", b)
}

// signalContext is cancelled by Ctrl-C or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func cacheStats(e *env, args []string) int {
	var c cacheFlags
	fs := c.register(e, "cache stats", "[--cache DIR] [--json]")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	s, ok := c.open(e)
	if !ok {
		return exitFailed
	}
	st, err := s.Stats()
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	if c.json {
		printJSON(e, st)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "cache       %s\n", st.Dir)
	fmt.Fprintf(e.stdout, "objects     %d (%s stored)\n", st.Objects, formatSize(st.ObjectBytes))
	fmt.Fprintf(e.stdout, "actions     %d (%s)\n", st.Actions, formatSize(st.ActionBytes))
	fmt.Fprintf(e.stdout, "staging     %d (%s)\n", st.Temps, formatSize(st.TempBytes))
	fmt.Fprintf(e.stdout, "quarantined %d\n", st.Quarantined)
	return exitOK
}

func cacheVerify(e *env, args []string) int {
	var c cacheFlags
	fs := c.register(e, "cache verify", "[--cache DIR] [--json] [--no-quarantine]")
	noQuarantine := fs.Bool("no-quarantine", false, "report problems but move nothing")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	s, ok := c.open(e)
	if !ok {
		return exitFailed
	}
	ctx, cancel := signalContext()
	defer cancel()
	rep, err := s.Verify(ctx, !*noQuarantine)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	if c.json {
		printJSON(e, rep)
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintf(e.stdout, "%s: %s\n", p.Path, p.Error)
			if p.Quarantined != "" {
				fmt.Fprintf(e.stdout, "\tmoved to %s\n", p.Quarantined)
			}
		}
		verdict := "ok"
		if !rep.OK() {
			verdict = fmt.Sprintf("%d problems", len(rep.Problems))
		}
		fmt.Fprintf(e.stdout, "verified %d blobs and %d action records: %s\n", rep.Objects, rep.Actions, verdict)
	}
	if !rep.OK() {
		return exitFailed
	}
	return exitOK
}

func cacheGC(e *env, args []string) int {
	var c cacheFlags
	fs := c.register(e, "cache gc", "[--cache DIR] [--json] [--max-size SIZE] [--dry-run]")
	var opt cas.GCOptions
	fs.Var((*sizeValue)(&opt.MaxSize), "max-size", "keep at most SIZE of objects (e.g. 20GiB); default: remove only what nothing reaches")
	fs.BoolVar(&opt.DryRun, "dry-run", false, "report what would be removed, remove nothing")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	s, ok := c.open(e)
	if !ok {
		return exitFailed
	}
	ctx, cancel := signalContext()
	defer cancel()
	rep, err := s.GC(ctx, opt)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	if c.json {
		printJSON(e, rep)
		return exitOK
	}
	verb := "removed"
	if opt.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(e.stdout, "%s %d action records, %d objects (%s), %d staging files\n",
		verb, rep.RemovedActions, rep.RemovedObjects, formatSize(rep.RemovedBytes), rep.RemovedTemps)
	fmt.Fprintf(e.stdout, "kept %d action records, %d objects (%s)\n", rep.KeptActions, rep.KeptObjects, formatSize(rep.KeptBytes))
	if c := rep.Compacted; c.Objects > 0 {
		fmt.Fprintf(e.stdout, "compressed %d objects from %s to %s\n", c.Objects, formatSize(c.BytesBefore), formatSize(c.BytesAfter))
	}
	return exitOK
}

func cacheIngest(e *env, args []string) int {
	var c cacheFlags
	fs := c.register(e, "cache ingest", "[--cache DIR] [--json] [--chunk-size SIZE] [--defer-compression] DISK")
	var opt cas.IngestOptions
	fs.Var((*sizeValue)(&opt.ChunkSize), "chunk-size", "chunk size of the snapshot (a power of two; default 256KiB)")
	fs.BoolVar(&opt.DeferCompression, "defer-compression", false, "store new chunks uncompressed; vmb cache gc compresses them later")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitInvalid
	}
	s, ok := c.open(e)
	if !ok {
		return exitFailed
	}
	ctx, cancel := signalContext()
	defer cancel()
	d, st, err := s.IngestDisk(ctx, fs.Arg(0), opt)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	if c.json {
		printJSON(e, struct {
			Snapshot cas.Digest `json:"snapshot"`
			cas.IngestStats
		}{d, st})
		return exitOK
	}
	fmt.Fprintf(e.stdout, "%s\n", d)
	fmt.Fprintf(e.stderr, "size %s, read %s, %d chunks, %d new (%s, %s stored)\n", formatSize(st.Size),
		formatSize(st.ReadBytes), st.Chunks, st.NewChunks, formatSize(st.NewBytes), formatSize(st.StoredBytes))
	return exitOK
}

func cacheMaterialize(e *env, args []string) int {
	var c cacheFlags
	fs := c.register(e, "cache materialize", "[--cache DIR] SNAPSHOT FILE")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return exitInvalid
	}
	d, err := cas.ParseDigest(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb cache materialize:", err)
		return exitInvalid
	}
	s, ok := c.open(e)
	if !ok {
		return exitFailed
	}
	ctx, cancel := signalContext()
	defer cancel()
	if err := s.Materialize(ctx, d, fs.Arg(1)); err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	return exitOK
}

func cacheSync(e *env, args []string) int {
	var c cacheFlags
	fs := c.register(e, "cache sync", "[--cache DIR] [--json] --to DIR | --from DIR [ACTION-KEY...]")
	to := fs.String("to", "", "copy from the cache to this directory")
	from := fs.String("from", "", "copy from this directory into the cache")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if (*to == "") == (*from == "") {
		fmt.Fprintln(e.stderr, "vmb cache sync: give one of --to and --from")
		return exitInvalid
	}
	var ids []cas.ActionID
	for _, a := range fs.Args() {
		id, err := cas.ParseActionID(a)
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb cache sync:", err)
			return exitInvalid
		}
		ids = append(ids, id)
	}
	local, ok := c.open(e)
	if !ok {
		return exitFailed
	}
	other, err := cas.Open(*to + *from)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	src, dst := local, other
	if *from != "" {
		src, dst = other, local
	}
	ctx, cancel := signalContext()
	defer cancel()
	rep, err := cas.Sync(ctx, dst, src, ids)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	if c.json {
		printJSON(e, rep)
		return exitOK
	}
	fmt.Fprintf(e.stdout, "copied %d action records and %d objects (%s); %d records and %d objects were there\n",
		rep.Actions, rep.Objects, formatSize(rep.Bytes), rep.SkippedAction, rep.SkippedObject)
	return exitOK
}
