package btrfs

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// Two mkfs.btrfs runs with the same filesystem UUID differ in the device, chunk
// tree and subvolume UUIDs they draw, and in times; after Fix they are the
// same, btrfs check finds them sound with the UUIDs given, and (where the host
// can mount btrfs) the kernel writes them and a second Fix keeps them sound.
func TestFix(t *testing.T) {
	for _, tool := range []string{"mkfs.btrfs", "btrfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs btrfs-progs)", tool)
		}
	}
	epoch := time.Now().Add(-time.Hour).Unix()
	u := UUIDs{}
	copy(u.Dev[:], "vmb-device-uuid!")
	copy(u.ChunkTree[:], "vmb-chunk-tree-u")
	copy(u.Subvol[:], "vmb-subvolume-uu")
	var imgs [2]string
	var raw [2][]byte
	for i := range imgs {
		imgs[i] = filepath.Join(t.TempDir(), "btrfs.img")
		if err := os.WriteFile(imgs[i], nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(imgs[i], 320<<20); err != nil {
			t.Fatal(err)
		}
		fstest.Run(t, "mkfs.btrfs", "-f", "-q", "-U", "5b9b05c4-10e5-4a41-8d1e-000000000002", "-L", "vmb", imgs[i])
		n, err := Fix(imgs[i], epoch, &u)
		if err != nil {
			t.Fatal(err)
		}
		if n < 4 {
			t.Errorf("Fix rewrote %d blocks, want the superblocks and the trees", n)
		}
		raw[i], _ = os.ReadFile(imgs[i])
		if i == 0 {
			time.Sleep(1100 * time.Millisecond) // mkfs.btrfs's times are in seconds
		}
	}
	if !bytes.Equal(raw[0], raw[1]) {
		t.Errorf("two mkfs.btrfs runs differ after Fix")
	}
	fstest.Run(t, "btrfs", "check", "--readonly", imgs[0])
	super := fstest.Run(t, "btrfs", "inspect-internal", "dump-super", imgs[0])
	if !strings.Contains(super, "dev_item.uuid\t\t766d622d-6465-7669-6365-2d7575696421") {
		t.Errorf("dump-super does not show the device UUID given:\n%s", super)
	}
	tree := fstest.Run(t, "btrfs", "inspect-internal", "dump-tree", imgs[0])
	for _, want := range []string{"chunk uuid 766d622d-6368-756e-6b2d-747265652d75", "uuid 766d622d-7375-6276-6f6c-756d652d7575"} {
		if !strings.Contains(tree, want) {
			t.Errorf("dump-tree has no %q", want)
		}
	}

	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", imgs[0], mnt).CombinedOutput(); err != nil {
		t.Skipf("the host cannot mount btrfs (%v: %s)", err, out)
	}
	os.MkdirAll(filepath.Join(mnt, "dir/sub"), 0o755)
	os.WriteFile(filepath.Join(mnt, "dir/sub/motd"), []byte("hello\n"), 0o644)
	fstest.Run(t, "umount", mnt)
	n, err := Fix(imgs[0], epoch, nil)
	if err != nil || n == 0 {
		t.Errorf("Fix after a mount: %d blocks, %v", n, err)
	}
	fstest.Run(t, "btrfs", "check", "--readonly", imgs[0])
	times := regexp.MustCompile(`[acmo]time (\d+)\.(\d+)`).FindAllStringSubmatch(fstest.Run(t, "btrfs", "inspect-internal", "dump-tree", imgs[0]), -1)
	if len(times) < 8 {
		t.Errorf("dump-tree shows %d times", len(times))
	}
	for _, m := range times {
		if s, _ := strconv.ParseInt(m[1], 10, 64); s > epoch || s == epoch && m[2] != "0" {
			t.Errorf("a time after the epoch is left: %s", m[0])
		}
	}
	fstest.Run(t, "mount", "-o", "loop,ro", imgs[0], mnt)
	got, _ := os.ReadFile(filepath.Join(mnt, "dir/sub/motd"))
	fstest.Run(t, "umount", mnt)
	if string(got) != "hello\n" {
		t.Errorf("/dir/sub/motd after Fix: %q", got)
	}
	if _, err := Fix(os.Args[0], epoch, nil); err == nil {
		t.Error("Fix of a file that is no btrfs: no error")
	}
}

// Fix reads a filesystem it did not write: whatever the bytes, it returns and
// does not panic. The seed is what mkfs.btrfs makes of 16 MiB (mixed block
// groups, its smallest), up to its last block, where the host has it.
func FuzzFix(f *testing.F) {
	fstest.AddImage(f, "mkfs.btrfs", 16<<20, 0x50d000, func(img string) {
		fstest.Run(f, "mkfs.btrfs", "-f", "-q", "--mixed", "-U", "5b9b05c4-10e5-4a41-8d1e-000000000002", img)
	})
	f.Add(make([]byte, 68<<10))
	u := UUIDs{Dev: [16]byte{1}, ChunkTree: [16]byte{2}, Subvol: [16]byte{3}}
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		Fix(img, 1577836800, &u)
	})
}
