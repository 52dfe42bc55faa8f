package ntfs

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// Clamp leaves no time after the epoch anywhere on a volume ntfs-3g
// wrote: not in standard information, nor in file names, in records or in
// directory index entries (resident and in index blocks); ntfsfix finds the volume
// sound, the MFT mirror included, and ntfs-3g reads the files back.
func TestClamp(t *testing.T) {
	for _, tool := range []string{"mkntfs", "ntfs-3g", "ntfsfix"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs ntfs-3g)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "ntfs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mkntfs", "-F", "-f", "-q", "-L", "vmb", img).CombinedOutput(); err != nil {
		t.Fatalf("mkntfs: %v\n%s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("ntfs-3g", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("ntfs-3g cannot mount here (no FUSE?): %v\n%s", err, out)
	}
	mounted := true
	defer func() {
		if mounted {
			exec.Command("umount", mnt).Run()
		}
	}()
	// Enough files that the directory's index needs index blocks.
	os.MkdirAll(filepath.Join(mnt, "dir/sub"), 0o755)
	for i := range 200 {
		name := filepath.Join(mnt, "dir", strings.Repeat("f", 20)+string(rune('a'+i%26))+string(rune('a'+i/26)))
		if err := os.WriteFile(name, []byte(name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(mnt, "dir/sub/motd"), []byte("hello\n"), 0o644)
	if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v\n%s", err, out)
	}
	mounted = false

	epoch := time.Now().Add(-time.Hour).Unix()
	limit := uint64(epoch+ntfsEpoch) * 10_000_000
	late := func() int { // times after the epoch, at any byte offset
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for i := 0; i+8 <= len(b); i++ {
			if x := binary.LittleEndian.Uint64(b[i:]); x > limit && x < limit+4*3600*10_000_000 {
				n++
			}
		}
		return n
	}
	if n := late(); n < 200 {
		t.Fatalf("%d times after the epoch before the clamp: the test finds too few", n)
	}
	n, err := Clamp(img, epoch)
	if err != nil {
		t.Fatal(err)
	}
	if left := late(); left != 0 {
		t.Errorf("%d times after the epoch left after clamping %d records and blocks", left, n)
	}
	if out, err := exec.Command("ntfsfix", "-n", img).CombinedOutput(); err != nil {
		t.Errorf("ntfsfix -n: %v\n%s", err, out)
	}
	if n, err := Clamp(img, epoch); n != 0 || err != nil {
		t.Errorf("a second clamp: %d rewritten, %v", n, err)
	}
	if out, err := exec.Command("ntfscat", img, "/dir/sub/motd").Output(); err != nil || !bytes.Equal(out, []byte("hello\n")) {
		t.Errorf("ntfscat /dir/sub/motd: %q, %v", out, err)
	}
	if _, err := Clamp(os.Args[0], epoch); err == nil {
		t.Error("Clamp of a file that is no NTFS volume: no error")
	}
}

// mkntfs stamps the volume with the clock and draws its serial from it: after
// FixFormat two volumes it made are identical, with the serial given in both
// boot sectors, no time after the epoch, and sound to ntfsfix; a second format
// with another serial gets it.
func TestFixFormat(t *testing.T) {
	for _, tool := range []string{"mkntfs", "ntfsfix"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs ntfs-3g)", tool)
		}
	}
	epoch := time.Now().Add(-time.Hour).Unix()
	limit := uint64(epoch+ntfsEpoch) * 10_000_000
	late := func(b []byte) int {
		n := 0
		for i := 0; i+8 <= len(b); i++ {
			if x := binary.LittleEndian.Uint64(b[i:]); x > limit && x < limit+4*3600*10_000_000 {
				n++
			}
		}
		return n
	}
	format := func(serial []byte) []byte {
		img := filepath.Join(t.TempDir(), "ntfs.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 32<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mkntfs", "-F", "-f", "-q", "-L", "win", img).CombinedOutput(); err != nil {
			t.Fatalf("mkntfs: %v\n%s", err, out)
		}
		b, _ := os.ReadFile(img)
		if n := late(b); n < 20 {
			t.Fatalf("mkntfs left %d times after the epoch: the test finds too few", n)
		}
		if err := FixFormat(img, epoch, serial); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("ntfsfix", "-n", img).CombinedOutput(); err != nil {
			t.Errorf("ntfsfix -n: %v\n%s", err, out)
		}
		b, _ = os.ReadFile(img)
		if n := late(b); n != 0 {
			t.Errorf("%d times after the epoch left", n)
		}
		boot, backup := b[72:80], b[len(b)-512+72:len(b)-512+80]
		if !bytes.Equal(boot, serial) || !bytes.Equal(backup, serial) {
			t.Errorf("serial %x, backup's %x, not the one given, %x", boot, backup, serial)
		}
		return b
	}
	a, b := format([]byte("serial-1")), format([]byte("serial-1"))
	if !bytes.Equal(a, b) {
		n := 0
		for i := range a {
			if a[i] != b[i] {
				n++
			}
		}
		t.Errorf("two mkntfs runs differ in %d bytes after FixFormat", n)
	}
	if c := format([]byte("serial-2")); bytes.Equal(a[72:80], c[72:80]) {
		t.Error("two serials given, one serial written")
	}
	if err := SetSerial(os.Args[0], make([]byte, 8)); err == nil {
		t.Error("SetSerial of a file that is no NTFS volume: no error")
	}
}

// Clamp and SetSerial read a volume they did not write: whatever the bytes, they
// return and do not panic. The seed is what mkntfs makes of 2 MiB, where the host
// has it.
func FuzzClamp(f *testing.F) {
	fstest.AddImage(f, "mkntfs", 2<<20, 2<<20, func(img string) {
		fstest.Run(f, "mkntfs", "-F", "-f", "-q", img)
	})
	f.Add(append(append(make([]byte, 3), "NTFS    "...), make([]byte, 1024)...))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		Clamp(img, 1577836800)
		SetSerial(img, []byte("serial-1"))
	})
}
