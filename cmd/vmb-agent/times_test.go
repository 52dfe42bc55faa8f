package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clampFATTimes sets times after the epoch, "." and ".." included, to the epoch, and
// leaves a filesystem fsck.fat finds sound. mtools writes the entries with the
// host's clock, which is past the epoch.
func TestClampFATTimes(t *testing.T) {
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

	n, err := clampFATTimes(img, 1577836800)
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
	if n2, _ := clampFATTimes(img, 1577836800); n2 != 0 {
		t.Errorf("a second pass changed %d entries", n2)
	}
}

// stampSuperblock leaves a superblock e2fsck accepts (its checksum is right) with
// the epoch as its times.
func TestStampSuperblock(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("e2fsprogs is not installed")
	}
	img := filepath.Join(t.TempDir(), "ext4.img")
	f, _ := os.Create(img)
	f.Truncate(32 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if err := stampSuperblock(img, 1577836800); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn after stampSuperblock: %v\n%s", err, out)
	}
	dump := exec.Command("dumpe2fs", "-h", img)
	dump.Env = append(os.Environ(), "TZ=UTC")
	out, _ := dump.CombinedOutput()
	for _, want := range []string{"Last write time:          Wed Jan  1 00:00:00 2020", "Last checked:             Wed Jan  1 00:00:00 2020", "Mount count:              0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dumpe2fs -h lacks %q:\n%s", want, out)
		}
	}
}
