package main

import "strings"

// runBuild is vmb solve spelled as vm-builder spelled it: vmb build --repo REPO
// --name IMAGE, REPO being a directory or the name of an imported repository.
func runBuild(e *env, args []string) int {
	fs := newFlags(e, "build", "[flags] --repo REPO [--name IMAGE]...")
	repo := fs.String("repo", "", "the build repository: a directory, or a name imported with vmb import")
	var names stringList
	fs.Var(&names, "name", "an image to build (repeatable; default: every image)")
	a := solveFlags(fs)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *repo == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitInvalid
	}
	var code int
	if a.dir, a.repo, _, code = repository(e, *repo, nil); code >= 0 {
		return code
	}
	a.images = names
	return solve(e, *a)
}

// stringList is a flag that may be given many times.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }
