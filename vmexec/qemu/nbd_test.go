package qemu

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// The NBD client reads a dirty bitmap as qemu's own NBD server exports it: a
// qcow2 image with a persistent bitmap, written by qemu-io in two places, served
// by qemu-nbd.
func TestDirtyExtents(t *testing.T) {
	for _, tool := range []string{"qemu-img", "qemu-io", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (dev/setup installs qemu-utils)", tool)
		}
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "d.qcow2")
	const size = 3<<30 + 64<<10 // more than one block status request
	run := func(name string, args ...string) {
		t.Helper()
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	run("qemu-img", "create", "-q", "-f", "qcow2", img, "3221291008")
	run("qemu-img", "bitmap", "--add", "-g", "65536", img, "b0")
	// 4 KiB in the first 64 KiB unit; 100 KiB across two units from 1 MiB; the
	// last unit, past 3 GiB.
	run("qemu-io", "-c", "write 4096 4096", "-c", "write 1048576 102400", "-c", "write 3221225472 1", img)
	sock := filepath.Join(dir, "nbd")
	srv := exec.Command("qemu-nbd", "--read-only", "--persistent", "-k", sock, "-B", "b0", "-x", "d", "-f", "qcow2", img)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got, err := dirtyExtents(t.Context(), sock, "d", "qemu:dirty-bitmap:b0", size)
	if err != nil {
		t.Fatal(err)
	}
	want := []Extent{{0, 64 << 10}, {1 << 20, 128 << 10}, {3 << 30, 64 << 10}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dirty extents (-want +got):\n%s", diff)
	}
	if _, err := dirtyExtents(t.Context(), sock, "d", "qemu:dirty-bitmap:none", size); err == nil {
		t.Error("a bitmap the server does not have: no error")
	}
}
