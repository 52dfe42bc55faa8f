package main

import "fmt"

func runGraph(e *env, args []string) int {
	fs := newFlags(e, "graph", "[--format text|json|dot] [--cache DIR] [-t KEY=VALUE]... [--repo NAME] [DIR] [IMAGE...]")
	cacheDir := cacheFlag(fs)
	tags := tagsFlag(fs)
	format := fs.String("format", "text", "output format: text (one node a line), json, or dot (Graphviz)")
	repo := fs.String("repo", "", "an imported repository (vmb import) instead of DIR")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *format != "text" && *format != "json" && *format != "dot" {
		fmt.Fprintf(e.stderr, "vmb graph: --format %q: want text, json or dot\n", *format)
		return exitInvalid
	}
	dir, _, images, code := repository(e, *repo, fs.Args())
	if code >= 0 {
		return code
	}
	g, code := compileWith(e, dir, *cacheDir, "", *tags)
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
