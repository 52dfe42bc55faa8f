package main

import (
	"fmt"
	"path/filepath"
)

func runImport(e *env, args []string) int {
	fs := newFlags(e, "import", "--path DIR [--name NAME]")
	path := fs.String("path", "", "the build repository to import")
	name := fs.String("name", "", "the name to import it as (default: the directory's name)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *path == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitInvalid
	}
	abs, err := filepath.Abs(*path)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb import:", err)
		return exitInvalid
	}
	// Import only what compiles, so that a typo is found now, not at build time.
	g, code := compile(e, abs)
	if g == nil {
		return code
	}
	if *name == "" {
		*name = filepath.Base(abs)
	}
	r, err := loadRegistry(e.getenv)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb import:", err)
		return exitFailed
	}
	r.Repos[*name] = abs
	if err := r.save(); err != nil {
		fmt.Fprintln(e.stderr, "vmb import:", err)
		return exitFailed
	}
	fmt.Fprintf(e.stdout, "imported %s (%d images) from %s\n", *name, len(g.Images), abs)
	return exitOK
}
