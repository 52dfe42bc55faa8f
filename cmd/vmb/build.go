package main

import (
	"os"
	"strings"
)

// runBuild is vmb solve spelled as vm-builder spelled it: vmb build --repo REPO
// --name IMAGE, REPO being a directory or the name of an imported repository.
func runBuild(e *env, args []string) int {
	fs := newFlags(e, "build", "[flags] --repo REPO [--name IMAGE]...")
	repo := fs.String("repo", "", "the build repository: a directory, or a name imported with vmb import")
	var names stringList
	fs.Var(&names, "name", "an image to build (repeatable; default: every image)")
	cacheDir := fs.String("cache", "", "cache directory (default $VMB_CACHE, $XDG_CACHE_HOME/vmb or ~/.cache/vmb)")
	out := fs.String("out", "out", "directory the images' outputs are written to")
	jobs := fs.Int("j", 0, "jobs run at once (default: the number of CPUs)")
	dryRun := fs.Bool("dry-run", false, "print the plan, run nothing")
	noCache := fs.Bool("no-cache", false, "run every node, still storing results")
	progress := fs.String("progress", "auto", "progress output: auto (tty on a terminal, else plain), tty, plain or json")
	verbose := fs.Bool("x", false, "print each job's qemu command line")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *repo == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitInvalid
	}
	dir, name, code := resolveRepo(e, *repo)
	if code >= 0 {
		return code
	}
	return solve(e, solveArgs{cacheDir: *cacheDir, out: *out, jobs: *jobs, dryRun: *dryRun, noCache: *noCache,
		progress: *progress, verbose: *verbose, dir: dir, repo: name, images: names})
}

// resolveRepo finds a repository named on the command line as vmb list does: a
// directory if there is one by that name or it is written as a path (compiling
// reports one that is missing), else an imported repository. name is the imported
// name, or "" for a directory.
func resolveRepo(e *env, arg string) (dir, name string, code int) {
	if fi, err := os.Stat(arg); (err == nil && fi.IsDir()) || strings.ContainsRune(arg, os.PathSeparator) || arg == "." || arg == ".." {
		return arg, "", -1
	}
	dir, _, code = repoArgs(e, arg, nil)
	return dir, arg, code
}

// stringList is a flag that may be given many times.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
