package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
// OVMF, and the root filesystem with its kernel and initramfs given to qemu. Its
// boot-mode step must have run on the image's own kernel under systemd, must be
// reproducible (vmb check), and a boot-mode step that exits 7 fails with 7.
// VMB_DEBIAN=0 skips it; VMB_DEBIAN=full checks every step, not only the
// boot-mode one.
func TestDebianExample(t *testing.T) {
	// A full build installs a kernel and GRUB with apt under TCG: about 8 minutes
	// here, and the boots take 4 more.
	if os.Getenv("VMB_DEBIAN") == "0" {
		t.Skip("VMB_DEBIAN=0: the Debian example is not built")
	}
	base := debiantest.Base(t)
	cache := t.TempDir()
	if err := vmtest.SeedDir(cache); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	vmb := func(args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		e := &env{stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
		code := Main(args, e)
		return code, stdout.String(), stderr.String()
	}
	solve := func(dir string, images ...string) (summary, string) {
		t.Helper()
		start := time.Now()
		code, stdout, stderr := vmb(append([]string{"solve", "--cache", cache, "--out", out, "--progress", "json",
			"-t", "base=" + base, dir}, images...)...)
		var s summary
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &s); err != nil {
			t.Fatalf("vmb solve: exit %d, %v\n%s\n%s", code, err, stderr, tailLines(stdout, 60))
		}
		if code != 0 && s.Failed == 0 {
			t.Fatalf("vmb solve: exit %d\n%s\n%s", code, stderr, tailLines(stdout, 60))
		}
		t.Logf("vmb solve: %d executed, %d cached, %d failed in %v", s.Executed, s.Cached, s.Failed, time.Since(start).Round(time.Second))
		return s, stdout
	}
	const example = "../../testdata/examples/debian"
	s, log := solve(example)
	if s.Failed != 0 || s.Executed == 0 {
		t.Fatalf("first solve: %+v\n%s", s, tailLines(log, 60))
	}
	if s, _ := solve(example); s.Executed != 0 {
		t.Errorf("second solve ran %d nodes, want none", s.Executed)
	}

	// The boot-mode step ran in the machine booted from its disk: its kernel is
	// the one in the image's /boot (not the build VM's), its PID 1 systemd.
	m := regexp.MustCompile(`booted: kernel (\S+), init (\w+)`).FindStringSubmatch(log)
	if m == nil {
		t.Fatalf("no line of the boot-mode step says what booted:\n%s", tailLines(log, 40))
	}
	bootDir, err := exec.Command("debugfs", "-R", "ls /boot", filepath.Join(out, "rootfs", "rootfs.ext4")).Output()
	if err != nil {
		t.Fatalf("debugfs: %v", err)
	}
	if !strings.Contains(string(bootDir), "vmlinuz-"+m[1]) || m[2] != "systemd" {
		t.Errorf("the boot-mode step ran on kernel %s with init %s; the image's /boot holds:\n%s", m[1], m[2], bootDir)
	}
	t.Run("boot-check", func(t *testing.T) {
		// The boot-mode step rebuilt, with what vmb check varies (CPUs, memory,
		// the clock's start), gives the same disk: what the boot wrote by itself
		// is not carried over.
		from := []string{"--from", "9"}
		if os.Getenv("VMB_DEBIAN") == "full" { // every step: about 16 minutes more here
			from = nil
		}
		args := append(append([]string{"check", "--cache", cache, "-t", "base=" + base}, from...), example, "debian")
		code, stdout, stderr := vmb(args...)
		t.Logf("vmb %s:\n%s", strings.Join(args, " "), stdout)
		if code != 0 || !strings.Contains(stdout, "reproducible") || !strings.Contains(stdout, "boot it") {
			t.Errorf("vmb check of the boot-mode step: exit %d\n%s\n%s", code, stdout, stderr)
		}
	})
	t.Run("boot-exit", func(t *testing.T) {
		// A boot-mode command's exit status is its step's.
		dir := t.TempDir()
		b, err := os.ReadFile(filepath.Join(example, "debian.cue"))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "debian.cue"), b, 0o644)
		os.WriteFile(filepath.Join(dir, "seven.cue"), []byte(`package debian
images: seven: {from: "debian", steps: [{job: "run", mode: "boot", root: "root:3", command: "echo seven; exit 7"}]}
`), 0o644)
		s, log := solve(dir, "seven")
		if s.Failed != 1 || !strings.Contains(log, `"exit_code":7`) || !strings.Contains(log, `"line":"seven"`) {
			t.Errorf("a boot-mode step that exits 7: %+v\n%s", s, tailLines(log, 30))
		}
	})

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
