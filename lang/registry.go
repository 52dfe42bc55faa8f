package lang

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"vmb.dev/vmb/internal/atomicfile"
)

// Registry is the list of imported build repositories (vmb import), kept as JSON in
// a file of the user's configuration directory:
//
//	{"repos": [{"name": "web", "path": "/home/me/src/web-images"}]}
type Registry struct {
	path  string
	Repos []Repo `json:"repos"` // sorted by name
}

// Repo is an imported build repository: a name for a directory.
type Repo struct {
	Name string `json:"name"`
	Path string `json:"path"` // absolute
}

// DefaultConfigDir returns vmb's configuration directory: $VMB_CONFIG, else
// $XDG_CONFIG_HOME/vmb, else $HOME/.config/vmb.
func DefaultConfigDir(getenv func(string) string) (string, error) {
	if d := getenv("VMB_CONFIG"); d != "" {
		return d, nil
	}
	if d := getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "vmb"), nil
	}
	if d := getenv("HOME"); d != "" {
		return filepath.Join(d, ".config", "vmb"), nil
	}
	return "", errors.New("no configuration directory: set $VMB_CONFIG, $XDG_CONFIG_HOME or $HOME")
}

// RegistryFile is the registry's file name in the configuration directory.
const RegistryFile = "repos.json"

// OpenRegistry reads the registry in the configuration directory dir; a missing
// file is an empty registry.
func OpenRegistry(dir string) (*Registry, error) {
	r := &Registry{path: filepath.Join(dir, RegistryFile)}
	b, err := os.ReadFile(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("%s: %w", r.path, err)
	}
	return r, nil
}

var repoName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]*$`)

// Add records dir under name, replacing what name meant before, and saves.
func (r *Registry) Add(name, dir string) error {
	if !repoName.MatchString(name) {
		return fmt.Errorf("repository name %q: want letters, digits, '.', '_' or '-'", name)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	r.Repos = append(r.Repos[:0:0], r.Repos...)
	if i := r.index(name); i >= 0 {
		r.Repos[i].Path = abs
	} else {
		r.Repos = append(r.Repos, Repo{Name: name, Path: abs})
	}
	sort.Slice(r.Repos, func(i, j int) bool { return r.Repos[i].Name < r.Repos[j].Name })
	return r.save()
}

// Lookup returns the repository called name.
func (r *Registry) Lookup(name string) (Repo, bool) {
	if i := r.index(name); i >= 0 {
		return r.Repos[i], true
	}
	return Repo{}, false
}

func (r *Registry) index(name string) int {
	for i, repo := range r.Repos {
		if repo.Name == name {
			return i
		}
	}
	return -1
}

func (r *Registry) save() error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(r.path, append(b, '\n'), 0o644)
}
