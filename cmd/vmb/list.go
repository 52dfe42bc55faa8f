package main

import (
	"fmt"
	"text/tabwriter"
)

func runList(e *env, args []string) int {
	fs := newFlags(e, "list", "[DIR | --repo NAME]")
	repo := fs.String("repo", "", "list the images of this imported repository")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	switch {
	case *repo != "":
		dir, err := resolveRepo(e, *repo)
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb list:", err)
			return exitInvalid
		}
		return listImages(e, dir)
	case fs.NArg() == 1:
		return listImages(e, fs.Arg(0))
	case fs.NArg() > 1:
		fs.Usage()
		return exitInvalid
	}
	// No argument: the imported repositories and their images.
	r, err := loadRegistry(e.getenv)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb list:", err)
		return exitFailed
	}
	if len(r.Repos) == 0 {
		fmt.Fprintln(e.stdout, "no imported repositories; vmb import --path DIR adds one, vmb list DIR lists a directory's images")
		return exitOK
	}
	code := exitOK
	for _, name := range r.names() {
		fmt.Fprintf(e.stdout, "%s\t%s\n", name, r.Repos[name])
		if c := listImages(e, r.Repos[name]); c != exitOK {
			code = c
		}
	}
	return code
}

func listImages(e *env, dir string) int {
	g, code := compile(e, dir)
	if g == nil {
		return code
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  IMAGE\tSTEPS\tFROM\tDISKS")
	for _, im := range g.Images {
		from := im.From
		if from == "" {
			from = "-"
		}
		disks := ""
		for i, d := range im.Disks {
			if i > 0 {
				disks += " "
			}
			disks += fmt.Sprintf("%s=%s", d.Name, d.Size.String())
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\n", im.Name, len(im.Nodes), from, disks)
	}
	tw.Flush()
	return exitOK
}
