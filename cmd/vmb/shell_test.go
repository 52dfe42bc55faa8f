package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/appliance"
	"vmb.dev/vmb/vmexec/vmtest"
)

// vmb runs the CLI in the test's process with stdin and returns its exit code,
// stdout and stderr.
func vmb(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{stdin: strings.NewReader(stdin), stdout: &stdout, stderr: &stderr, getenv: os.Getenv}
	code := Main(args, e)
	return code, stdout.String(), stderr.String()
}

// storeFiles lists the objects and action records of a cache with their sizes.
func storeFiles(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	files := map[string]int64{}
	for _, sub := range []string{"objects", "actions"} {
		filepath.WalkDir(filepath.Join(dir, sub), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(dir, p)
			files[rel] = fi.Size()
			return nil
		})
	}
	return files
}

// TestShell: a solve fails at a step and prints the vmb shell command for the state
// that step started from; that command boots the build VM on that state, with the
// target mounted, takes commands on stdin, and leaves the cache as it was and no
// process or temp file behind.
func TestShell(t *testing.T) {
	if testing.Short() {
		t.Skip("boots the build VM")
	}
	cache := t.TempDir()
	store, err := cas.Open(cache)
	if err != nil {
		t.Fatal(err)
	}
	vmtest.Seed(t, store)
	tmp := t.TempDir() // the executor's disks go to $TMPDIR
	t.Setenv("TMPDIR", tmp)
	t.Setenv("VMB_CONFIG", t.TempDir())

	repo := t.TempDir()
	os.MkdirAll(filepath.Join(repo, "files/etc"), 0o755)
	os.WriteFile(filepath.Join(repo, "files/etc/motd"), []byte("hello from the repository\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "build.cue"), []byte(`package t

images: t: {
	disks: fs: "48MiB"
	steps: [
		{job: "format", place: "fs", fs: "ext4"},
		{job: "copy-in", src: "files/etc", dest: "fs:/etc"},
		{job: "run", root: "fs", command: ["/no/such/command"], workdir: "/etc"},
	]
}
`), 0o644)

	code, _, stderr := vmb(t, "", "solve", "--cache", cache, "--out", filepath.Join(t.TempDir(), "out"), "--progress", "plain", repo)
	if code != exitFailed {
		t.Fatalf("solve: exit %d, want %d (the run step fails)\n%s", code, exitFailed, stderr)
	}
	m := regexp.MustCompile(`a shell on the state it started from: (vmb shell .*)`).FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("the failed solve does not say which vmb shell to run:\n%s", stderr)
	}
	if want := "vmb shell --cache " + cache + " " + repo + " t 2"; m[1] != want {
		t.Fatalf("failed solve prints %q, want %q", m[1], want)
	}

	before, stats := storeFiles(t, cache), mustStats(t, store)
	input := "ls /dev/vd*\ncat /proc/mounts\ncat /mnt/target/fs/etc/motd\npwd\necho made > /mnt/target/fs/new-file\necho the answer is $((6*7))\nexit\n"
	code, stdout, stderr := vmb(t, input, strings.Fields(m[1])[1:]...)
	if code != exitOK {
		t.Fatalf("vmb shell: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	t.Logf("the session:\n%s", stdout)
	for _, want := range []string{
		"/dev/vdb /mnt/target/fs ext4 rw",                                // the target's filesystem, mounted
		"proc /mnt/target/fs/proc proc",                                  // the run step's root, prepared as the step has it
		"hello from the repository",                                      // what the steps before left
		"chroot /mnt/target/fs /bin/sh -c 'cd /etc && /no/such/command'", // what the step would run
		"(vmb shell) /mnt/target/fs # ",                                  // the prompt, in the step's root
		"/mnt/target/fs\r\n",                                             // pwd
		"the answer is 42",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the session's output lacks %q", want)
		}
	}
	if !regexp.MustCompile(`(?m)^/dev/vda +/dev/vdb\r?$`).MatchString(stdout) {
		t.Errorf("ls /dev/vd* should show the job disk and the target disk only")
	}
	if strings.Contains(stdout, "VMB-READY") || strings.Contains(stdout, "VMB-RESULT") || strings.Contains(stdout, "\x1b[?7l") {
		t.Errorf("protocol lines or the firmware's escapes reached the user:\n%q", stdout)
	}
	if !strings.Contains(stderr, "before t[2] run") || !strings.Contains(stderr, "the session ended") {
		t.Errorf("vmb shell's messages:\n%s", stderr)
	}

	// Nothing entered the cache; nothing is left running or on disk.
	if diff := cmp.Diff(before, storeFiles(t, cache)); diff != "" {
		t.Errorf("the shell changed the cache's objects or actions (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(stats, mustStats(t, store)); diff != "" {
		t.Errorf("the shell changed the cache's stats (-before +after):\n%s", diff)
	}
	if out, _ := exec.Command("pgrep", "-af", "qemu-system.*"+tmp).Output(); len(out) > 0 {
		t.Errorf("qemu still running:\n%s", out)
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("left in the temp dir: %v", left)
	}

	// What the session wrote is gone: a second session starts from the same state.
	code, stdout, stderr = vmb(t, "ls /mnt/target/fs/new-file\n", strings.Fields(m[1])[1:]...)
	if code != exitOK || !strings.Contains(stdout, "/mnt/target/fs/new-file: No such file or directory") {
		t.Errorf("second session: exit %d, the first one's file is not gone:\n%s\n%s", code, stdout, stderr)
	}

	// The image's final state was never built: the shell builds it, and says
	// that it could not, since a step fails.
	code, _, stderr = vmb(t, "", "shell", "--cache", cache, repo, "t")
	if code != exitFailed || !strings.Contains(stderr, "is not in the cache: building it") || !strings.Contains(stderr, "could not be built") ||
		!strings.Contains(stderr, "FAILED") {
		t.Errorf("shell on a state not in the cache: exit %d\n%s", code, stderr)
	}
	// Before the first node there is nothing.
	code, _, stderr = vmb(t, "", "shell", "--cache", cache, repo, "t", "disks.fs")
	if code != exitInvalid || !strings.Contains(stderr, "no disk exists yet") {
		t.Errorf("shell before the first node: exit %d\n%s", code, stderr)
	}

	// The state step 2 starts from was collected: the shell builds it again
	// (that step alone) and opens it.
	app, err := appliance.Load(store)
	if err != nil {
		t.Fatal(err)
	}
	g, err := lang.Compile(t.Context(), repo, lang.Options{Executor: (&vmexec.Executor{Store: store, Appliance: app}).Identity()})
	if err != nil {
		t.Fatal(err)
	}
	im, _ := g.Image("t")
	step, err := im.Find("2")
	if err != nil {
		t.Fatal(err)
	}
	k := step.Node.Parent.Key.String()
	if err := os.Remove(filepath.Join(cache, "actions", k[:2], k)); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = vmb(t, "cat /mnt/target/fs/etc/motd\nexit\n", strings.Fields(m[1])[1:]...)
	if code != exitOK || !strings.Contains(stderr, "not in the cache: building it") || !strings.Contains(stderr, "1 executed, 2 cached") ||
		!strings.Contains(stdout, "hello from the repository") {
		t.Errorf("shell on a collected state: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}

func mustStats(t *testing.T, s *cas.Store) *cas.Stats {
	t.Helper()
	st, err := s.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st
}
