package main

import (
	"fmt"
	"os"
	"path/filepath"
)

func runImport(e *env, args []string) int {
	fs := newFlags(e, "import", "--path DIR [--name NAME]")
	path := fs.String("path", "", "the build repository's directory")
	name := fs.String("name", "", "the name to import it as (default: the directory's base name)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *path == "" || fs.NArg() > 0 {
		fs.Usage()
		return exitInvalid
	}
	abs, err := filepath.Abs(*path)
	if err == nil {
		_, err = os.Stat(abs)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb import:", err)
		return exitInvalid
	}
	if *name == "" {
		*name = filepath.Base(abs)
	}
	// Only a repository that compiles is recorded.
	g, code := compileWith(e, abs, "", "", nil)
	if code >= 0 {
		return code
	}
	r, err := openRegistry(e)
	if err == nil {
		err = r.Add(*name, abs)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb import:", err)
		return exitFailed
	}
	fmt.Fprintf(e.stdout, "imported %s (%s): %d images\n", *name, abs, len(g.Images))
	return exitOK
}
