package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/servertest"
	"vmb.dev/vmb/lang"
)

// runVMB runs vmb with args and the environment vars, and returns its exit code and output.
func runVMB(t *testing.T, vars map[string]string, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := Main(args, &env{stdout: &out, stderr: &out, getenv: func(k string) string { return vars[k] }})
	return code, out.String()
}

// seedCache makes a cache with one record (a blob output) and a ref to it.
func seedCache(t *testing.T, dir string) cas.ActionID {
	t.Helper()
	s, err := cas.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.PutBytes(bytes.Repeat([]byte("vmb "), 100000))
	if err != nil {
		t.Fatal(err)
	}
	a := cas.ActionID(cas.Sum([]byte("a job")))
	rec := &cas.Result{Outputs: []cas.Output{{Name: "file:out", Kind: cas.KindBlob, Digest: d}},
		Executor: "test", Created: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	if err := s.PutAction(a, rec); err != nil {
		t.Fatal(err)
	}
	if err := s.SetRef("last/test", &cas.Ref{Actions: []cas.ActionID{a}}); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCachePushPull(t *testing.T) {
	for _, kind := range []string{"dir", "nginx"} {
		t.Run(kind, func(t *testing.T) {
			tmp := t.TempDir()
			url := filepath.Join(tmp, "remote")
			if kind == "nginx" {
				url = servertest.Nginx(t).URL + "/" + filepath.Base(tmp)
			}
			keyDir := filepath.Join(tmp, "keys")
			if code, out := runVMB(t, nil, "key", "generate", "--out", filepath.Join(keyDir, "ci"), "ci"); code != 0 {
				t.Fatalf("key generate: %s", out)
			}
			a := seedCache(t, filepath.Join(tmp, "a"))
			envA := map[string]string{"VMB_CACHE": filepath.Join(tmp, "a"), "VMB_SIGNING_KEY": filepath.Join(keyDir, "ci.secret")}
			code, out := runVMB(t, envA, "cache", "push", url)
			if code != 0 || !strings.Contains(out, "pushed 1 action records, 1 refs and 1 objects") {
				t.Fatalf("cache push: %d %s", code, out)
			}

			envB := map[string]string{"VMB_CACHE": filepath.Join(tmp, "b")}
			code, out = runVMB(t, envB, "cache", "pull", url)
			if code == 0 || !strings.Contains(out, "no key is trusted") {
				t.Errorf("cache pull with no trusted key: %d %s, want refused", code, out)
			}
			envB["VMB_TRUST"] = filepath.Join(keyDir, "ci.public")
			code, out = runVMB(t, envB, "cache", "pull", url)
			if code != 0 || !strings.Contains(out, "pulled 1 action records, 1 refs and 1 objects") {
				t.Fatalf("cache pull: %d %s", code, out)
			}
			if code, out := runVMB(t, envB, "cache", "verify"); code != 0 {
				t.Errorf("cache verify after pull: %s", out)
			}
			code, out = runVMB(t, envB, "cache", "pull", url, a.String())
			if code != 0 || !strings.Contains(out, "pulled 0 action records, 0 refs and 0 objects (0 B); 1 records") {
				t.Errorf("cache pull of a record it has: %d %s", code, out)
			}
			if _, err := os.Stat(filepath.Join(keyDir, "ci.secret")); err != nil {
				t.Error(err)
			}
			if code, _ := runVMB(t, nil, "key", "generate", "--out", filepath.Join(keyDir, "ci"), "ci"); code == 0 {
				t.Error("key generate replaced a key")
			}
		})
	}
}

// TestCachePushPullImages pushes and pulls the records of named images of a
// repository: what this cache has of them (push), what the remote has (pull), and
// nothing of an image not named.
func TestCachePushPullImages(t *testing.T) {
	tmp := t.TempDir()
	repo := filepath.Join(tmp, "repo")
	os.MkdirAll(repo, 0o755)
	os.WriteFile(filepath.Join(repo, "site.cue"), []byte(`package site
images: a: {disks: d: "16MiB", steps: [
	{job: "format", place: "d", fs: "ext4"},
	{job: "run", root: "d", command: "true"},
	{job: "run", root: "d", command: "false"},
]}
images: b: {disks: d: "20MiB", steps: [{job: "format", place: "d", fs: "ext2"}]}
`), 0o644)
	cacheA := filepath.Join(tmp, "a")
	g, code := compileWith(&env{stdout: os.Stdout, stderr: os.Stderr, getenv: func(string) string { return "" }}, repo, cacheA, lang.PlaceholderExecutor, nil)
	if code >= 0 {
		t.Fatalf("compile: exit %d", code)
	}
	s, err := cas.Open(cacheA)
	if err != nil {
		t.Fatal(err)
	}
	record := func(n *graph.Node) {
		d, err := s.PutBytes([]byte(n.Key.String()))
		if err != nil {
			t.Fatal(err)
		}
		rec := &cas.Result{Outputs: []cas.Output{{Name: "file:x", Kind: cas.KindBlob, Digest: d}}, Executor: n.Executor}
		if err := s.PutAction(cas.ActionID(n.Key), rec); err != nil {
			t.Fatal(err)
		}
	}
	// This cache has a's disk, its format and its first run, and all of b.
	a, _ := g.Select("a")
	for _, n := range a[:3] {
		record(n)
	}
	b, _ := g.Select("b")
	for _, n := range b {
		record(n)
	}
	url := filepath.Join(tmp, "remote")
	envA := map[string]string{"VMB_CACHE": cacheA}
	code, out := runVMB(t, envA, "cache", "push", url, repo, "a")
	if code != 0 || !strings.Contains(out, "pushed 3 action records, 0 refs and 3 objects") {
		t.Fatalf("cache push of image a: %d %s", code, out)
	}
	envB := map[string]string{"VMB_CACHE": filepath.Join(tmp, "b")}
	code, out = runVMB(t, envB, "cache", "pull", "--trust-unsigned", url, repo, "a", "b")
	if code != 0 || !strings.Contains(out, "pulled 3 action records") {
		t.Fatalf("cache pull of images a and b: %d %s", code, out)
	}
	sb, _ := cas.Open(filepath.Join(tmp, "b"))
	for i, n := range append(a, b...) {
		_, err := sb.GetAction(cas.ActionID(n.Key))
		if want := i < 3; (err == nil) != want {
			t.Errorf("after the pull, node %s recorded: %v, want %v", n.Label(), err == nil, want)
		}
	}
	if code, out := runVMB(t, envA, "cache", "push", url, repo, "nosuch"); code == 0 || !strings.Contains(out, "nosuch") {
		t.Errorf("cache push of an image the repository has not: %d %s", code, out)
	}
}
