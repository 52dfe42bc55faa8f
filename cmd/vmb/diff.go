package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/diff"
)

// Exit codes of vmb diff, as diff(1)'s.
const (
	diffSame    = 0
	diffDiffers = 1
	diffError   = 2
)

func runDiff(e *env, args []string) int {
	fs := newFlags(e, "diff", "[--cache DIR] [--json] [--level 1|2|3] [--chunks] [--disk NAME] [--repo DIR|NAME] A B")
	cacheDir := cacheFlag(fs)
	asJSON := fs.Bool("json", false, "print a JSON object instead of text")
	chunks := fs.Bool("chunks", false, "compare chunks only (level 1): no disk is read")
	level := fs.Int("level", 3, "where to stop: 1 chunks, 2 structures, 3 files")
	disk := fs.String("disk", "", "the disk of a node that has several")
	repo := fs.String("repo", "", "the repository whose IMAGE[:STEP] an operand names (default: the current directory)")
	fs.Usage = func() {
		fmt.Fprintln(e.stderr, "usage: vmb diff [--cache DIR] [--json] [--level 1|2|3] [--chunks] [--disk NAME] [--repo DIR|NAME] A B")
		fmt.Fprintln(e.stderr, "A and B: a snapshot digest or an action key (at least 6 hex digits), or IMAGE[:STEP] of the repository")
		fs.PrintDefaults()
	}
	if code := parse(fs, args); code >= 0 {
		if code == exitInvalid {
			return diffError
		}
		return code
	}
	if *chunks {
		*level = 1
	}
	if fs.NArg() != 2 || *level < 1 || *level > 3 {
		fs.Usage()
		return diffError
	}
	dir := *cacheDir
	if dir == "" {
		var err error
		if dir, err = cas.DefaultDir(e.getenv); err != nil {
			fmt.Fprintln(e.stderr, "vmb diff:", err)
			return diffError
		}
	}
	s, err := cas.OpenExisting(dir)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb diff:", err)
		return diffError
	}
	var ds [2]cas.Digest
	for i, arg := range fs.Args() {
		if ds[i], err = diff.Resolve(s, arg, *disk); err != nil && !isHex(arg) {
			ds[i], err = imageDisk(e, s, *repo, dir, arg, *disk)
		}
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb diff:", err)
			return diffError
		}
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	rep, err := diff.Snapshots(ctx, s, ds[0], ds[1], diff.Options{Level: *level})
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb diff:", err)
		return diffError
	}
	if *asJSON {
		b, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintf(e.stdout, "%s\n", b)
	} else {
		rep.WriteText(e.stdout)
	}
	if rep.Identical() {
		return diffSame
	}
	return diffDiffers
}

func isHex(s string) bool {
	return len(s) >= 6 && strings.Trim(strings.ToLower(s), "0123456789abcdef") == ""
}

// imageDisk resolves IMAGE[:STEP] of the repository to the snapshot its recorded
// output disk is.
func imageDisk(e *env, s *cas.Store, repo, cacheDir, arg, disk string) (cas.Digest, error) {
	dir, _, _, code := repository(e, repo, nil)
	if code >= 0 {
		return cas.Digest{}, fmt.Errorf("%s: no repository", arg)
	}
	g, code := compileWith(e, dir, cacheDir, "", nil)
	if code >= 0 {
		return cas.Digest{}, fmt.Errorf("%s: the repository %s does not compile", arg, dir)
	}
	name, step, _ := strings.Cut(arg, ":")
	im, ok := g.Image(name)
	if !ok {
		return cas.Digest{}, fmt.Errorf("%q is no snapshot or action key in the cache, nor an image of %s (images: %s)", arg, dir, strings.Join(g.ImageNames(), ", "))
	}
	st, err := im.Find(step)
	if err != nil {
		return cas.Digest{}, err
	}
	rec, err := s.GetAction(cas.ActionID(st.Node.Key))
	if err != nil {
		return cas.Digest{}, fmt.Errorf("%s: no recorded result (vmb solve builds it): %w", st.Label(im.Name), err)
	}
	d, err := diff.RecordDisk(rec, disk)
	if err != nil {
		return cas.Digest{}, fmt.Errorf("%s: %w", st.Label(im.Name), err)
	}
	return d, nil
}
