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
	"vmb.dev/vmb/graph"
)

func runCache(e *env, args []string) int {
	subs := map[string]func(*env, []string) int{
		"stats":       cacheStats,
		"verify":      cacheVerify,
		"gc":          cacheGC,
		"ingest":      cacheIngest,
		"materialize": cacheMaterialize,
		"sync":        cacheSync,
		"push":        cachePush,
		"pull":        cachePull,
	}
	if len(args) == 0 || subs[args[0]] == nil {
		fmt.Fprintln(e.stderr, "usage: vmb cache stats|verify|gc|ingest|materialize|sync|push|pull [flags]")
		return exitInvalid
	}
	return subs[args[0]](e, args[1:])
}

// cacheCmd is what every cache subcommand shares: its flags --cache and --json, and
// how it opens the store and reports a failure.
type cacheCmd struct {
	e    *env
	fs   *flag.FlagSet
	dir  string
	json bool
}

func newCacheCmd(e *env, name, usage string) *cacheCmd {
	c := &cacheCmd{e: e, fs: newFlags(e, name, usage)}
	c.fs.StringVar(&c.dir, "cache", "", "cache directory (default $VMB_CACHE, $XDG_CACHE_HOME/vmb or ~/.cache/vmb)")
	c.fs.BoolVar(&c.json, "json", false, "print a JSON object instead of text")
	return c
}

// parse parses args and checks the number of arguments; it returns an exit code
// to stop with, or -1.
func (c *cacheCmd) parse(args []string, minArgs, maxArgs int) int {
	if code := parse(c.fs, args); code >= 0 {
		return code
	}
	if n := c.fs.NArg(); n < minArgs || (maxArgs >= 0 && n > maxArgs) {
		c.fs.Usage()
		return exitInvalid
	}
	return -1
}

// open opens the cache the flags name.
func (c *cacheCmd) open() (*cas.Store, error) {
	dir := c.dir
	if dir == "" {
		var err error
		if dir, err = cas.DefaultDir(c.e.getenv); err != nil {
			return nil, err
		}
	}
	return cas.Open(dir)
}

