package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"vmb.dev/vmb/graph"
)

func runList(e *env, args []string) int {
	fs := newFlags(e, "list", "[--cache DIR] [-t KEY=VALUE]... [DIR | REPO]")
	cacheDir := cacheFlag(fs)
	tags := tagsFlag(fs)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 1 {
		fs.Usage()
		return exitInvalid
	}
	if fs.NArg() == 0 {
		return listRepos(e, *cacheDir)
	}
	dir, _, _, code := repository(e, fs.Arg(0), nil)
	if code >= 0 {
		return code
	}
	g, code := compileWith(e, dir, *cacheDir, "", *tags)
	if code >= 0 {
		return code
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "IMAGE\tSTEPS\tFROM\tDISKS")
	for _, im := range g.Images {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", im.Name, im.StepCount(), orDash(im.From), disks(im.Disks))
	}
	tw.Flush()
	return exitOK
}

// listRepos lists the imported repositories, each with its images.
func listRepos(e *env, cacheDir string) int {
	r, err := openRegistry(e)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb list:", err)
		return exitFailed
	}
	if len(r.Repos) == 0 {
		fmt.Fprintln(e.stdout, "no imported repositories (vmb import --path DIR)")
		return exitOK
	}
	code := exitOK
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPO\tPATH\tIMAGES")
	for _, rp := range r.Repos {
		images := "(invalid: vmb list " + rp.Path + ")"
		if g, c := compileWith(&env{stdout: e.stdout, stderr: io.Discard, getenv: e.getenv}, rp.Path, cacheDir, "", nil); c < 0 {
			images = strings.Join(g.ImageNames(), " ")
		} else {
			code = exitInvalid
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", rp.Name, rp.Path, images)
	}
	tw.Flush()
	return code
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func disks(ds []graph.Disk) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, d.Name+"="+graph.FormatSize(int64(d.Size)))
	}
	return strings.Join(parts, " ")
}
