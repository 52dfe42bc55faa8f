package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/vmexec"
)

func runGraph(e *env, args []string) int {
	fs := newFlags(e, "graph", "[--format text|json|dot] [--repo NAME] [DIR] [IMAGE...]")
	format := fs.String("format", "text", "output format: text (one node a line), json, or dot (Graphviz)")
	repo := fs.String("repo", "", "an imported repository (vmb import) instead of DIR")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *format != "text" && *format != "json" && *format != "dot" {
		fmt.Fprintf(e.stderr, "vmb graph: --format %q: want text, json or dot\n", *format)
		return exitInvalid
	}
	dir, images, code := repoArgs(e, *repo, fs.Args())
	if code >= 0 {
		return code
	}
	g, code := compileRepo(e, dir)
	if code >= 0 {
		return code
	}
	var err error
	switch *format {
	case "json":
		err = g.WriteJSON(e.stdout, images...)
	case "dot":
		err = g.WriteDOT(e.stdout, images...)
	default:
		err = g.WriteText(e.stdout, images...)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb graph:", err)
		return exitInvalid
	}
	return exitOK
}

// repoArgs splits [DIR] ARGS...: the first argument is the repository if it names a
// directory; --repo NAME names an imported one instead. It returns an exit code to
// stop with, or -1.
func repoArgs(e *env, repo string, args []string) (dir string, rest []string, code int) {
	if repo != "" {
		r, err := openRegistry(e)
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb:", err)
			return "", nil, exitFailed
		}
		rp, ok := r.Lookup(repo)
		if !ok {
			fmt.Fprintf(e.stderr, "vmb: no imported repository %q (see vmb list)\n", repo)
			return "", nil, exitInvalid
		}
		return rp.Path, args, -1
	}
	if len(args) > 0 {
		if fi, err := os.Stat(args[0]); err == nil && fi.IsDir() {
			return args[0], args[1:], -1
		}
	}
	return ".", args, -1
}

func openRegistry(e *env) (*lang.Registry, error) {
	dir, err := lang.DefaultConfigDir(e.getenv)
	if err != nil {
		return nil, err
	}
	return lang.OpenRegistry(dir)
}

// compileRepo compiles the build repository in dir; on invalid definitions it prints
// every error as file:line:col: message and returns exitInvalid, else -1. Keys name
// the appliance of the default cache, so that they are the keys vmb solve uses; a
// cache without an appliance gives placeholder keys.
func compileRepo(e *env, dir string) (*graph.Graph, int) {
	return compileWith(e, dir, "", "")
}

// compileWith compiles with the stat cache of cacheDir (default: the default cache)
// and the given executor identity (default: the cache's appliance).
func compileWith(e *env, dir, cacheDir, executor string) (*graph.Graph, int) {
	opt := lang.Options{Executor: executor}
	if cacheDir == "" {
		cacheDir, _ = cas.DefaultDir(e.getenv)
	}
	if cacheDir != "" {
		opt.StatCache = filepath.Join(cas.ScratchDir(cacheDir, "lang"), "stat-cache.json")
		if opt.Executor == "" {
			if app, err := vmexec.ReadAppliance(cacheDir); err == nil {
				opt.Executor = app.Identity()
			}
		}
	}
	if e.getenv("VMB_DEBUG_KEYS") == "1" {
		opt.DebugKeys = e.stderr
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	g, err := lang.Compile(ctx, dir, opt)
	var errs lang.Errors
	switch {
	case errors.As(err, &errs):
		for _, le := range errs {
			fmt.Fprintln(e.stderr, le.Error())
		}
		return nil, exitInvalid
	case err != nil:
		fmt.Fprintln(e.stderr, "vmb:", err)
		return nil, exitInvalid
	}
	return g, -1
}
