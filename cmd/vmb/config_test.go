package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestConfig(t *testing.T) {
	home := t.TempDir()
	dir := filepath.Join(home, ".config", "vmb")
	os.MkdirAll(dir, 0o755)
	write := func(text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "config"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	vars := map[string]string{"HOME": home}
	e := &env{getenv: func(k string) string { return vars[k] }}

	write(`# the team's cache
remote = s3://team/vmb https://cache.example/vmb   # read in order
remote = ~/mirror
push = true
trust = team.public
signing-key = ~/me.secret
`)
	c, err := loadConfig(e)
	if err != nil {
		t.Fatal(err)
	}
	want := &config{path: filepath.Join(dir, "config"), remotes: []string{"s3://team/vmb", "https://cache.example/vmb", filepath.Join(home, "mirror")},
		push: true, trust: []string{filepath.Join(dir, "team.public")}, signingKey: filepath.Join(home, "me.secret")}
	if diff := cmp.Diff(want, c, cmp.AllowUnexported(config{})); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}

	// The key files it names are what keys() reads, unless a flag or the
	// environment names others.
	if code, out := runVMB(t, nil, "key", "generate", "--out", filepath.Join(dir, "team"), "team"); code != 0 {
		t.Fatal(out)
	}
	if code, out := runVMB(t, nil, "key", "generate", "--out", filepath.Join(home, "me"), "me"); code != 0 {
		t.Fatal(out)
	}
	trust, key, err := (&remoteArgs{}).keys(e)
	if err != nil || len(trust.Keys) != 1 || key == nil {
		t.Errorf("keys from the config: %d trusted, signing key %v, %v", len(trust.Keys), key != nil, err)
	}
	vars["VMB_TRUST"] = filepath.Join(home, "me.public") + " " + filepath.Join(dir, "team.public")
	if trust, _, err := (&remoteArgs{}).keys(e); err != nil || len(trust.Keys) != 2 {
		t.Errorf("$VMB_TRUST over the config: %d trusted, %v", len(trust.Keys), err)
	}

	for text, msg := range map[string]string{
		"remote = x\ncolour = blue\n": "config:2: unknown setting \"colour\"",
		"push = yes\n":                "config:1: push: want true or false",
		"remote\n":                    "config:1: want `key = value`",
		"signing-key = a b\n":         "config:1: signing-key: want one key file",
	} {
		write(text)
		if _, err := loadConfig(e); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("config %q: %v, want %q", text, err, msg)
		}
	}
	// A bad config stops a solve before it does anything, naming the line.
	write("push = maybe\n")
	code, out := runVMB(t, vars, "solve", "--dry-run", t.TempDir())
	if code != exitInvalid || !strings.Contains(out, "config:1: push") {
		t.Errorf("solve with a bad config: %d %s", code, out)
	}
	// No file: nothing set; $VMB_CONFIG names another directory.
	vars["VMB_CONFIG"] = t.TempDir()
	if c, err := loadConfig(e); err != nil || c.remotes != nil || c.push {
		t.Errorf("no config file: %+v, %v", c, err)
	}
}
