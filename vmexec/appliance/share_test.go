package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/vmexec/proto"
)

// fake stores an appliance of fake content in a new cache under dir.
func fake(t *testing.T, dir, kernel string) (*cas.Store, *Appliance) {
	t.Helper()
	s, err := cas.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, err := Put(s, Manifest{KernelVersion: kernel, Protocol: proto.Version}, []byte("kernel "+kernel), []byte("initrd "+kernel))
	if err != nil {
		t.Fatal(err)
	}
	return s, a
}

func TestPushPull(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	a, appA := fake(t, filepath.Join(tmp, "a"), "a")
	r, err := cas.OpenRemote(ctx, filepath.Join(tmp, "remote"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Push(ctx, r, a); err != nil {
		t.Fatal(err)
	}
	b, err := cas.Open(filepath.Join(tmp, "b"))
	if err != nil {
		t.Fatal(err)
	}
	// No pin, no appliance: the remote's is taken and made current.
	got, err := Choose(ctx, b, cas.Digest{}, Sources{Remotes: []*cas.Remote{r}})
	if err != nil || got == nil || got.Digest != appA.Digest {
		t.Fatalf("Choose = %v, %v; want %s", got, err, appA.Digest)
	}
	if cur, err := Load(b); err != nil || cur.Digest != appA.Digest {
		t.Fatalf("current = %v, %v", cur, err)
	}
	// A cache with another appliance and a pin on A's: pulled by digest, current unchanged.
	c, appC := fake(t, filepath.Join(tmp, "c"), "c")
	if _, err := Choose(ctx, c, appA.Digest, Sources{}); !errors.As(err, new(*PinError)) ||
		!strings.Contains(err.Error(), "pins appliance "+appA.Digest.String()+"; this cache has "+appC.Digest.String()) {
		t.Fatalf("Choose without remote: %v", err)
	}
	if got, err := Choose(ctx, c, appA.Digest, Sources{Remotes: []*cas.Remote{r}}); err != nil || got.Digest != appA.Digest {
		t.Fatalf("Choose with remote = %v, %v", got, err)
	}
	if cur, _ := Load(c); cur.Digest != appC.Digest {
		t.Fatalf("a pinned pull changed the current appliance to %s", cur.Digest)
	}
	if _, err := c.Ref(keptRef(appA.Digest)); err != nil {
		t.Fatalf("the pinned appliance is not kept: %v", err)
	}
}

func TestPullCorrupt(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	a, appA := fake(t, filepath.Join(tmp, "a"), "a")
	rdir := filepath.Join(tmp, "remote")
	r, _ := cas.OpenRemote(ctx, rdir)
	if _, _, err := Push(ctx, r, a); err != nil {
		t.Fatal(err)
	}
	// The kernel's blob on the remote holds another blob's bytes.
	h, other := appA.Kernel.String(), appA.Initrd.String()
	obj := func(h string) string { return filepath.Join(rdir, "objects", h[:2], h) }
	b, _ := os.ReadFile(obj(other))
	os.Remove(obj(h))
	if err := os.WriteFile(obj(h), b, 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := cas.Open(filepath.Join(tmp, "b"))
	_, err := Pull(ctx, s, r, appA.Digest)
	if !errors.As(err, new(*cas.CorruptError)) {
		t.Fatalf("Pull of a corrupt kernel: %v, want a CorruptError", err)
	}
	if s.Has(appA.Kernel) {
		t.Fatal("the corrupt kernel entered the cache")
	}
	if _, err := Load(s); !errors.Is(err, ErrNone) {
		t.Fatalf("Load after a refused pull: %v", err)
	}
}

func TestPin(t *testing.T) {
	dir := t.TempDir()
	if d, err := ReadPin(dir); err != nil || !d.IsZero() {
		t.Fatalf("ReadPin of no file = %v, %v", d, err)
	}
	_, a := fake(t, filepath.Join(dir, "cache"), "a")
	if err := WritePin(dir, a.Digest); err != nil {
		t.Fatal(err)
	}
	if d, err := ReadPin(dir); err != nil || d != a.Digest {
		t.Fatalf("ReadPin = %v, %v", d, err)
	}
	os.WriteFile(filepath.Join(dir, LockFile), []byte("executor x\n"), 0o644)
	if _, err := ReadPin(dir); err == nil || !strings.Contains(err.Error(), "vmb.lock:1:") {
		t.Fatalf("ReadPin of a bad file: %v", err)
	}
}

// An appliance whose agent speaks another protocol cannot run this vmb's jobs: as
// a cache's current one it counts as none (the first solve builds another), and
// pinned it is an error that says why.
func TestStale(t *testing.T) {
	s, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	old, err := Put(s, Manifest{KernelVersion: "old", Protocol: proto.Version - 1}, []byte("kernel old"), []byte("initrd old"))
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Use(s); err != nil {
		t.Fatal(err)
	}
	_, err = Load(s)
	var stale *StaleError
	if !errors.Is(err, ErrNone) || !errors.As(err, &stale) || stale.Protocol != proto.Version-1 {
		t.Fatalf("Load of a stale current appliance: %v; want a StaleError that is ErrNone", err)
	}
	if a, err := Choose(context.Background(), s, cas.Digest{}, Sources{}); a != nil || err != nil {
		t.Errorf("Choose without a pin: %v, %v; want none, to build one", a, err)
	}
	if _, err := Choose(context.Background(), s, old.Digest, Sources{}); err == nil || !strings.Contains(err.Error(), "pinned appliance") || !strings.Contains(err.Error(), "protocol") {
		t.Errorf("Choose of a stale pin: %v; want an error that says why", err)
	}
}
