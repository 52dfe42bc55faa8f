package vmexec_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec"
)

// TestBootModeRefusals runs boot-mode steps on targets that cannot do one, and
// checks that each fails before any boot saying why: a disk with no boot loader
// (SeaBIOS would find nothing to boot, or hang in an empty MBR until the step
// times out), and a root without systemd. The Debian example (cmd/vmb TestDebianExample) boots a real
// target.
func TestBootModeRefusals(t *testing.T) {
	bb := hostBusybox(t)
	repo := t.TempDir()
	bin := filepath.Join(repo, "tree/bin")
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "busybox"), bb, 0o755)
	for _, applet := range []string{"sh", "rm", "mkdir", "cat", "ln", "printf", "tar", "dd", "sync", "["} {
		os.Symlink("busybox", filepath.Join(bin, applet))
	}
	// Boot code that would hang (jmp $), where SeaBIOS looks for a boot loader.
	os.WriteFile(filepath.Join(repo, "loop.bin"), []byte{0xeb, 0xfe}, 0o644)

	c := newChain(t, repo)
	c.must(&graph.CreateDisk{Disk: "root", Size: 64 << 20})
	c.must(&graph.Label{Disk: "root", Type: "gpt"})
	c.must(&graph.Partition{Disk: "root", Partitions: []graph.PartitionSpec{{Type: "primary", Name: "root"}}})
	c.must(&graph.Format{Place: place("root:1"), FS: "ext4"})
	c.must(&graph.CopyIn{Src: "tree", Dest: place("root:1:/")})
	boot := &graph.Run{Root: place("root:1"), Mode: "boot", Workdir: "/", Command: graph.Command{"/bin/sh", "-c", "true"}}

	fails := func(what, want string) {
		t.Helper()
		c.log.Reset()
		_, err := c.run(boot)
		var je *vmexec.JobError
		if err == nil || !strings.Contains(err.Error()+c.log.String(), want) {
			t.Errorf("%s: %v, want an error saying %q\n%s", what, err, want, c.log.String())
		} else if !errors.As(err, &je) {
			t.Errorf("%s: %v is not a job failure", what, err)
		}
	}
	fails("a disk without a boot loader", "has no BIOS boot loader")
	c.must(&graph.DD{Src: "loop.bin", Disk: "root"})
	fails("a root without systemd", "boot mode needs a target that boots with systemd")
}
