// Package vmtest gives tests a real appliance: it builds vmb-agent and the appliance
// once per machine (in a shared directory, under a file lock, since go test runs
// packages in parallel) and copies it into the stores tests make. Tests that boot
// the build VM use it; nothing fakes the VM.
package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/vmexec/appliance"
)

var (
	once   sync.Once
	shared string
	appl   *appliance.Appliance
	err    error
)

// Unavailable says why this machine cannot boot the build VM.
type Unavailable struct{ Reason string }

func (u *Unavailable) Error() string { return u.Reason }

// Shared returns the shared cache holding the appliance, building it the first time;
// an *Unavailable error when this machine lacks what the build VM needs.
func Shared() (*cas.Store, *appliance.Appliance, error) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return nil, nil, &Unavailable{"qemu-system-x86_64 is not installed (dev/setup installs it; CI has it)"}
	}
	for _, tool := range []string{"apt-get", "dpkg-deb", "xz"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, nil, &Unavailable{tool + " is not installed: the appliance is built from Debian packages"}
		}
	}
	once.Do(build)
	if err != nil {
		return nil, nil, fmt.Errorf("build the appliance: %w", err)
	}
	s, err := cas.Open(shared)
	return s, appl, err
}

// Require skips the test when this machine cannot boot the build VM, unless
// $VMB_REQUIRE_VM is set (dev/test sets it: there, a missing qemu is a failure),
// and otherwise returns the shared cache holding the appliance.
func Require(t testing.TB) (*cas.Store, *appliance.Appliance) {
	t.Helper()
	s, a, err := Shared()
	var u *Unavailable
	if errors.As(err, &u) && os.Getenv("VMB_REQUIRE_VM") == "" {
		t.Skip(u.Reason)
	}
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

func build() {
	shared = os.Getenv("VMB_TEST_CACHE")
	if shared == "" {
		shared = filepath.Join(os.TempDir(), "vmb-test-cache")
	}
	if err = os.MkdirAll(shared, 0o755); err != nil {
		return
	}
	lock, lerr := os.OpenFile(filepath.Join(shared, "test.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if lerr != nil {
		err = lerr
		return
	}
	defer lock.Close()
	if err = unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)

	root, rerr := moduleRoot()
	if rerr != nil {
		err = rerr
		return
	}
	agent := filepath.Join(shared, "vmb-agent")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -buildid=", "-o", agent, "./cmd/vmb-agent")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, berr := cmd.CombinedOutput(); berr != nil {
		err = &buildError{string(out), berr}
		return
	}
	store, oerr := cas.Open(shared)
	if oerr != nil {
		err = oerr
		return
	}
	appl, err = appliance.Build(context.Background(), store, appliance.BuildOptions{
		WorkDir: cas.ScratchDir(shared, "appliance-work"), Agent: agent})
}

type buildError struct {
	out string
	err error
}

func (e *buildError) Error() string { return "go build vmb-agent: " + e.err.Error() + "\n" + e.out }

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", err
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// Seed copies the appliance into dst, so that a test's fresh cache can build.
func Seed(t testing.TB, dst *cas.Store) *appliance.Appliance {
	t.Helper()
	src, a := Require(t)
	if err := appliance.Copy(context.Background(), dst, src, a); err != nil {
		t.Fatal(err)
	}
	return a
}

// SeedDir copies the appliance into the cache at dir, for tests that run vmb itself.
func SeedDir(dir string) error {
	src, a, err := Shared()
	if err != nil {
		return err
	}
	dst, err := cas.Open(dir)
	if err != nil {
		return err
	}
	return appliance.Copy(context.Background(), dst, src, a)
}

// GuestfishEnv returns the environment libguestfs needs to read a disk back in a
// test: the direct backend and, on a machine with no kernel in /boot (a container),
// the appliance's own kernel and modules for supermin. Those are linked into a
// directory of their own (with the modules.dep supermin reads, which the package
// leaves to depmod at install): an appliance build in another test process starts
// by removing the one it unpacks packages into.
func GuestfishEnv() []string {
	env := []string{"LIBGUESTFS_BACKEND=direct"}
	if k, _ := filepath.Glob("/boot/vmlinuz-*"); len(k) > 0 || shared == "" {
		return env
	}
	lock, err := os.OpenFile(filepath.Join(shared, "test.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return env
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return env
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	root := filepath.Join(cas.ScratchDir(shared, "appliance-work"), "root")
	k, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(k) == 0 {
		return env
	}
	version := strings.TrimPrefix(filepath.Base(k[0]), "vmlinuz-")
	dst := filepath.Join(shared, "guestfish", version)
	kernel := filepath.Join(dst, "boot", "vmlinuz-"+version)
	modules := filepath.Join(dst, "lib", "modules", version)
	if _, err := os.Stat(filepath.Join(modules, "modules.dep")); err != nil {
		os.RemoveAll(dst)
		os.MkdirAll(filepath.Dir(kernel), 0o755)
		os.MkdirAll(filepath.Dir(modules), 0o755)
		for _, c := range [][]string{
			{"cp", "-l", k[0], kernel},
			{"cp", "-al", filepath.Join(root, "lib", "modules", version), modules},
			{"depmod", "-b", dst, version},
		} {
			if err := exec.Command(c[0], c[1:]...).Run(); err != nil {
				return env // guestfish will say what it misses
			}
		}
	}
	return append(env, "SUPERMIN_KERNEL="+kernel, "SUPERMIN_KERNEL_VERSION="+version, "SUPERMIN_MODULES="+modules)
}
