package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// config is the user's settings: what a team shares once instead of on every
// command line. The file is config in vmb's configuration directory ($VMB_CONFIG,
// else $XDG_CONFIG_HOME/vmb, else ~/.config/vmb, where vmb import keeps repos.json);
// lines `key = value` (values separated by spaces, a key given again adds to it),
// `#` comments, as nix.conf. A flag, then an environment variable, wins over the
// file.
type config struct {
	path       string
	remotes    []string // remote: what vmb solve reads when no --remote is given
	push       bool     // push: vmb solve pushes to those remotes
	trust      []string // trust: public key files (as $VMB_TRUST)
	signingKey string   // signing-key: a secret key file (as $VMB_SIGNING_KEY)
}

// configPath is where the config file is, whether or not it exists.
func configPath(e *env) string {
	if d := e.getenv("VMB_CONFIG"); d != "" {
		return filepath.Join(d, "config")
	}
	if d := e.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "vmb", "config")
	}
	if h := e.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "vmb", "config")
	}
	return ""
}

// loadConfig reads the config file; none is an empty config.
func loadConfig(e *env) (*config, error) {
	c := &config{path: configPath(e)}
	if c.path == "" {
		return c, nil
	}
	f, err := os.Open(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	home := e.getenv("HOME")
	path := func(p string) string {
		if rest, ok := strings.CutPrefix(p, "~/"); ok && home != "" {
			return filepath.Join(home, rest)
		}
		if !filepath.IsAbs(p) && !strings.Contains(p, "://") {
			return filepath.Join(filepath.Dir(c.path), p) // relative to the file
		}
		return p
	}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		if strings.TrimSpace(text) == "" {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		key, values := strings.TrimSpace(key), strings.Fields(value)
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s:%d: %s: %s", c.path, line, key, fmt.Sprintf(format, args...))
		}
		if !ok || len(values) == 0 {
			return nil, fmt.Errorf("%s:%d: want `key = value`, got %q", c.path, line, strings.TrimSpace(text))
		}
		switch key {
		case "remote":
			for _, v := range values {
				c.remotes = append(c.remotes, path(v))
			}
		case "trust":
			for _, v := range values {
				c.trust = append(c.trust, path(v))
			}
		case "push":
			if len(values) != 1 || values[0] != "true" && values[0] != "false" {
				return nil, bad("want true or false, got %q", strings.Join(values, " "))
			}
			c.push = values[0] == "true"
		case "signing-key":
			if len(values) != 1 {
				return nil, bad("want one key file, got %d", len(values))
			}
			c.signingKey = path(values[0])
		default:
			return nil, fmt.Errorf("%s:%d: unknown setting %q (remote, push, trust, signing-key)", c.path, line, key)
		}
	}
	return c, sc.Err()
}
