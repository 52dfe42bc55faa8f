package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/vmexec/appliance"
	"vmb.dev/vmb/vmexec/proto"
)

// The appliance as vmb solve, vmb build and vmb shell use it: the cache's current
// one, or, on first use of a cache that has none, one built there and then, as
// libguestfs builds its appliance on first use. The definitions are checked before
// any appliance is loaded or built.

// cacheAppliance returns the current appliance of the cache in dir, or nil if the
// cache has none; it creates nothing. This is the one place the CLI tells "no
// appliance" from "an appliance that cannot be read".
func cacheAppliance(dir string) (*appliance.Appliance, error) {
	app, err := appliance.Read(dir)
	if errors.Is(err, appliance.ErrNone) {
		return nil, nil
	}
	return app, err
}

// pinnedAppliance returns the appliance the repository in dir pins (vmb.lock) if
// it pins one other than current and the cache at cacheDir has it, current if it
// pins none; a *appliance.PinError if the cache lacks the pinned one. It pulls and
// writes nothing: graph, explain and list show the keys a solve would use.
func pinnedAppliance(dir, cacheDir string, current *appliance.Appliance) (*appliance.Appliance, error) {
	pin, err := appliance.ReadPin(dir)
	if err != nil || pin.IsZero() || (current != nil && current.Digest == pin) {
		return current, err
	}
	store, err := cas.OpenExisting(cacheDir)
	if err == nil {
		var app *appliance.Appliance
		if app, err = appliance.Get(store, pin); err == nil {
			return app, nil
		}
	}
	return nil, &appliance.PinError{Pin: pin, Current: current}
}

// identity is the executor identity keys name: app's, or lang's placeholder.
func identity(app *appliance.Appliance) string {
	if app == nil {
		return lang.PlaceholderExecutor
	}
	return app.Identity()
}

// prepare compiles the repository in dir, then makes sure store has an appliance,
// building it if it has none (unless noBuild), and returns the graph keyed with
// it. The appliance is the one the repository pins (vmb.lock), else the cache's,
// else the first of remotes' (appliance.Choose); only without a pin is one built.
// With planOnly a cache without an appliance is left so: the graph is keyed with
// the placeholder executor and the appliance is nil. It returns an exit code to
// stop with, or -1.
func prepare(ctx context.Context, e *env, store *cas.Store, dir string, tags, remotes []string, noBuild, planOnly bool) (*graph.Graph, *appliance.Appliance, int) {
	// The definitions first, keyed with the cache's current appliance: invalid
	// ones stop here (exit 2), before any appliance is pulled or built.
	current, err := cacheAppliance(store.Dir())
	if err != nil {
		fmt.Fprintf(e.stderr, "vmb: the appliance of cache %s: %v\n", store.Dir(), err)
		return nil, nil, exitFailed
	}
	g, code := compileWith(e, dir, store.Dir(), identity(current), tags)
	if code >= 0 {
		return nil, nil, code
	}
	app, err := chooseAppliance(ctx, e, store, dir, remotes)
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return nil, nil, exitFailed
	}
	if app != nil && identity(app) != identity(current) { // the pinned or a remote's one
		g, code = compileWith(e, dir, store.Dir(), app.Identity(), tags)
	}
	if code >= 0 || app != nil || planOnly {
		return g, app, code
	}
	if noBuild {
		fmt.Fprintf(e.stderr, "vmb: no appliance in cache %s, and --no-appliance-build: run vmb appliance build\n", store.Dir())
		return nil, nil, exitFailed
	}
	agent := agentPath(e)
	if err := canBuildAppliance(agent); err != nil {
		fmt.Fprintf(e.stderr, "vmb: no appliance in cache %s, and vmb cannot build one: %v\n", store.Dir(), err)
		return nil, nil, exitFailed
	}
	var stale *appliance.StaleError
	if _, err := appliance.Load(store); errors.As(err, &stale) {
		fmt.Fprintf(e.stderr, "vmb: the cache's appliance %s was built for agent protocol %d, and this vmb speaks %d\n", stale.Digest.Short(), stale.Protocol, proto.Version)
	}
	fmt.Fprintf(e.stderr, "vmb: no appliance in cache %s: building the build VM once for this cache (Debian packages, with apt-get)\n", store.Dir())
	start := time.Now()
	if app, err = buildAppliance(ctx, e, store, agent); err != nil {
		fmt.Fprintln(e.stderr, "vmb: build the appliance:", err)
		return nil, nil, exitFailed
	}
	fmt.Fprintf(e.stderr, "vmb: appliance %s (kernel %s) built in %s\n", app.Digest.Short(), app.KernelVersion, time.Since(start).Round(time.Second))
	g, code = compileWith(e, dir, store.Dir(), app.Identity(), tags)
	return g, app, code
}