// do opens the cache and runs fn with a context that Ctrl-C and SIGTERM cancel; it
// prints fn's result as JSON or text, or its error.
func (c *cacheCmd) do(fn func(context.Context, *cas.Store) (any, error), text func(any)) int {
	s, err := c.open()
	if err != nil {
		fmt.Fprintln(c.e.stderr, "vmb:", err)
		return exitFailed
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	v, err := fn(ctx, s)
	if err != nil {
		fmt.Fprintln(c.e.stderr, "vmb:", err)
		return exitFailed
	}
	if c.json {
		b, _ := json.MarshalIndent(v, "", "  ")
		fmt.Fprintf(c.e.stdout, "%s\n", b)
	} else if text != nil {
		text(v)
	}
	return exitOK
}

func (c *cacheCmd) printf(format string, args ...any) { fmt.Fprintf(c.e.stdout, format, args...) }

func cacheStats(e *env, args []string) int {
	c := newCacheCmd(e, "cache stats", "[--cache DIR] [--json]")
	if code := c.parse(args, 0, 0); code >= 0 {
		return code
	}
	return c.do(func(_ context.Context, s *cas.Store) (any, error) { return s.Stats() }, func(v any) {
		st := v.(*cas.Stats)
		c.printf("cache       %s\n", st.Dir)
		c.printf("objects     %d (%s stored)\n", st.Objects, graph.FormatSize(st.ObjectBytes))
		c.printf("actions     %d (%s)\n", st.Actions, graph.FormatSize(st.ActionBytes))
		c.printf("refs        %d\n", st.Refs)
		c.printf("staging     %d (%s)\n", st.Temps, graph.FormatSize(st.TempBytes))
		c.printf("quarantined %d\n", st.Quarantined)
	})
}

func cacheVerify(e *env, args []string) int {
	c := newCacheCmd(e, "cache verify", "[--cache DIR] [--json] [--no-quarantine]")
	noQuarantine := c.fs.Bool("no-quarantine", false, "report problems but move nothing")
	if code := c.parse(args, 0, 0); code >= 0 {
		return code
	}
	var rep *cas.VerifyReport
	code := c.do(func(ctx context.Context, s *cas.Store) (any, error) {
		var err error
		rep, err = s.Verify(ctx, !*noQuarantine)
		return rep, err
	}, func(any) {
		for _, p := range rep.Problems {
			c.printf("%s: %s\n", p.Path, p.Error)
			if p.Quarantined != "" {
				c.printf("\tmoved to %s\n", p.Quarantined)
			}
		}
		verdict := "ok"
		if !rep.OK() {
			verdict = fmt.Sprintf("%d problems", len(rep.Problems))
		}
		c.printf("verified %d blobs and %d action records: %s\n", rep.Objects, rep.Actions, verdict)
	})
	if code == exitOK && !rep.OK() {
		return exitFailed
	}
	return code
}

func cacheGC(e *env, args []string) int {
	c := newCacheCmd(e, "cache gc", "[--cache DIR] [--json] [--max-size SIZE] [--dry-run]")
	var opt cas.GCOptions
	c.fs.Var((*graph.Size)(&opt.MaxSize), "max-size", "keep at most SIZE of objects (e.g. 20GiB); default: remove only what nothing reaches")
	c.fs.BoolVar(&opt.DryRun, "dry-run", false, "report what would be removed, remove nothing")
	if code := c.parse(args, 0, 0); code >= 0 {
		return code
	}
	return c.do(func(ctx context.Context, s *cas.Store) (any, error) { return s.GC(ctx, opt) }, func(v any) {
		rep := v.(*cas.GCReport)
		verb := "removed"
		if opt.DryRun {
			verb = "would remove"
		}
		c.printf("%s %d action records, %d objects (%s), %d staging files\n",
			verb, rep.RemovedActions, rep.RemovedObjects, graph.FormatSize(rep.RemovedBytes), rep.RemovedTemps)
		c.printf("kept %d action records, %d objects (%s)\n", rep.KeptActions, rep.KeptObjects, graph.FormatSize(rep.KeptBytes))
		if k := rep.Compacted; k.Objects > 0 {
			c.printf("compressed %d objects from %s to %s\n", k.Objects, graph.FormatSize(k.BytesBefore), graph.FormatSize(k.BytesAfter))
		}
	})
}

func cacheIngest(e *env, args []string) int {
	c := newCacheCmd(e, "cache ingest", "[--cache DIR] [--json] [--chunk-size SIZE] [--defer-compression] DISK")
	var opt cas.IngestOptions
	c.fs.Var((*graph.Size)(&opt.ChunkSize), "chunk-size", "chunk size of the snapshot (a power of two; default 256KiB)")
	c.fs.BoolVar(&opt.DeferCompression, "defer-compression", false, "store new chunks uncompressed; vmb cache gc compresses them later")
	if code := c.parse(args, 1, 1); code >= 0 {
		return code
	}
	type result struct {
		Snapshot cas.Digest `json:"snapshot"`
		cas.IngestStats
	}
	return c.do(func(ctx context.Context, s *cas.Store) (any, error) {
		d, st, err := s.IngestDisk(ctx, c.fs.Arg(0), opt)
		return result{d, st}, err
	}, func(v any) {
		r := v.(result)
		c.printf("%s\n", r.Snapshot)
		fmt.Fprintf(e.stderr, "size %s, read %s, %d chunks, %d new (%s, %s stored)\n", graph.FormatSize(r.Size),
			graph.FormatSize(r.ReadBytes), r.Chunks, r.NewChunks, graph.FormatSize(r.NewBytes), graph.FormatSize(r.StoredBytes))
	})
}

func cacheMaterialize(e *env, args []string) int {
	c := newCacheCmd(e, "cache materialize", "[--cache DIR] SNAPSHOT FILE")
	if code := c.parse(args, 2, 2); code >= 0 {
		return code
	}
	d, err := cas.ParseDigest(c.fs.Arg(0))
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb cache materialize:", err)
		return exitInvalid
	}
	return c.do(func(ctx context.Context, s *cas.Store) (any, error) {
		return map[string]string{"path": c.fs.Arg(1)}, s.Materialize(ctx, d, c.fs.Arg(1))
	}, nil)
}

func cacheSync(e *env, args []string) int {
	c := newCacheCmd(e, "cache sync", "[--cache DIR] [--json] --to DIR | --from DIR [--ref NAME]... [ACTION-KEY...]")
	to := c.fs.String("to", "", "copy from the cache to this directory")
	from := c.fs.String("from", "", "copy from this directory into the cache")
	var refs []string
	c.fs.Func("ref", "copy the ref NAME (e.g. appliance) and what it reaches; may be repeated", func(v string) error {
		refs = append(refs, v)
		return nil
	})
	if code := c.parse(args, 0, -1); code >= 0 {
		return code
	}
	if (*to == "") == (*from == "") {
		fmt.Fprintln(e.stderr, "vmb cache sync: give one of --to and --from")
		return exitInvalid
	}
	var ids []cas.ActionID
	for _, a := range c.fs.Args() {
		id, err := cas.ParseActionID(a)
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb cache sync:", err)
			return exitInvalid
		}
		ids = append(ids, id)
	}
	all := ids == nil && refs == nil
	return c.do(func(ctx context.Context, local *cas.Store) (any, error) {
		other, err := cas.Open(*to + *from)
		if err != nil {
			return nil, err
		}
		dst, src := other, local
		if *from != "" {
			dst, src = local, other
		}
		rep := &cas.SyncReport{}
		if all || ids != nil {
			if rep, err = cas.Sync(ctx, dst, src, ids); err != nil {
				return nil, err
			}
		}
		if all || refs != nil {
			r, err := cas.SyncRefs(ctx, dst, src, refs)
			if err != nil {
				return nil, err
			}
			rep.Add(r)
		}
		return rep, nil
	}, func(v any) {
		rep := v.(*cas.SyncReport)
		c.printf("copied %d action records, %d refs and %d objects (%s); %d records and %d objects were there\n",
			rep.Actions, rep.Refs, rep.Objects, graph.FormatSize(rep.Bytes), rep.SkippedAction, rep.SkippedObject)
	})
}
