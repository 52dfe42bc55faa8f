package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"vmb.dev/vmb/internal/debiantest"
	"vmb.dev/vmb/vmexec/vmtest"
)

// TestDebianExample builds testdata/examples/debian from the Debian 12 image that
// debiantest pushes to the test registry, once (apt-get of a kernel and GRUB under
// TCG takes minutes), and boots what it exported with plain qemu, no vmb involved,
// to a login prompt on the serial console: the qcow2 disk with SeaBIOS and with
// OVMF, and the root filesystem with its kernel and initramfs given to qemu.
func TestDebianExample(t *testing.T) {
	// A full build installs a kernel and GRUB with apt under TCG: about 14 minutes
	// here, most of it update-initramfs. Until that is faster it runs on demand,
	// not in every dev/test.
	if os.Getenv("VMB_DEBIAN") == "" {
		t.Skip("the Debian example takes about 15 minutes under TCG: set VMB_DEBIAN=1 to build and boot it")
	}
	base := debiantest.Base(t)
	cache := t.TempDir()
	if err := vmtest.SeedDir(cache); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	solve := func() summary {
		t.Helper()
		var stdout, stderr bytes.Buffer
		e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
		start := time.Now()
		code := Main([]string{"solve", "--cache", cache, "--out", out, "--progress", "json",
			"-t", "base=" + base, "../../testdata/examples/debian"}, e)
		if code != 0 {
			t.Fatalf("vmb solve: exit %d\n%s\n%s", code, stderr.Bytes(), tailLines(stdout.String(), 60))
		}
		var s summary
		lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
			t.Fatal(err)
		}
		t.Logf("vmb solve: %d executed, %d cached in %v", s.Executed, s.Cached, time.Since(start).Round(time.Second))
		return s
	}
	if s := solve(); s.Failed != 0 || s.Executed == 0 {
		t.Fatalf("first solve: %+v", s)
	}
	if s := solve(); s.Executed != 0 {
		t.Errorf("second solve ran %d nodes, want none", s.Executed)
	}

	disk := filepath.Join(out, "debian", "debian.qcow2")
	// Each boot gets its own overlay: the exported files stay as built.
	overlay := func(t *testing.T) string {
		o := filepath.Join(t.TempDir(), "boot.qcow2")
		if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk, o).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img create: %v\n%s", err, b)
		}
		return o
	}
	common := []string{"-machine", "q35", "-m", "1024", "-smp", "1", "-nodefaults", "-display", "none", "-serial", "stdio"}
	if _, err := os.Stat("/dev/kvm"); err == nil {
		common = append(common, "-accel", "kvm")
	}
	boot := func(t *testing.T, args ...string) {
		d, err := debiantest.Boot(append(common, args...), "login:", 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("login prompt after %v", d.Round(100*time.Millisecond))
	}
	t.Run("bios", func(t *testing.T) {
		boot(t, "-drive", "file="+overlay(t)+",format=qcow2,if=virtio")
	})
	t.Run("uefi", func(t *testing.T) {
		const code, vars = "/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"
		b, err := os.ReadFile(vars)
		if err != nil {
			t.Skipf("no OVMF (Debian's ovmf; dev/setup installs it): %v", err)
		}
		myVars := filepath.Join(t.TempDir(), "vars.fd")
		if err := os.WriteFile(myVars, b, 0o644); err != nil {
			t.Fatal(err)
		}
		boot(t, "-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+code,
			"-drive", "if=pflash,format=raw,unit=1,file="+myVars,
			"-drive", "file="+overlay(t)+",format=qcow2,if=virtio")
	})
	t.Run("kernel", func(t *testing.T) {
		dir := filepath.Join(out, "rootfs")
		root := filepath.Join(t.TempDir(), "rootfs.ext4")
		if b, err := exec.Command("cp", "--sparse=always", filepath.Join(dir, "rootfs.ext4"), root).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, b)
		}
		boot(t, "-kernel", filepath.Join(dir, "vmlinuz"), "-initrd", filepath.Join(dir, "initrd.img"),
			"-append", "root=/dev/vda console=ttyS0",
			"-drive", "file="+root+",format=raw,if=virtio")
	})
}

// summary is the last line of a solve's json progress.
type summary struct {
	Executed, Cached, Failed int
}

func tailLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
