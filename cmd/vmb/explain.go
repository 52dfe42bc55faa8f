package main

import (
	"fmt"
	"strconv"

	"vmb.dev/vmb/graph"
)

func runExplain(e *env, args []string) int {
	fs := newFlags(e, "explain", "[DIR] IMAGE [STEP]")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	dir, rest := splitDir(fs.Args())
	if len(rest) < 1 || len(rest) > 2 {
		fs.Usage()
		return exitInvalid
	}
	g, code := compile(e, dir)
	if g == nil {
		return code
	}
	im, ok := g.Image(rest[0])
	if !ok {
		fmt.Fprintf(e.stderr, "vmb explain: no image %q\n", rest[0])
		return exitInvalid
	}
	n := im.Final()
	if len(rest) == 2 {
		var err error
		if n, err = findStep(im, rest[1]); err != nil {
			fmt.Fprintln(e.stderr, "vmb explain:", err)
			return exitInvalid
		}
	}
	if n == nil {
		fmt.Fprintf(e.stderr, "vmb explain: image %q has no steps\n", im.Name)
		return exitInvalid
	}
	fmt.Fprintf(e.stdout, "key %s\nnode %s", n.Key, n.Label())
	if n.Pos != "" {
		fmt.Fprintf(e.stdout, " at %s", n.Pos)
	}
	fmt.Fprintf(e.stdout, "\npreimage:\n%s", n.Preimage)
	return exitOK
}

// findStep finds a node of an image by step index (0-based, as errors number steps),
// step name, or "disk:NAME" for a declared disk.
func findStep(im *graph.Image, step string) (*graph.Node, error) {
	i, numErr := strconv.Atoi(step)
	for _, n := range im.Nodes {
		if numErr == nil && n.Step == i && n.Image == im.Name {
			return n, nil
		}
		if n.Name != "" && n.Name == step {
			return n, nil
		}
		if cd, ok := n.Job.(*graph.CreateDisk); ok && n.Step < 0 && "disk:"+cd.Disk == step {
			return n, nil
		}
	}
	return nil, fmt.Errorf("image %q has no step %q (a step number from 0, a step name, or disk:NAME)", im.Name, step)
}
