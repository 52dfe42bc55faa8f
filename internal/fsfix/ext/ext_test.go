package ext

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// StampSuperblock leaves a superblock e2fsck accepts (its checksum is right) with
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
	if err := StampSuperblock(img, 1577836800); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn after StampSuperblock: %v\n%s", err, out)
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

// ScrubInodes and StampSuperblock read a filesystem they did not write: whatever
// the bytes, they return and do not panic. The seed is what mkfs.ext4 makes of
// 2 MiB, up to its inode table's end, where the host has it.
func FuzzScrubInodes(f *testing.F) {
	fstest.AddImage(f, "mkfs.ext4", 2<<20, 0x1d000, func(img string) {
		fstest.Run(f, "mkfs.ext4", "-q", "-F", "-U", "5b9b05c4-10e5-4a41-8d1e-000000000003", "-E", "hash_seed=5b9b05c4-10e5-4a41-8d1e-000000000003", img)
	})
	f.Add(make([]byte, 2048))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		ScrubInodes(img)
		StampSuperblock(img, 1577836800)
	})
}
