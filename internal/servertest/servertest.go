// Package servertest gives tests real servers for cache remotes on 127.0.0.1, with
// their storage in a temporary directory: nginx with WebDAV PUT (Debian's nginx)
// and an S3 server (versitygw, with its posix backend). Each kind is started once
// per test process by Nginx and S3, or per test by StartNginx and StartS3; a test
// is skipped when the server's program is missing, unless $VMB_REQUIRE_VM is set
// (dev/setup installs both; CI has them).
package servertest

import (
	"fmt"
	"go/build"
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

// Server is a running server.
type Server struct {
	URL  string            // http://127.0.0.1:PORT for nginx; s3://BUCKET for S3
	Root string            // where the server keeps the files it serves (the bucket, for S3)
	Env  map[string]string // environment a client needs (S3's endpoint and credentials)

	addr string
	argv []string
	dir  string
	cmd  *exec.Cmd
}

var (
	mu     sync.Mutex
	shared = map[string]*Server{}
)

func sharedServer(t testing.TB, kind string, start func(testing.TB, string) (*Server, error)) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if s := shared[kind]; s != nil {
		return s
	}
	dir, err := os.MkdirTemp("", "vmb-"+kind+"-")
	if err != nil {
		t.Fatal(err)
	}
	s, err := start(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	shared[kind] = s
	return s
}

// Nginx returns the nginx of this test process, started the first time.
func Nginx(t testing.TB) *Server { return sharedServer(t, "nginx", startNginx) }

// S3 returns the S3 server of this test process, started the first time.
func S3(t testing.TB) *Server { return sharedServer(t, "s3", startS3) }

// StartNginx starts an nginx of the test's own, killed when the test ends.
func StartNginx(t testing.TB) *Server { return own(t, startNginx) }

// StartS3 starts an S3 server of the test's own, killed when the test ends.
func StartS3(t testing.TB) *Server { return own(t, startS3) }

func own(t testing.TB, start func(testing.TB, string) (*Server, error)) *Server {
	t.Helper()
	s, err := start(t, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// look finds a program on $PATH or in Go's bin directory (where go install puts
// versitygw), or skips the test.
func look(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{os.Getenv("GOBIN"), filepath.Join(build.Default.GOPATH, "bin")} {
		if p := filepath.Join(d, name); d != "" && isExec(p) {
			return p
		}
	}
	msg := name + " is not installed (dev/setup installs it)"
	if os.Getenv("VMB_REQUIRE_VM") == "" {
		t.Skip(msg)
	}
	t.Fatal(msg)
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

const nginxConf = `daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 512; }
http {
	access_log off;
	client_body_temp_path %[1]s/tmp/body;
	proxy_temp_path %[1]s/tmp/proxy;
	fastcgi_temp_path %[1]s/tmp/fastcgi;
	uwsgi_temp_path %[1]s/tmp/uwsgi;
	scgi_temp_path %[1]s/tmp/scgi;
	server {
		listen %[2]s;
		location / {
			root %[1]s/root;
			dav_methods PUT;
			create_full_put_path on;
			client_max_body_size 0;
			autoindex on;
			autoindex_format json;
		}
	}
}
`

func startNginx(t testing.TB, dir string) (*Server, error) {
	bin := look(t, "nginx")
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	for _, d := range []string{"root", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, addr), 0o644); err != nil {
		return nil, err
	}
	s := &Server{URL: "http://" + addr, Root: filepath.Join(dir, "root"), addr: addr, dir: dir,
		argv: []string{bin, "-c", conf, "-p", dir, "-e", filepath.Join(dir, "error.log")}}
	return s, s.Start()
}

func startS3(t testing.TB, dir string) (*Server, error) {
	bin := look(t, "versitygw")
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	const bucket = "vmb"
	root := filepath.Join(dir, "gw")
	if err := os.MkdirAll(filepath.Join(root, bucket), 0o755); err != nil {
		return nil, err
	}
	s := &Server{URL: "s3://" + bucket, Root: filepath.Join(root, bucket), addr: addr, dir: dir,
		argv: []string{bin, "--access", "test", "--secret", "testtest", "--port", addr, "posix", root},
		Env: map[string]string{
			"AWS_ENDPOINT_URL":            "http://" + addr,
			"AWS_ACCESS_KEY_ID":           "test",
			"AWS_SECRET_ACCESS_KEY":       "testtest",
			"AWS_REGION":                  "us-east-1",
			"AWS_CONFIG_FILE":             filepath.Join(dir, "no-aws-config"),
			"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "no-aws-credentials"),
			"AWS_EC2_METADATA_DISABLED":   "true",
		}}
	return s, s.Start()
}

// Start starts the server (again, after Kill, on the same address and storage)
// and waits until it answers.
func (s *Server) Start() error {
	log, err := os.OpenFile(filepath.Join(s.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test process
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd = cmd
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := http.Head("http://" + s.addr + "/")
		if err == nil {
			resp.Body.Close()
			return nil
		}
	}
	s.Kill()
	b, _ := os.ReadFile(log.Name())
	return fmt.Errorf("%s did not answer on %s in 30s:\n%s", filepath.Base(s.argv[0]), s.addr, b)
}

// Kill kills the server, as a crash would, and waits for it.
func (s *Server) Kill() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Kill()
		s.cmd.Wait()
		s.cmd = nil
	}
}

// Setenv sets the environment a client of s needs for the rest of the test.
func (s *Server) Setenv(t *testing.T) {
	for k, v := range s.Env {
		t.Setenv(k, v)
	}
}
