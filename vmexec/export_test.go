package vmexec

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/cas"
)

// The same disk exported twice gives the same image, in every format but vhdx, and
// the image is sound to qemu-img.
func TestExportReproducible(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (dev/setup installs it)")
	}
	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	x := &Executor{Store: store}
	raw := filepath.Join(t.TempDir(), "disk.raw")
	f, _ := os.Create(raw)
	f.Truncate(64 << 20)
	f.WriteAt([]byte("a disk with something on it"), 3<<20)
	f.Close()
	for _, format := range []string{"raw", "qcow2", "vmdk", "vdi"} {
		var got [2]cas.Digest
		for i := range got {
			work := t.TempDir()
			if got[i], err = x.export(t.Context(), work, raw, format, "key1", io.Discard); err != nil {
				t.Fatalf("%s: %v", format, err)
			}
			if format == "raw" {
				continue
			}
			out := filepath.Join(work, "export."+format)
			if b, err := exec.Command("qemu-img", "check", "-f", format, out).CombinedOutput(); err != nil || strings.Contains(string(b), "ERROR") {
				t.Errorf("qemu-img check of the %s export: %v\n%s", format, err, b)
			}
			// The image still holds the disk.
			back := filepath.Join(work, "back.raw")
			if b, err := exec.Command("qemu-img", "convert", "-f", format, "-O", "raw", out, back).CombinedOutput(); err != nil {
				t.Fatalf("read the %s export back: %v\n%s", format, err, b)
			}
			if b, _ := exec.Command("cmp", raw, back).CombinedOutput(); len(b) > 0 {
				t.Errorf("the %s export does not hold the disk: %s", format, b)
			}
		}
		if got[0] != got[1] {
			t.Errorf("%s: two exports of the same disk differ: %s, %s", format, got[0].Short(), got[1].Short())
		}
		other, err := x.export(t.Context(), t.TempDir(), raw, format, "key2", io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		if format != "raw" && format != "qcow2" && other == got[0] {
			t.Errorf("%s: the identifiers do not depend on the key", format)
		}
	}
}
