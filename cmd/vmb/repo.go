package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
)

// splitDir takes the build repository from the front of args: the first argument
// is a directory if it is ".", contains a "/", or names an existing directory, and
// is "." otherwise. It returns the directory and the rest.
func splitDir(args []string) (string, []string) {
	if len(args) > 0 {
		a := args[0]
		if a == "." || strings.Contains(a, "/") {
			return a, args[1:]
		}
		if fi, err := os.Stat(a); err == nil && fi.IsDir() {
			return a, args[1:]
		}
	}
	return ".", args
}

// compile compiles the repository in dir, printing errors as file:line:col lines.
// It returns the graph, or nil and the exit code.
func compile(e *env, dir string) (*graph.Graph, int) {
	opt := lang.Options{}
	if cache, err := cas.DefaultDir(e.getenv); err == nil {
		opt.StatCache = filepath.Join(cache, "stat-cache.json")
	}
	g, err := lang.Compile(dir, opt)
	var errs lang.Errors
	if errors.As(err, &errs) {
		for _, le := range errs {
			fmt.Fprintln(e.stderr, le.Error())
		}
		return nil, exitInvalid
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb:", err)
		return nil, exitInvalid
	}
	if e.getenv("VMB_DEBUG_KEYS") == "1" {
		for _, n := range g.Nodes {
			fmt.Fprintf(e.stderr, "vmb key %s (%s):\n%s\n", n.Key, n.Label(), n.Preimage)
		}
	}
	return g, exitOK
}

// registry is the list of imported build repositories, kept in the user's config.
type registry struct {
	path  string
	Repos map[string]string `json:"repos"` // name -> absolute directory
}

func registryPath(getenv func(string) string) (string, error) {
	if p := getenv("VMB_CONFIG"); p != "" {
		return filepath.Join(p, "repos.json"), nil
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "vmb", "repos.json"), nil
	}
	if h := getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "vmb", "repos.json"), nil
	}
	return "", errors.New("no config directory: set $VMB_CONFIG, $XDG_CONFIG_HOME or $HOME")
}

func loadRegistry(getenv func(string) string) (*registry, error) {
	p, err := registryPath(getenv)
	if err != nil {
		return nil, err
	}
	r := &registry{path: p, Repos: map[string]string{}}
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if r.Repos == nil {
		r.Repos = map[string]string{}
	}
	return r, nil
}

func (r *registry) save() error {
	b, _ := json.MarshalIndent(r, "", "  ")
	if err := os.MkdirAll(filepath.Dir(r.path), 0o755); err != nil {
		return err
	}
	tmp := r.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, r.path)
}

func (r *registry) names() []string {
	var names []string
	for n := range r.Repos {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// resolveRepo returns the directory of an imported repository or, failing that,
// the argument itself if it is a directory.
func resolveRepo(e *env, repo string) (string, error) {
	r, err := loadRegistry(e.getenv)
	if err != nil {
		return "", err
	}
	if d, ok := r.Repos[repo]; ok {
		return d, nil
	}
	if fi, err := os.Stat(repo); err == nil && fi.IsDir() {
		return repo, nil
	}
	return "", fmt.Errorf("no imported repository %q (imported: %s); vmb import --path DIR adds one", repo, strings.Join(r.names(), ", "))
}
