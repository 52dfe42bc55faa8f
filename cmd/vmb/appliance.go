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
	if len(args) == 0 || (args[0] != "build" && args[0] != "info") {
		fmt.Fprintln(e.stderr, "usage: vmb appliance build|info [flags]")
		return exitInvalid
	}
	c := newCacheCmd(e, "appliance "+args[0], "[--cache DIR] [--json]")
	agent := ""
	if args[0] == "build" {
		c.fs.StringVar(&agent, "agent", "", "the vmb-agent binary (default: vmb-agent beside vmb, or $VMB_AGENT)")
	}
	if code := c.parse(args[1:], 0, 0); code >= 0 {
		return code
	}
	if args[0] == "info" {
		return c.do(func(_ context.Context, s *cas.Store) (any, error) { return appliance.Load(s) }, func(v any) {
			printAppliance(c, v.(*appliance.Appliance))
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
	}, func(v any) { printAppliance(c, v.(*appliance.Appliance)) })
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
