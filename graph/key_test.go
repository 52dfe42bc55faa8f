package graph

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestPreimage(t *testing.T) {
	parent := HashPreimage([]byte("p"))
	job := &Run{
		Root:    Place{Disk: "root", Partition: 1},
		Command: Command{"/bin/sh", "-c", "echo a > b\nls"},
		Env:     map[string]string{"Z": "1", "A": "2", "a.b": "3"},
		Workdir: "/",
		Mode:    "chroot",
	}
	got := string(Preimage("appliance blake3:00 agent/1", &parent, job, []Input{{Name: "src", Digest: "blake3:ff"}}))
	want := `vmb key v1
executor appliance blake3:00 agent/1
parent ` + parent.String() + `
op run
param command[0]="/bin/sh"
param command[1]="-c"
param command[2]="echo a > b\nls"
param env.A="2"
param env.Z="1"
param env["a.b"]="3"
param mode="chroot"
param network=false
param root="root:1"
param workdir="/"
input src blake3:ff
`
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("preimage (-want +got):\n%s", diff)
	}
}

// sample returns a job of each kind with every field set, decoded from the JSON a
// definition would produce.
func sample(t *testing.T, kind string) Job {
	t.Helper()
	src := map[string]string{
		"create-disk": `{"disk": "root", "size": "1GiB"}`,
		"resize-disk": `{"disk": "root", "size": "2GiB"}`,
		"label":       `{"disk": "root", "type": "gpt"}`,
		"partition":   `{"disk": "root", "partitions": [{"type": "primary", "size": "256MiB", "name": "efi", "guid": "efi"}, {"type": "primary", "size": "rest", "bootable": true}]}`,
		"format":      `{"place": "root:1", "fs": "fat32", "label": "EFI", "options": ["-F", "32"]}`,
		"fetch":       `{"url": "https://example.org/a", "digest": "sha256:00", "dest": "root:2:/a", "mode": "0644"}`,
		"tar-in":      `{"src": "a.tar", "dest": "root:2:/"}`,
		"tar-out":     `{"src": "root:2:/etc", "dest": "etc.tar"}`,
		"copy-in":     `{"src": "files", "dest": "root:2:/srv", "mode": "0755", "owner": "1:1"}`,
		"copy-out":    `{"src": "root:2:/etc/passwd", "dest": "passwd"}`,
		"dd":          `{"src": "mbr.bin", "disk": "root", "offset": 0}`,
		"run":         `{"root": "root:2", "command": "true", "env": {"A": "b"}, "workdir": "/", "mode": "chroot", "network": true, "timeout": 60}`,
		"hash":        `{"disk": "root", "algorithm": "blake3", "dest": "root.b3"}`,
		"diff":        `{"place": "root:2", "dest": "root.files"}`,
		"remove":      `{"path": "root:2:/tmp"}`,
		"image-in":    `{"ref": "127.0.0.1:5000/debian:12@sha256:4bb7e8ae3d4bd3e8c4e3ff3e2b6a2f1d0c5e9f8a7b6c5d4e3f2a1b0c9d8e7f6a", "platform": "linux/amd64", "dest": "root:2:/"}`,
		"export":      `{"disk": "root", "format": "qcow2", "dest": "root.qcow2"}`,
	}[kind]
	j := NewJob(kind)
	if j == nil || src == "" {
		t.Fatalf("no job or no sample for kind %q", kind)
	}
	if err := json.Unmarshal([]byte(src), j); err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	if j.Kind() != kind {
		t.Fatalf("NewJob(%q).Kind() = %q", kind, j.Kind())
	}
	return j
}

// TestParamsCanonical checks that every kind encodes to parameter lines (no float,
// no panic), that encoding is stable, and that every line names a parameter once.
func TestParamsCanonical(t *testing.T) {
	for _, kind := range Kinds {
		j := sample(t, kind)
		a, b := Params(j), Params(j)
		if diff := cmp.Diff(a, b); diff != "" || len(a) == 0 {
			t.Errorf("%s: params unstable or empty:\n%s", kind, diff)
		}
		seen := map[string]bool{}
		for _, l := range a {
			name, _, ok := strings.Cut(l, "=")
			if !ok || seen[name] || strings.Contains(l, "\n") {
				t.Errorf("%s: bad or repeated line %q", kind, l)
			}
			seen[name] = true
		}
	}
}

func TestKeyDependsOnEverything(t *testing.T) {
	job := sample(t, "format")
	base := NewNode("exec", nil, job, nil)
	other := sample(t, "format")
	other.(*Format).FS = "ext4"
	parent := NewNode("exec", nil, sample(t, "label"), nil)
	keys := map[string]Key{
		"base":     base.Key,
		"executor": NewNode("exec2", nil, job, nil).Key,
		"param":    NewNode("exec", nil, other, nil).Key,
		"parent":   NewNode("exec", parent, job, nil).Key,
		"input":    NewNode("exec", nil, job, []Input{{Name: "src", Digest: "blake3:00"}}).Key,
	}
	seen := map[Key]string{}
	for what, k := range keys {
		if prev, ok := seen[k]; ok {
			t.Errorf("changing %s gives the key of %s", what, prev)
		}
		seen[k] = what
	}
	run, longer := sample(t, "run"), sample(t, "run")
	longer.(*Run).Timeout *= 10
	if NewNode("exec", nil, run, nil).Key != NewNode("exec", nil, longer, nil).Key {
		t.Error("a run's timeout changed its key")
	}
	if again := NewNode("exec", nil, sample(t, "format"), nil); again.Key != base.Key {
		t.Error("the same node keyed twice gives two keys")
	}
	if HashPreimage(base.Preimage) != base.Key {
		t.Error("key is not the hash of the preimage")
	}
}

