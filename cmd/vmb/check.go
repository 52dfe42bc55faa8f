package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"vmb.dev/vmb/solver"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/qemu"
)

// exitDiffers is vmb check's status when a rebuild differs from its record: Nix's
// (nix-build --check), which tools that verify builds already know.
const exitDiffers = 104

// The conditions a check varies from a usual solve's, so that a build that depends
// on them shows it (reprotest's list is the model). BUILD.md "Verifying a build"
// says the same.
const (
	checkMemory  = 768                   // MiB; a solve's build VM has 512
	checkCPUs    = 2                     // a solve's has 1
	checkRTCBase = "2031-06-01T12:00:00" // a solve's guest clock starts at the host's time
)

func runCheck(e *env, args []string) int {
	fs := newFlags(e, "check", "[--cache DIR] [-t KEY=VALUE]... [--from STEP] [--sample N] [--keep-going] [--json] [-x] [DIR] [IMAGE...]")
	cacheDir := cacheFlag(fs)
	tags := tagsFlag(fs)
	from := fs.Int("from", 0, "check each image from this step on (its index in steps); earlier steps are taken as recorded")
	sample := fs.Int("sample", 0, "check this many nodes drawn at random, not all")
	seed := fs.Uint64("seed", 0, "the seed of --sample's draw (default: a new one each time)")
	keepGoing := fs.Bool("keep-going", false, "go on past a difference, each later node from its recorded input")
	asJSON := fs.Bool("json", false, "one JSON object per node")
	verbose := fs.Bool("x", false, "print each job's qemu command line in its log")
	var noApplianceBuild bool
	noApplianceBuildFlag(fs, &noApplianceBuild)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	dir, _, images, code := repository(e, "", fs.Args())
	if code >= 0 {
		return code
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	store, g, app, code := openPrepared(ctx, e, *cacheDir, dir, *tags, nil, noApplianceBuild, false)
	if code >= 0 {
		return code
	}
	// Another temp dir path, more memory, more CPUs, a clock elsewhere.
	tmp, err := os.MkdirTemp("", "vmb-check-")
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	defer os.RemoveAll(tmp)
	tmp = filepath.Join(tmp, "a", "longer", "path")
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return exitFailed
	}
	x := &vmexec.Executor{Store: store, Appliance: app, KVM: qemu.KVMUsable(), Verbose: *verbose, RepoDir: g.Dir,
		TmpDir: tmp, Memory: checkMemory, CPUs: checkCPUs, RTCBase: checkRTCBase, NoWarm: true}
	defer x.Close()
	if *sample > 0 && *seed == 0 {
		*seed = uint64(os.Getpid())<<32 ^ uint64(len(g.Nodes))
	}
	counts := map[string]int{}
	each := func(r solver.CheckResult) {
		counts[r.Verdict]++
		if *asJSON {
			printCheckJSON(e, r)
			return
		}
		fmt.Fprintf(e.stdout, "%-13s %s  %s\n", r.Verdict, r.Node.Key.Short(), r.Node.Label())
		for _, d := range r.Differing {
			fmt.Fprintf(e.stdout, "    %s: recorded %s, rebuilt %s: vmb diff %s %s\n", d.Name, d.Recorded.Short(), d.Rebuilt.Short(), d.Recorded, d.Rebuilt)
		}
		if r.Err != nil {
			fmt.Fprintf(e.stdout, "    %v\n", r.Err)
		}
	}
	s := solver.New(store, x, solver.Options{Jobs: 1})
	_, err = s.Check(ctx, g, solver.CheckOptions{From: *from, Sample: *sample, Seed: *seed, KeepGoing: *keepGoing, Each: each}, images...)
	if !*asJSON {
		fmt.Fprintf(e.stderr, "%d reproducible, %d differ, %d failed, %d not recorded, %d not checked\n",
			counts[solver.Reproducible], counts[solver.Differs], counts[solver.CheckFailed], counts[solver.NotRecorded], counts[solver.NotChecked])
	}
	switch {
	case err != nil:
		fmt.Fprintln(e.stderr, "vmb check:", err)
		return exitFailed
	case counts[solver.Differs] > 0:
		return exitDiffers
	case counts[solver.CheckFailed] > 0:
		return exitFailed
	}
	return exitOK
}

func printCheckJSON(e *env, r solver.CheckResult) {
	type diff struct {
		Output   string `json:"output"`
		Recorded string `json:"recorded"`
		Rebuilt  string `json:"rebuilt,omitempty"`
	}
	v := struct {
		Node      string `json:"node"`
		Key       string `json:"key"`
		Verdict   string `json:"verdict"`
		Differing []diff `json:"differing,omitempty"`
		Error     string `json:"error,omitempty"`
	}{Node: r.Node.Label(), Key: r.Node.Key.String(), Verdict: r.Verdict}
	for _, d := range r.Differing {
		dd := diff{Output: d.Name, Recorded: d.Recorded.String()}
		if !d.Rebuilt.IsZero() {
			dd.Rebuilt = d.Rebuilt.String()
		}
		v.Differing = append(v.Differing, dd)
	}
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	b, _ := json.Marshal(v)
	fmt.Fprintln(e.stdout, string(b))
}
