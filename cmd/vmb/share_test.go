package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/internal/servertest"
	"vmb.dev/vmb/vmexec/vmtest"
)

// TestShareBetweenMachines is two machines sharing a cache through each kind of
// remote, with two caches and two config files on one machine: A builds hello and
// a 10-step image whose output is a hash, and pushes them (and so its appliance);
// B starts with an empty cache and no appliance, its config naming the remote and
// A's public key, and solves both: it runs no job, takes A's appliance, and writes
// outputs byte-identical to A's, pulling the outputs' blobs and not the disks'
// chunks.
func TestShareBetweenMachines(t *testing.T) {
	vmtest.Require(t)
	tmp := t.TempDir()
	cacheA := filepath.Join(tmp, "a")
	if err := vmtest.SeedDir(cacheA); err != nil {
		t.Fatal(err)
	}
	hello, _ := filepath.Abs("../../testdata/examples/hello")
	ten := filepath.Join(tmp, "ten")
	steps := `{job: "format", place: "root", fs: "ext4"},`
	for i := range 8 {
		os.MkdirAll(filepath.Join(ten, "files"), 0o755)
		os.WriteFile(filepath.Join(ten, "files", fmt.Sprint(i)), bytes.Repeat([]byte{byte('a' + i)}, 1<<20), 0o644)
		steps += fmt.Sprintf(`{job: "copy-in", src: "files/%d", dest: "root:/%d"},`, i, i)
	}
	os.WriteFile(filepath.Join(ten, "ten.cue"), []byte(`package ten
images: ten: {disks: root: "64MiB", steps: [`+steps+`{job: "hash", disk: "root", dest: "root.b3"}]}
`), 0o644)
	repos := []string{hello, ten}
	keys := filepath.Join(tmp, "keys")
	if code, out := runVMB(t, nil, "key", "generate", "--out", filepath.Join(keys, "a"), "machine-a"); code != 0 {
		t.Fatal(out)
	}
	solve := func(vars map[string]string, out, repo string) summary {
		t.Helper()
		var stdout, stderr bytes.Buffer
		e := &env{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return vars[k] }}
		if code := Main([]string{"solve", "--out", out, "--progress", "json", repo}, e); code != 0 {
			t.Fatalf("vmb solve %s: exit %d\n%s\n%s", repo, code, stderr.Bytes(), tailLines(stdout.String(), 30))
		}
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		var s summary
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	noConfig := filepath.Join(tmp, "no-config")
	varsA := map[string]string{"VMB_CACHE": cacheA, "VMB_CONFIG": noConfig}
	outA := filepath.Join(tmp, "out-a")
	for _, repo := range repos {
		solve(varsA, outA, repo)
	}
	sizeA := dirSize(t, filepath.Join(cacheA, "objects"))

	for _, kind := range []string{"dir", "nginx", "s3"} {
		t.Run(kind, func(t *testing.T) {
			url := filepath.Join(tmp, "remote-dir")
			switch kind {
			case "nginx":
				url = servertest.Nginx(t).URL + "/share"
			case "s3":
				s := servertest.S3(t)
				s.Setenv(t)
				url = s.URL + "/share"
			}
			pushA := map[string]string{"VMB_CACHE": cacheA, "VMB_CONFIG": noConfig, "VMB_SIGNING_KEY": filepath.Join(keys, "a.secret")}
			for _, repo := range repos {
				if code, out := runVMB(t, pushA, "cache", "push", url, repo); code != 0 || !strings.Contains(out, "pushed") {
					t.Fatalf("machine A: cache push %s: %s", repo, out)
				}
			}

			b := filepath.Join(tmp, "b-"+kind)
			config := filepath.Join(b, "config")
			os.MkdirAll(b, 0o755)
			os.WriteFile(config, []byte("remote = "+url+"\ntrust = "+filepath.Join(keys, "a.public")+"\n"), 0o644)
			varsB := map[string]string{"VMB_CACHE": filepath.Join(b, "cache"), "VMB_CONFIG": b, "HOME": b}
			outB := filepath.Join(b, "out")
			for _, repo := range repos {
				if s := solve(varsB, outB, repo); s.Executed != 0 || s.Failed != 0 {
					t.Errorf("machine B solved %s with %d jobs run, %d failed; want none", filepath.Base(repo), s.Executed, s.Failed)
				}
			}
			compareTrees(t, outA, outB)
			if code, out := runVMB(t, varsB, "cache", "verify"); code != 0 {
				t.Errorf("machine B: cache verify: %s", out)
			}
			if kind == "dir" {
				// Tampering: a changed byte in the remote's copy of hello.qcow2. A new
				// machine refuses that record, says so, runs the export itself, and
				// gets the same bytes; its cache stays consistent.
				qcow, err := os.ReadFile(filepath.Join(outA, "hello", "hello.qcow2"))
				if err != nil {
					t.Fatal(err)
				}
				blobs, _ := filepath.Glob(filepath.Join(url, "objects", "*", cas.Sum(qcow).String()))
				if len(blobs) != 1 {
					t.Fatalf("the remote's blob of hello.qcow2: found %v", blobs)
				}
				stored, _ := os.ReadFile(blobs[0])
				stored[len(stored)/2] ^= 1
				os.WriteFile(blobs[0], stored, 0o644)
				c := filepath.Join(tmp, "c")
				varsC := map[string]string{"VMB_CACHE": c, "VMB_CONFIG": b}
				var stdout, stderr bytes.Buffer
				e := &env{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return varsC[k] }}
				if code := Main([]string{"solve", "--out", filepath.Join(tmp, "out-c"), "--progress", "plain", hello}, e); code != 0 {
					t.Fatalf("machine C: exit %d\n%s", code, stderr.String())
				}
				if !strings.Contains(stderr.String(), "warning") || !strings.Contains(stderr.String(), "1 executed") {
					t.Errorf("machine C: want a warning about the corrupt blob and the export run again:\n%s", stderr.String())
				}
				compareTrees(t, filepath.Join(outA, "hello"), filepath.Join(tmp, "out-c", "hello"))
				if code, out := runVMB(t, varsC, "cache", "verify"); code != 0 {
					t.Errorf("machine C: cache verify: %s", out)
				}
			}
			sizeB := dirSize(t, filepath.Join(b, "cache", "objects"))
			t.Logf("machine B's blobs: %d KiB after both solves, machine A's %d KiB", sizeB>>10, sizeA>>10)
			if sizeB >= sizeA {
				t.Errorf("machine B pulled %d bytes of blobs, as much as A has (%d): the disks' chunks came too", sizeB, sizeA)
			}
		})
	}
}

// compareTrees fails unless every file under a is under b with the same bytes.
func compareTrees(t *testing.T, a, b string) {
	t.Helper()
	n := 0
	err := filepath.Walk(a, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || strings.HasPrefix(fi.Name(), ".vmb") {
			return err
		}
		rel, _ := filepath.Rel(a, p)
		x, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		y, err := os.ReadFile(filepath.Join(b, rel))
		if err != nil {
			t.Errorf("output %s: %v", rel, err)
			return nil
		}
		if !bytes.Equal(x, y) {
			t.Errorf("output %s differs between the machines", rel)
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("compare outputs: %d files, %v", n, err)
	}
}

// dirSize is the bytes of the files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}