// openPrepared opens the cache at cacheDir and prepares the repository in dir
// against it (prepare). It returns an exit code to stop with, or -1.
func openPrepared(ctx context.Context, e *env, cacheDir, dir string, tags, remotes []string, noBuild, planOnly bool) (*cas.Store, *graph.Graph, *appliance.Appliance, int) {
	store, err := (&cacheCmd{e: e, dir: cacheDir}).open()
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return nil, nil, nil, exitFailed
	}
	g, app, code := prepare(ctx, e, store, dir, tags, remotes, noBuild, planOnly)
	return store, g, app, code
}

// chooseAppliance returns the appliance the repository in dir is built with in
// store (appliance.Choose), pulling it from remotes if need be, or nil if there
// is none to take and the repository pins none.
func chooseAppliance(ctx context.Context, e *env, store *cas.Store, dir string, remotes []string) (*appliance.Appliance, error) {
	pin, err := appliance.ReadPin(dir)
	if err != nil {
		return nil, err
	}
	src := appliance.Sources{
		Warn: func(err error) { fmt.Fprintln(e.stderr, "vmb: warning:", err) },
		Pulled: func(a *appliance.Appliance, r *cas.Remote) {
			fmt.Fprintf(e.stderr, "vmb: appliance %s (kernel %s) pulled from %s\n", a.Digest.Short(), a.KernelVersion, r)
		},
	}
	for _, u := range remotes {
		r, err := cas.OpenRemote(ctx, u)
		if err != nil {
			return nil, err
		}
		src.Remotes = append(src.Remotes, r)
	}
	app, err := appliance.Choose(ctx, store, pin, src)
	var pe *appliance.PinError
	if err != nil && !errors.As(err, &pe) {
		err = fmt.Errorf("the appliance of cache %s: %w", store.Dir(), err)
	}
	return app, err
}

// canBuildAppliance says what this machine lacks to build the appliance, and what
// to do about it; nil if nothing.
func canBuildAppliance(agent string) error {
	if fi, err := os.Stat(agent); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("no vmb-agent binary at %s: build one (CGO_ENABLED=0 go build -o %s ./cmd/vmb-agent), or name one with $VMB_AGENT or vmb appliance build --agent FILE", agent, agent)
	}
	for _, tool := range []string{"apt-get", "dpkg-deb"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed, and the appliance is built from Debian packages: build it on a Debian or Ubuntu machine (vmb appliance build --cache DIR) and copy that cache directory here", tool)
		}
	}
	return nil
}

// noExecutor stands for the build VM in a dry run on a cache without an appliance:
// it names the placeholder executor and runs nothing.
type noExecutor struct{}

func (noExecutor) Identity() string { return lang.PlaceholderExecutor }

func (noExecutor) Run(context.Context, *graph.Node, map[string]cas.Digest, io.Writer) (map[string]cas.Digest, map[string]cas.Digest, error) {
	return nil, nil, errors.New("no appliance in this cache: a dry run runs nothing")
}
