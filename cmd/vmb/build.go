package main

import "strings"

// runBuild is vmb solve spelled as vm-builder spelled it: vmb build --repo REPO
// --name IMAGE, REPO being a directory or the name of an imported repository.
func runBuild(e *env, args []string) int {
	fs := newFlags(e, "build", "[flags] --repo REPO [--name IMAGE]...")
	repo := fs.String("repo", "", "the build repository: a directory, or a name imported with vmb import")
	var names stringList
	fs.Var(&names, "name", "an image to build (repeatable; default: every image)")
	cacheDir := cacheFlag(fs)
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
	dir, name, _, code := repository(e, *repo, nil)
	if code >= 0 {
		return code
	}
	return solve(e, solveArgs{cacheDir: *cacheDir, out: *out, jobs: *jobs, dryRun: *dryRun, noCache: *noCache,
		progress: *progress, verbose: *verbose, dir: dir, repo: name, images: names})
}

// stringList is a flag that may be given many times.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