func TestKeyText(t *testing.T) {
	k := HashPreimage([]byte("x"))
	got, err := ParseKey(k.String())
	if err != nil || got != k {
		t.Errorf("ParseKey(String()) = %v, %v", got, err)
	}
	if _, err := ParseKey("abc"); err == nil {
		t.Error("ParseKey accepted a short key")
	}
}

func TestGraphShares(t *testing.T) {
	var g Graph
	a := g.Add(NewNode("e", nil, sample(t, "create-disk"), nil))
	b := g.Add(NewNode("e", nil, sample(t, "create-disk"), nil))
	if a != b || len(g.Nodes) != 1 {
		t.Errorf("equal nodes not shared: %d nodes", len(g.Nodes))
	}
	c := g.Add(NewNode("e", a, sample(t, "label"), nil))
	if got := Chain(c); len(got) != 2 || got[0] != a || got[1] != c {
		t.Errorf("Chain = %v", got)
	}
}

func TestFindKey(t *testing.T) {
	var g Graph
	a := g.Add(NewNode("e", nil, sample(t, "create-disk"), nil))
	b := g.Add(NewNode("e", a, sample(t, "label"), nil))
	for _, n := range []*Node{a, b} {
		if got, err := g.FindKey(n.Key.Short()); err != nil || got != n {
			t.Errorf("FindKey(%s) = %v, %v", n.Key.Short(), got, err)
		}
		if got, err := g.FindKey(strings.ToUpper(n.Key.String())); err != nil || got != n {
			t.Errorf("FindKey(full key, upper case) = %v, %v", got, err)
		}
	}
	for _, bad := range []string{"abc", "zzzzzzzz", ""} {
		if _, err := g.FindKey(bad); err == nil {
			t.Errorf("FindKey(%q) found a node", bad)
		}
	}
}

// Every kind of the table makes a job of that kind, and describes itself.
func TestKindsTable(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds {
		j := NewJob(k)
		if j == nil || j.Kind() != k || seen[k] {
			t.Errorf("NewJob(%q) = %#v", k, j)
			continue
		}
		seen[k] = true
		if d := j.Describe(); !strings.HasPrefix(d, k) {
			t.Errorf("%s: Describe() = %q", k, d)
		}
	}
	if NewJob("no-such-kind") != nil {
		t.Error("NewJob of an unknown kind is not nil")
	}
}

// A mode has one spelling, so one key: "644" and "0644" are the same parameter.
func TestFileModeCanonical(t *testing.T) {
	var a, b CopyIn
	if err := json.Unmarshal([]byte(`{"mode":"644"}`), &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`{"mode":"0644"}`), &b); err != nil {
		t.Fatal(err)
	}
	if a.Mode != "0644" || !slices.Equal(Params(&a), Params(&b)) {
		t.Errorf("mode 644 is %q, params %q and %q", a.Mode, Params(&a), Params(&b))
	}
	if err := json.Unmarshal([]byte(`{"mode":"999"}`), &a); err == nil {
		t.Error("mode 999 accepted")
	}
}

// TestImageInKeysDigest checks that an image-in is keyed by its pinned digest and
// platform, not by where its ref says the image is read from.
func TestImageInKeysDigest(t *testing.T) {
	const d = "sha256:4bb7e8ae3d4bd3e8c4e3ff3e2b6a2f1d0c5e9f8a7b6c5d4e3f2a1b0c9d8e7f6a"
	a := &ImageIn{Ref: "127.0.0.1:5000/debian:12@" + d, Platform: "linux/amd64", Dest: Place{Disk: "root", Partition: 2, Path: "/"}}
	b := *a
	b.Ref = "oci:images/debian@" + d
	if got := a.Uses().Pinned; got == nil || *got != (Input{Name: "image", Digest: d}) {
		t.Fatalf("Uses().Pinned = %v", got)
	}
	if cmp.Diff(Params(a), Params(&b)) != "" {
		t.Errorf("the ref is key material: %q vs %q", Params(a), Params(&b))
	}
	c := *a
	c.Platform = "linux/arm64"
	if cmp.Diff(Params(a), Params(&c)) == "" {
		t.Error("the platform is not key material")
	}
}

func TestParseImageRef(t *testing.T) {
	for _, tc := range []struct{ ref, source, name, digest string }{
		{"127.0.0.1:5000/debian:12@sha256:ab", ImageRegistry, "127.0.0.1:5000/debian:12", "sha256:ab"},
		{"debian:12", ImageRegistry, "debian:12", ""},
		{"oci:images/debian@sha256:ab", ImageOCILayout, "images/debian", "sha256:ab"},
		{"oci:images/debian:12", ImageOCILayout, "images/debian:12", ""},
		{"docker-archive:images/debian.tar", ImageDockerArchive, "images/debian.tar", ""},
	} {
		s, n, d := ParseImageRef(tc.ref)
		if s != tc.source || n != tc.name || d != tc.digest {
			t.Errorf("ParseImageRef(%q) = %q, %q, %q; want %q, %q, %q", tc.ref, s, n, d, tc.source, tc.name, tc.digest)
		}
	}
}
