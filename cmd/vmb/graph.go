package main

import "fmt"

func runGraph(e *env, args []string) int {
	fs := newFlags(e, "graph", "[--format dot|json] [DIR] [IMAGE...]")
	format := fs.String("format", "json", "output format: json or dot")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if *format != "json" && *format != "dot" {
		fmt.Fprintf(e.stderr, "vmb graph: --format %q: want json or dot\n", *format)
		return exitInvalid
	}
	dir, images := splitDir(fs.Args())
	g, code := compile(e, dir)
	if g == nil {
		return code
	}
	write := g.WriteJSON
	if *format == "dot" {
		write = g.WriteDOT
	}
	if err := write(e.stdout, images...); err != nil {
		fmt.Fprintln(e.stderr, "vmb graph:", err)
		return exitInvalid
	}
	return exitOK
}
