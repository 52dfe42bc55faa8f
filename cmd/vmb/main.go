// Command vmb builds virtual-machine images from CUE definitions, incrementally.
//
// This package wires flags to the library packages; it holds no build logic.
// Each subcommand lives in its own file.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailed  = 1 // a job or an operation failed
	exitInvalid = 2 // bad usage or invalid definitions
)

// env is what a subcommand may touch of the outside world.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

type command struct {
	usage string // one line: arguments after the command name
	short string
	run   func(e *env, args []string) int
}

// commands is the table of subcommands; each is defined in its own file.
func commands() map[string]command {
	return map[string]command{
		"cache":     {usage: "stats|verify|gc|ingest|materialize|sync|push|pull [flags]", short: "inspect, check, trim and share the build cache", run: runCache},
		"list":      {usage: "[--cache DIR] [-t KEY=VALUE]... [DIR | REPO]", short: "list imported repositories, or the images of one", run: runList},
		"graph":     {usage: "[--format text|json|dot] [--cache DIR] [-t KEY=VALUE]... [--repo NAME] [DIR] [IMAGE...]", short: "print the build DAG with every node's key", run: runGraph},
		"diff":      {usage: "[--cache DIR] [--json] [--chunks] [--disk NAME] [--repo DIR|NAME] A B", short: "where and how two disk snapshots differ (exit 1 if they do)", run: runDiff},
		"explain":   {usage: "[--cache DIR] [-t KEY=VALUE]... [--repo NAME] [DIR] IMAGE [STEP] | KEY", short: "print a node's key and the preimage it hashes", run: runExplain},
		"import":    {usage: "--path DIR [--name NAME]", short: "record a build repository under a name", run: runImport},
		"solve":     {usage: "[flags] [DIR] [IMAGE...]", short: "build images, running only what is not cached", run: runSolve},
		"check":     {usage: "[--cache DIR] [-t KEY=VALUE]... [--from STEP] [--sample N] [--keep-going] [--json] [DIR] [IMAGE...]", short: "rebuild recorded nodes and compare: prove a build reproducible", run: runCheck},
		"build":     {usage: "[flags] --repo REPO [--name IMAGE]...", short: "vmb solve, spelled as vm-builder spelled it", run: runBuild},
		"shell":     {usage: "[--cache DIR] [-t KEY=VALUE]... [--repo NAME] [-x] [--no-appliance-build] [DIR] IMAGE [STEP]", short: "a shell in the build VM on an image's state before a step", run: runShell},
		"appliance": {usage: "build|info [flags]", short: "build or describe the build VM", run: runAppliance},
		"key":       {usage: "generate [--out PREFIX] NAME", short: "make a key pair that signs the records a cache pushes", run: runKey},
		"version":   {usage: "[--cache DIR] [--json]", short: "print vmb's version, its protocol and the cache's appliance", run: runVersion},
	}
}

func main() {
	os.Exit(Main(os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}))
}

// Main runs vmb with args and returns its exit code.
func Main(args []string, e *env) int {
	cmds := commands()
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(e.stderr, cmds)
		if len(args) == 0 {
			return exitInvalid
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	c, ok := cmds[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "vmb: unknown command %q\n", args[0])
		usage(e.stderr, cmds)
		return exitInvalid
	}
	return c.run(e, args[1:])
}

func usage(w io.Writer, cmds map[string]command) {
	fmt.Fprintln(w, "usage: vmb <command> [flags] [args]")
	fmt.Fprintln(w, "       vmb --version")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s %s\n", n, cmds[n].short)
	}
	fmt.Fprintln(w, "\nSee BUILD.md for the reference of every command and flag.")
}

// newFlags returns a flag set that reports errors on e.stderr and does not exit.
func newFlags(e *env, name, args string) *flag.FlagSet {
	fs := flag.NewFlagSet("vmb "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: vmb %s %s\n", name, args)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args into fs and returns the exit code to use if it failed, or -1.
func parse(fs *flag.FlagSet, args []string) int {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		return exitInvalid
	}
	return -1
}
