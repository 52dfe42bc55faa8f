package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/qemu"
)

func runShell(e *env, args []string) int {
	fs := newFlags(e, "shell", "[--cache DIR] [-t KEY=VALUE]... [--repo NAME] [-x] [--no-appliance-build] [DIR] IMAGE [STEP]")
	cacheDir := cacheFlag(fs)
	tags := tagsFlag(fs)
	repo := fs.String("repo", "", "an imported repository (vmb import) instead of DIR")
	verbose := fs.Bool("x", false, "print qemu's command line")
	var noApplianceBuild bool
	noApplianceBuildFlag(fs, &noApplianceBuild)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	dir, name, rest, code := repository(e, *repo, fs.Args())
	if code >= 0 {
		return code
	}
	if len(rest) < 1 || len(rest) > 2 {
		fs.Usage()
		return exitInvalid
	}
	c := &cacheCmd{e: e, dir: *cacheDir}
	store, err := c.open()
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb shell:", err)
		return exitFailed
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	g, app, code := prepare(ctx, e, store, dir, *tags, nil, noApplianceBuild, false)
	cancel()
	if code >= 0 {
		return code
	}
	x := &vmexec.Executor{Store: store, Appliance: app, KVM: qemu.KVMUsable(), Verbose: *verbose, RepoDir: g.Dir}
	defer x.Close()
	im, ok := g.Image(rest[0])
	if !ok {
		fmt.Fprintf(e.stderr, "vmb shell: no image %q (images: %s)\n", rest[0], strings.Join(g.ImageNames(), ", "))
		return exitInvalid
	}

	// The state to open: the image's final one, or the one the step starts from.
	var (
		from *graph.Node
		opt  vmexec.ShellOptions
		what string
	)
	if len(rest) == 1 {
		from, what = im.Final(), im.Name+" after its last step"
	} else {
		s, err := im.Find(rest[1])
		if err != nil {
			fmt.Fprintln(e.stderr, "vmb shell:", err)
			return exitInvalid
		}
		from, opt.Step, what = s.Node.Parent, s.Node.Job, "before "+s.Label(im.Name)
	}
	if from == nil {
		fmt.Fprintf(e.stderr, "vmb shell: %s: no disk exists yet, there is nothing to open\n", what)
		return exitInvalid
	}
	res, err := solver.Cached(store, from)
	if errors.Is(err, cas.ErrNotFound) {
		// Never built, or collected: build it, as a solve of the image would,
		// keeping this state even though the image's final one may be cached.
		fmt.Fprintf(e.stderr, "vmb shell: %s: the state %s left is not in the cache: building it\n", what, from.Label())
		a := solveArgs{cacheDir: *cacheDir, repo: name, dir: dir}
		p := &progress{e: e, hint: func(n *graph.Node) string { return shellCommand(a, n) }}
		ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		sum, serr := solver.New(store, x, solver.Options{Need: []graph.Key{from.Key}, Events: p.event}).Solve(ctx, g, im.Name)
		cancel()
		if sum != nil {
			p.summary(sum, serr)
		}
		if serr != nil {
			fmt.Fprintf(e.stderr, "vmb shell: %s: the state %s left could not be built\n", what, from.Label())
			return exitFailed
		}
		res, err = solver.Cached(store, from)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb shell:", err)
		return exitFailed
	}

	fmt.Fprintf(e.stderr, "vmb shell: %s: the state %s (%s) left.\n", what, from.Label(), from.Key.Short())
	fmt.Fprintln(e.stderr, "vmb shell: booting the build VM; nothing you change enters the cache.")
	ctx, cancel = signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer cancel()
	opt.Term = e.getenv("TERM")
	stdin := e.stdin
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	restore := func() {}
	if fd, ok := terminalFd(stdin); ok {
		if cols, rows, ok := terminalSize(fd); ok {
			opt.Cols, opt.Rows = cols, rows
		}
		// Raw: every key, Ctrl-C and Ctrl-D included, goes to the VM's shell. A
		// signal from elsewhere (SIGTERM, SIGHUP) cancels ctx, which stops the VM,
		// and the terminal is restored on the way out.
		if restore, err = makeRaw(fd); err != nil {
			fmt.Fprintln(e.stderr, "vmb shell: raw terminal:", err)
			return exitFailed
		}
		defer restore() // a panic, too
	}
	err = x.Shell(ctx, res.Disks, stdin, e.stdout, opt)
	restore()
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(e.stderr, "\nvmb shell: stopped by a signal; the VM and its disks are gone.")
		return exitFailed
	case err != nil:
		fmt.Fprintf(e.stderr, "\nvmb shell: %v\n", err)
		return exitFailed
	}
	fmt.Fprintln(e.stderr, "vmb shell: the session ended; its disks were thrown away.")
	return exitOK
}

// shellCommand is the vmb shell command that opens the state node n started from,
// as a failed solve prints it; "" if n has no parent.
func shellCommand(a solveArgs, n *graph.Node) string {
	if n.Parent == nil {
		return ""
	}
	args := []string{"vmb", "shell"}
	if a.cacheDir != "" {
		args = append(args, "--cache", a.cacheDir)
	}
	if a.repo != "" {
		args = append(args, "--repo", a.repo)
	} else {
		args = append(args, a.dir)
	}
	step := fmt.Sprint(n.Step)
	if cd, ok := n.Job.(*graph.CreateDisk); ok && n.Step < 0 {
		step = "disks." + cd.Disk
	}
	return shellQuote(append(args, n.Image, step)...)
}

// shellQuote renders args for a POSIX shell.
func shellQuote(args ...string) string {
	out := make([]string, len(args))
	for i, s := range args {
		if s == "" || strings.ContainsAny(s, " \t\n'\"\\$`;&|<>()*?[]#~!{}") {
			s = "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
		}
		out[i] = s
	}
	return strings.Join(out, " ")
}
