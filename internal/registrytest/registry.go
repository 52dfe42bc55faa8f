// Package registrytest gives tests a real container registry (Debian's
// docker-registry, the CNCF distribution server, on 127.0.0.1 with storage in a
// temporary directory and no auth) and the images vmb's image-in tests pull.
package registrytest

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Registry is a running registry.
type Registry struct {
	Addr string // host:port
	cmd  *exec.Cmd
}

var (
	shared     *Registry
	sharedErr  error
	sharedOnce sync.Once
)

// Shared returns the registry of this test process, starting it the first time.
// It dies with the process. It skips the test if docker-registry is not
// installed, unless $VMB_REQUIRE_VM is set (dev/setup installs it; CI has it).
func Shared(t testing.TB) *Registry {
	t.Helper()
	skipIfMissing(t)
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vmb-registry-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = start(dir)
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// Start starts a registry of the test's own, stopped when the test ends.
func Start(t testing.TB) *Registry {
	t.Helper()
	skipIfMissing(t)
	r, err := start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Stop)
	return r
}

func skipIfMissing(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("docker-registry"); err != nil {
		if os.Getenv("VMB_REQUIRE_VM") == "" {
			t.Skip("docker-registry is not installed (dev/setup installs it)")
		}
		t.Fatal("docker-registry is not installed (dev/setup installs it)")
	}
}

// start runs docker-registry with storage in dir and waits until /v2/ answers.
func start(dir string) (*Registry, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	// The packaged config turns on htpasswd auth: this one has none.
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n",
		filepath.Join(dir, "storage"), addr)
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, []byte(config), 0o644); err != nil {
		return nil, err
	}
	log, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command("docker-registry", "serve", cfg)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test process
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &Registry{Addr: addr, cmd: cmd}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return r, nil
			}
		}
	}
	r.Stop()
	b, _ := os.ReadFile(log.Name())
	return nil, fmt.Errorf("docker-registry did not answer on %s in 30s:\n%s", addr, b)
}

// Stop kills the registry and waits for it.
func (r *Registry) Stop() {
	if r.cmd.Process != nil {
		r.cmd.Process.Kill()
		r.cmd.Wait()
	}
}
