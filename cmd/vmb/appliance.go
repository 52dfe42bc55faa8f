package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/appliance"
)

func runAppliance(e *env, args []string) int {
	usage := map[string]string{
		"build": "[--cache DIR] [--json] [--agent FILE]",
		"info":  "[--cache DIR] [--json]",
		"pull":  "[--cache DIR] [--json] [--digest DIGEST] URL",
		"push":  "[--cache DIR] [--json] URL",
		"pin":   "[--cache DIR] [--json] [DIR]",
	}
	if len(args) == 0 || usage[args[0]] == "" {
		fmt.Fprintln(e.stderr, "usage: vmb appliance build|info|pull|push|pin [flags]")
		return exitInvalid
	}
	verb := args[0]
	c := newCacheCmd(e, "appliance "+verb, usage[verb])
	agent, digest := "", ""
	minArgs, maxArgs := 0, 0
	switch verb {
	case "build":
		c.fs.StringVar(&agent, "agent", "", "the vmb-agent binary (default: vmb-agent beside vmb, or $VMB_AGENT)")
	case "pull":
		c.fs.StringVar(&digest, "digest", "", "pull appliance `DIGEST` (default: the remote's current one)")
		minArgs, maxArgs = 1, 1
	case "push":
		minArgs, maxArgs = 1, 1
	case "pin":
		maxArgs = 1
	}
	if code := c.parse(args[1:], minArgs, maxArgs); code >= 0 {
		return code
	}
	show := func(v any) { printAppliance(c, v.(*appliance.Appliance)) }
	switch verb {
	case "info":
		return c.do(func(_ context.Context, s *cas.Store) (any, error) { return appliance.Load(s) }, show)
	case "pull":
		var want cas.Digest
		if digest != "" {
			var err error
			if want, err = cas.ParseDigest(digest); err != nil {
				fmt.Fprintln(e.stderr, "vmb appliance pull: --digest:", err)
				return exitInvalid
			}
		}
		return c.do(func(ctx context.Context, s *cas.Store) (any, error) {
			r, err := cas.OpenRemote(ctx, c.fs.Arg(0))
			if err != nil {
				return nil, err
			}
			a, err := appliance.Pull(ctx, s, r, want)
			if err == nil {
				err = a.Use(s)
			}
			return a, err
		}, show)
	case "push":
		return c.do(func(ctx context.Context, s *cas.Store) (any, error) {
			r, err := cas.OpenRemote(ctx, c.fs.Arg(0))
			if err != nil {
				return nil, err
			}
			a, _, err := appliance.Push(ctx, r, s)
			return a, err
		}, func(v any) { c.printf("pushed appliance %s to %s\n", v.(*appliance.Appliance).Digest, c.fs.Arg(0)) })
	case "pin":
		dir := "."
		if c.fs.NArg() == 1 {
			dir = c.fs.Arg(0)
		}
		return c.do(func(_ context.Context, s *cas.Store) (any, error) {
			a, err := appliance.Load(s)
			if err == nil {
				err = a.Keep(s)
			}
			if err == nil {
				err = appliance.WritePin(dir, a.Digest)
			}
			return a, err
		}, func(v any) {
			c.printf("%s: appliance %s\n", filepath.Join(dir, appliance.LockFile), v.(*appliance.Appliance).Digest)
		})
	}
	if agent == "" {
		agent = agentPath(e)
	}
	return c.do(func(ctx context.Context, s *cas.Store) (any, error) {
		if err := canBuildAppliance(agent); err != nil {
			return nil, fmt.Errorf("cannot build the appliance: %w", err)
		}
		return buildAppliance(ctx, e, s, agent)
	}, show)
}

// buildAppliance builds the appliance into s with the vmb-agent binary agent, and
// makes it the cache's current one; vmb appliance build and a first solve use it.
func buildAppliance(ctx context.Context, e *env, s *cas.Store, agent string) (*appliance.Appliance, error) {
	work, err := s.Scratch("appliance-work")
	if err != nil {
		return nil, err
	}
	return appliance.Build(ctx, s, appliance.BuildOptions{WorkDir: work, Agent: agent, Log: e.stderr})
}

func printAppliance(c *cacheCmd, a *appliance.Appliance) {
	c.printf("appliance   %s\n", a.Digest)
	c.printf("identity    %s\n", a.Identity())
	c.printf("kernel      %s (%s, %s)\n", a.KernelVersion, a.Kernel.Short(), graph.FormatSize(a.KernelSize))
	c.printf("initramfs   %s (%s)\n", a.Initrd.Short(), graph.FormatSize(a.InitrdSize))
	c.printf("modules     %d\n", len(a.Modules))
	c.printf("packages   ")
	for _, p := range a.Packages {
		c.printf(" %s", p)
	}
	c.printf("\n")
}

// agentPath finds the vmb-agent binary: $VMB_AGENT, else beside the vmb executable.
func agentPath(e *env) string {
	if p := e.getenv("VMB_AGENT"); p != "" {
		return p
	}
	exe, err := os.Executable()
	if err != nil {
		return "vmb-agent"
	}
	return filepath.Join(filepath.Dir(exe), "vmb-agent")
}
