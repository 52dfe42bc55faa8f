package main

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
	"time"

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
