package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
	"time"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/fsfix/fstest"
	"vmb.dev/vmb/vmexec/proto"
)

// fixNTFSFormat gives a volume mkntfs made the serial derived from the job's key,
// in both boot sectors (internal/fsfix/ntfs tests the rest of what it does).
func TestFixNTFSFormat(t *testing.T) {
	if _, err := exec.LookPath("mkntfs"); err != nil {
		t.Skip("needs mkntfs (dev/setup installs ntfs-3g)")
	}
	img := fstest.Image(t, "ntfs.img", 32<<20)
	fstest.Run(t, "mkntfs", "-F", "-f", "-q", "-L", "win", img)
	a := &agent{job: &proto.Job{Epoch: time.Now().Add(-time.Hour).Unix(), Seed: "0123"}}
	if err := a.fixNTFSFormat(img); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(img)
	serial := a.uuidBytes(0)[:8]
	boot, backup := b[72:80], b[len(b)-512+72:len(b)-512+80]
	if !bytes.Equal(boot, serial) || !bytes.Equal(backup, serial) {
		t.Errorf("serial %x, backup's %x, not the key's %x", boot, backup, serial)
	}
}

// fixTimes leaves an ext4 directory laid out by its entries alone after a run: two
// filesystems whose root got the same entries through temporary names of other
// lengths (as programs name them by pid and clock) come out byte for byte the
// same, with a removed file's blocks reading as zeros.
func TestFixTimesDirectories(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs e2fsprogs)", tool)
		}
	}
	const epoch = proto.Epoch
	dir := t.TempDir()
	tree := dir + "/tree"
	os.MkdirAll(tree, 0o755)
	for i := range 40 {
		os.WriteFile(tree+"/file"+string(rune('a'+i%26))+string(rune('a'+i/26)), bytes.Repeat([]byte{byte(i)}, 5000), 0o644)
	}
	base := fstest.Image(t, "base.img", 64<<20)
	cmd := exec.Command("mkfs.ext4", "-q", "-F", "-U", "5b9b05c4-10e5-4a41-8d1e-000000000003",
		"-E", "hash_seed=5b9b05c4-10e5-4a41-8d1e-000000000003", "-d", tree, base)
	cmd.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1577836800")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	orig, _ := os.ReadFile(base)
	histories := []string{
		"ln /fileaa /tmp-name-12\nln /fileba /tmp-name-123456789\nunlink /tmp-name-12\nln /fileaa /final1\nunlink /tmp-name-123456789\nln /fileba /final2\nrm /filebb\n",
		"ln /fileba /tmp-1\nln /fileaa /final1\nunlink /tmp-1\nln /fileba /final2\nrm /filebb\n",
	}
	var raw, imgs [2][]byte
	for i, h := range histories {
		img := dir + "/" + string(rune('a'+i)) + ".img"
		os.WriteFile(img, orig, 0o644)
		d := exec.Command("debugfs", "-w", "-f", "-", img)
		d.Stdin = bytes.NewReader([]byte(h))
		d.Env = append(os.Environ(), "E2FSPROGS_FAKE_TIME=1577836800")
		if out, err := d.CombinedOutput(); err != nil {
			t.Fatalf("debugfs: %v\n%s", err, out)
		}
		raw[i], _ = os.ReadFile(img)
		if i == 1 && bytes.Equal(raw[0], raw[1]) {
			t.Fatal("the two histories made the same filesystem: the test proves nothing")
		}
		a := &agent{job: &proto.Job{Kind: (&graph.Run{}).Kind(), Epoch: epoch, Seed: "0123"}}
		if err := a.fixTimes(mountpoint{dev: img, fstype: "ext4"}); err != nil {
			t.Fatal(err)
		}
		imgs[i], _ = os.ReadFile(img)
	}
	if !bytes.Equal(imgs[0], imgs[1]) {
		n := 0
		for k := range imgs[0] {
			if imgs[0][k] != imgs[1][k] {
				n++
			}
		}
		t.Errorf("the same entries through other temporary names: %d bytes differ after fixTimes", n)
	}
}
