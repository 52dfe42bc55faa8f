package fat

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// Clamp sets times after the epoch, "." and ".." included, to the epoch, and
// leaves a filesystem fsck.fat finds sound. mtools writes the entries with the
// host's clock, which is past the epoch.
func TestClamp(t *testing.T) {
	for _, tool := range []string{"mkfs.fat", "mmd", "mcopy", "mdir", "fsck.fat"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (dev/setup installs dosfstools and mtools)", tool)
		}
	}
	dir := t.TempDir()
	img, file := filepath.Join(dir, "fat.img"), filepath.Join(dir, "h.txt")
	os.WriteFile(file, []byte("hi\n"), 0o644)
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	f, _ := os.Create(img)
	f.Truncate(64 << 20)
	f.Close()
	run("mkfs.fat", "-F", "32", img)
	run("mmd", "-i", img, "::/EFI", "::/EFI/BOOT")
	run("mcopy", "-i", img, file, "::/EFI/BOOT/h.txt")

	n, err := Clamp(img, 1577836800)
	if err != nil {
		t.Fatal(err)
	}
	if n != 7 { // the root's EFI; EFI's ., .. and BOOT; BOOT's ., .. and h.txt
		t.Errorf("clamped %d entries, want 7", n)
	}
	run("fsck.fat", "-n", img)
	for _, d := range []string{"::/", "::/EFI", "::/EFI/BOOT"} {
		out := run("mdir", "-i", img, d)
		for _, l := range strings.Split(out, "\n") {
			if strings.Contains(l, "<DIR>") || strings.Contains(l, " txt ") {
				if !strings.Contains(l, "2020-01-01   0:00") {
					t.Errorf("%s: an entry not at the epoch: %q", d, l)
				}
			}
		}
	}
	if n2, _ := Clamp(img, 1577836800); n2 != 0 {
		t.Errorf("a second pass changed %d entries", n2)
	}
}

// Clamp reads a filesystem it did not write: whatever the bytes, it returns and
// does not panic. The seed is the boot sector, FATs and root directory of what
// mkfs.fat makes of 33 MiB (about FAT32's smallest), where the host has it.
func FuzzClamp(f *testing.F) {
	fstest.AddImage(f, "mkfs.fat", 33<<20, 0x46000, func(img string) {
		fstest.Run(f, "mkfs.fat", "-F", "32", "-i", "01234567", img)
	})
	f.Add(make([]byte, 1024))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		Clamp(img, 1577836800)
	})
}
