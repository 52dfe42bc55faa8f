package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/vmexec"
)

// repository resolves the build repository a command names, the one way every
// command does: repo (the value of --repo, or vmb list's argument) is a directory
// if one has that name or it is written as a path (".", "..", "a/b"), else the
// name of an imported repository; without repo, the first argument is the
// directory if it names one, else the current directory is. It returns the
// directory, the imported name ("" for a directory), the arguments left, and an
// exit code to stop with, or -1.
func repository(e *env, repo string, args []string) (dir, name string, rest []string, code int) {
	if repo == "" {
		if len(args) > 0 && isDir(args[0]) {
			return args[0], "", args[1:], -1
		}
		return ".", "", args, -1
	}
	if isDir(repo) || strings.ContainsRune(repo, os.PathSeparator) || repo == "." || repo == ".." {
		return repo, "", args, -1 // compiling reports a path that is missing
	}
	r, err := openRegistry(e)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return "", "", nil, exitFailed
	}
	rp, ok := r.Lookup(repo)
	if !ok {
		fmt.Fprintf(e.stderr, "vmb: no imported repository %q (see vmb list)\n", repo)
		return "", "", nil, exitInvalid
	}
	return rp.Path, repo, args, -1
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// cacheUsage is the help of --cache.
const cacheUsage = "cache directory (default $VMB_CACHE, $XDG_CACHE_HOME/vmb or ~/.cache/vmb)"

// tagList is -t KEY=VALUE, repeatable: values injected into the definitions'
// fields marked @tag(KEY).
type tagList []string

func (t *tagList) String() string { return strings.Join(*t, " ") }

func (t *tagList) Set(v string) error {
	if k, _, ok := strings.Cut(v, "="); !ok || k == "" {
		return fmt.Errorf("%q: want KEY=VALUE", v)
	}
	*t = append(*t, v)
	return nil
}

const tagsUsage = "KEY=VALUE: set the field marked @tag(KEY) in the definitions (repeatable)"

// tagsFlag defines -t on fs.
func tagsFlag(fs *flag.FlagSet) *tagList {
	t := &tagList{}
	fs.Var(t, "t", tagsUsage)
	return t
}

// cacheFlag defines --cache on fs.
func cacheFlag(fs *flag.FlagSet) *string { return fs.String("cache", "", cacheUsage) }

func openRegistry(e *env) (*lang.Registry, error) {
	dir, err := lang.DefaultConfigDir(e.getenv)
	if err != nil {
		return nil, err
	}
	return lang.OpenRegistry(dir)
}

// compileWith compiles the build repository in dir; on invalid definitions it
// prints every error as file:line:col: message and returns exitInvalid, else -1.
// It uses the stat cache of cacheDir (default: the default cache) and the given
// executor identity, by default the appliance of that cache, so that keys are the
// keys vmb solve uses; a cache without an appliance gives placeholder keys. The
// graph is taken from the cache's graph cache when the repository is unchanged,
// unless VMB_NO_GRAPH_CACHE=1.
func compileWith(e *env, dir, cacheDir, executor string, tags []string) (*graph.Graph, int) {
	opt := lang.Options{Executor: executor, ResolveImage: vmexec.ResolveImage, Tags: tags}
	if cacheDir == "" {
		cacheDir, _ = cas.DefaultDir(e.getenv)
	}
	if cacheDir != "" {
		opt.StatCache = filepath.Join(cas.ScratchDir(cacheDir, "lang"), "stat-cache.json")
		if e.getenv("VMB_NO_GRAPH_CACHE") != "1" {
			opt.GraphCache = filepath.Join(cas.ScratchDir(cacheDir, "lang"), "graph")
		}
		if opt.Executor == "" {
			app, err := cacheAppliance(cacheDir)
			if err == nil {
				app, err = pinnedAppliance(dir, cacheDir, app)
			}
			if err != nil {
				// An appliance that cannot be read would give keys that match nothing.
				fmt.Fprintf(e.stderr, "vmb: the appliance of cache %s: %v\n", cacheDir, err)
				return nil, exitFailed
			}
			opt.Executor = identity(app)
		}
	}
	if e.getenv("VMB_DEBUG_KEYS") == "1" {
		opt.DebugKeys = e.stderr
	}
	if e.getenv("VMB_DEBUG_GRAPH_CACHE") == "1" {
		opt.DebugGraphCache = e.stderr
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
