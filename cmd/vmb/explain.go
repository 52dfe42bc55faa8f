package main

import (
	"fmt"
	"strings"

	"vmb.dev/vmb/graph"
)

func runExplain(e *env, args []string) int {
	fs := newFlags(e, "explain", "[--cache DIR] [-t KEY=VALUE]... [--repo NAME] [DIR] IMAGE [STEP] | KEY")
	cacheDir := cacheFlag(fs)
	tags := tagsFlag(fs)
	repo := fs.String("repo", "", "an imported repository (vmb import) instead of DIR")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	dir, _, rest, code := repository(e, *repo, fs.Args())
	if code >= 0 {
		return code
	}
	if len(rest) < 1 || len(rest) > 2 {
		fs.Usage()
		return exitInvalid
	}
	g, code := compileWith(e, dir, *cacheDir, "", *tags)
	if code >= 0 {
		return code
	}
	step, err := "", error(nil)
	if len(rest) == 2 {
		step = rest[1]
	}
	var s graph.Step
	im, ok := g.Image(rest[0])
	if !ok {
		// A key, or its first digits, as vmb graph and the solver print them.
		n, err := g.FindKey(rest[0])
		if err != nil || step != "" {
			fmt.Fprintf(e.stderr, "vmb explain: no image or key %q (images: %s)\n", rest[0], strings.Join(g.ImageNames(), ", "))
			return exitInvalid
		}
		im = &graph.Image{Name: n.Image}
		s = graph.Step{Node: n, Index: n.Step, Name: n.Name, Pos: n.Pos}
	} else if s, err = im.Find(step); err != nil {
		fmt.Fprintln(e.stderr, "vmb explain:", err)
		return exitInvalid
	}
	n := s.Node
	fmt.Fprintf(e.stdout, "node    %s\n", s.Label(im.Name))
	if s.Pos != "" {
		fmt.Fprintf(e.stdout, "at      %s\n", s.Pos)
	}
	if n.Image != im.Name {
		fmt.Fprintf(e.stdout, "shared  with %s (first defined there)\n", n.Label())
	}
	fmt.Fprintf(e.stdout, "key     %s\n", n.Key)
	if n.Parent != nil {
		fmt.Fprintf(e.stdout, "parent  %s %s\n", n.Parent.Key.Short(), n.Parent.Label())
	}
	fmt.Fprintf(e.stdout, "\nThe key is the BLAKE3-256 of these lines:\n\n%s", n.Preimage)
	return exitOK
}
