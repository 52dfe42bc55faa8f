// Package debiantest gives tests a Debian 12 container image and boots machines
// with plain qemu. The image is a minbase bookworm root filesystem that mmdebstrap
// makes from Debian's mirror, once per machine: the tar is kept in vmtest's shared
// directory (under a lock of its own, since go test runs packages in parallel), and
// pushed to the test process's registry (registrytest) as a one-layer image.
package debiantest

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"vmb.dev/vmb/internal/registrytest"
	"vmb.dev/vmb/vmexec/vmtest"
)

// Mirror is where mmdebstrap downloads the packages from.
const Mirror = "http://deb.debian.org/debian"

var (
	once sync.Once
	ref  string
	err  error
)

// Base returns the ref, pinned by digest, of the Debian 12 image in this test
// process's registry, making and pushing it the first time. It skips the test when
// mmdebstrap or the registry is missing, unless $VMB_REQUIRE_VM is set.
func Base(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("mmdebstrap"); err != nil {
		if os.Getenv("VMB_REQUIRE_VM") == "" {
			t.Skip("mmdebstrap is not installed (dev/setup installs it)")
		}
		t.Fatal("mmdebstrap is not installed (dev/setup installs it)")
	}
	// The image is made from Debian's mirror, and the example's apt steps reach it
	// from the build VM: a machine without it cannot build the example at all,
	// whatever vmb does, which is not a failure of vmb's.
	if err := reachMirror(); err != nil {
		t.Skipf("Debian's mirror is out of reach (%v): the Debian example needs it", err)
	}
	store, _ := vmtest.Require(t)
	reg := registrytest.Shared(t)
	once.Do(func() {
		var tar string
		if tar, err = rootfs(filepath.Join(store.Dir(), "debian")); err == nil {
			ref, err = push(reg.Addr+"/vmb/debian:bookworm", tar)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// reachMirror checks that the mirror answers for bookworm.
func reachMirror() error {
	c := &http.Client{Timeout: 20 * time.Second}
	resp, err := c.Head(Mirror + "/dists/bookworm/Release")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HEAD %s/dists/bookworm/Release: %s", Mirror, resp.Status)
	}
	return nil
}

// rootfs makes dir/bookworm-minbase.tar unless it is there, and returns its path.
func rootfs(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", err
	}
	defer unix.Flock(int(lock.Fd()), unix.LOCK_UN)
	out := filepath.Join(dir, "bookworm-minbase.tar")
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	tmp := out + ".tmp"
	cmd := exec.Command("mmdebstrap", "--variant=minbase", "--format=tar", "--quiet", "bookworm", tmp, Mirror)
	cmd.Stdin = nil // not a terminal: mmdebstrap would read sources from it otherwise
	if b, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("mmdebstrap: %v\n%s", err, b)
	}
	return out, os.Rename(tmp, out)
}

// push writes the tar as the one layer of a linux/amd64 image to repo and returns
// the image's ref, pinned by digest.
func push(repo, tar string) (string, error) {
	layer, err := tarball.LayerFromFile(tar, tarball.WithCompressionLevel(gzip.BestSpeed))
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	r, err := name.ParseReference(repo)
	if err != nil {
		return "", err
	}
	if err := remote.Write(r, img); err != nil {
		return "", fmt.Errorf("push %s: %w", repo, err)
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return r.String() + "@" + d.String(), nil
}

// Boot runs qemu-system-x86_64 with args (which must put the serial console on
// stdout) until want appears on the console, then kills it, and returns how long
// that took. Past the timeout it fails with the console's last lines.
func Boot(args []string, want string, timeout time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test process
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var console []byte
	buf := make([]byte, 4096)
	for {
		n, rerr := stdout.Read(buf)
		console = append(console, buf[:n]...)
		if bytes.Contains(console, []byte(want)) {
			return time.Since(start), nil
		}
		if rerr != nil {
			if rerr == io.EOF {
				rerr = fmt.Errorf("qemu exited")
			}
			if ctx.Err() != nil {
				rerr = fmt.Errorf("no %q in %v", want, timeout)
			}
			return 0, fmt.Errorf("%v: %s\nconsole, last 3000 bytes:\n%s", rerr, stderr.Bytes(), tail(console, 3000))
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
