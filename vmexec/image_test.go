package vmexec

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/registrytest"
)

type flatEntry struct {
	h    *tar.Header
	body []byte
}

// flattenLayers flattens layers and reads the stream back by name, checking that
// no name comes twice.
func flattenLayers(t *testing.T, layers []func() (io.ReadCloser, error)) (map[string]flatEntry, []byte) {
	t.Helper()
	var b bytes.Buffer
	if err := flatten(&b, layers, t.TempDir()); err != nil {
		t.Fatal(err)
	}
	got := map[string]flatEntry{}
	tr := tar.NewReader(bytes.NewReader(b.Bytes()))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		if _, dup := got[h.Name]; dup {
			t.Errorf("%s comes twice", h.Name)
		}
		got[h.Name] = flatEntry{h, body}
	}
	return got, b.Bytes()
}

// checkTestImage checks a flattened registrytest image.
func checkTestImage(t *testing.T, got map[string]flatEntry, arch string) {
	t.Helper()
	for _, gone := range []string{"gone", "opq/lower"} {
		if _, ok := got[gone]; ok {
			t.Errorf("%s is in the flattened image: an upper layer removed it", gone)
		}
	}
	want := map[string]string{"etc/hello": "hello\n", "old": "new\n", "opq/upper": "upper\n", "etc/arch": arch + "\n"}
	for n, body := range want {
		if e, ok := got[n]; !ok || string(e.body) != body {
			t.Errorf("%s: %q, want %q", n, got[n].body, body)
		}
	}
	// go-containerregistry#2002: the link's target was replaced above it.
	if e := got["oldlink"]; e.h == nil || e.h.Typeflag != tar.TypeReg || !bytes.Equal(e.body, registrytest.Old) || e.h.Uid != 1000 {
		t.Errorf("oldlink: want a file of its own holding %q, owned by 1000, got %+v %q", registrytest.Old, e.h, e.body)
	}
	if e := got["etc/hard"]; e.h == nil || e.h.Typeflag != tar.TypeLink || e.h.Linkname != "etc/hello" {
		t.Errorf("etc/hard: want a hard link to etc/hello, got %+v", e.h)
	}
	if e := got["etc/link"]; e.h == nil || e.h.Typeflag != tar.TypeSymlink || e.h.Linkname != "hello" {
		t.Errorf("etc/link: want a symlink to hello, got %+v", e.h)
	}
	if e := got["dev/null"]; e.h == nil || e.h.Typeflag != tar.TypeChar || e.h.Devmajor != 1 || e.h.Devminor != 3 {
		t.Errorf("dev/null: want char 1:3, got %+v", e.h)
	}
	if e := got["etc/xattr"]; e.h == nil || e.h.PAXRecords["SCHILY.xattr.user.vmb"] != "1" {
		t.Errorf("etc/xattr: want the xattr user.vmb=1, got %+v", e.h)
	}
	if e := got["etc/hello"]; e.h == nil || e.h.Uid != 1000 || e.h.Gid != 1000 {
		t.Errorf("etc/hello: want owner 1000:1000, got %+v", e.h)
	}
	for n := range got {
		if strings.Contains(n, ".wh.") {
			t.Errorf("%s: a whiteout in the flattened image", n)
		}
	}
}

func openers(t *testing.T, img v1.Image) []func() (io.ReadCloser, error) {
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var out []func() (io.ReadCloser, error)
	for _, l := range ls {
		out = append(out, l.Uncompressed)
	}
	return out
}

// TestFlatten checks the flattened stream: whiteouts and opaque directories
// applied, links, devices, owners and xattrs kept, and a hard link whose target
// an upper layer replaced keeping the old content (go-containerregistry#2002).
func TestFlatten(t *testing.T) {
	img, err := registrytest.Image("amd64")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := flattenLayers(t, openers(t, img))
	checkTestImage(t, got, "amd64")

	// The same hard link with its target removed, and two links to it: the first
	// becomes a file, the second a link to it.
	lower := tarLayer(t, []*tar.Header{
		{Name: "a", Typeflag: tar.TypeReg, Mode: 0o600, Size: 4},
		{Name: "b", Typeflag: tar.TypeLink, Linkname: "a"},
		{Name: "c", Typeflag: tar.TypeLink, Linkname: "./a"},
	}, "old\n")
	upper := tarLayer(t, []*tar.Header{{Name: ".wh.a", Typeflag: tar.TypeReg}}, "")
	got, _ = flattenLayers(t, []func() (io.ReadCloser, error){lower, upper})
	if _, ok := got["a"]; ok {
		t.Error("a survived its whiteout")
	}
	if e := got["b"]; e.h == nil || e.h.Typeflag != tar.TypeReg || string(e.body) != "old\n" || e.h.Mode != 0o600 {
		t.Errorf("b: %+v %q", e.h, e.body)
	}
	if e := got["c"]; e.h == nil || e.h.Typeflag != tar.TypeLink || e.h.Linkname != "b" {
		t.Errorf("c: %+v", e.h)
	}
}

func tarLayer(t *testing.T, hs []*tar.Header, body string) func() (io.ReadCloser, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write([]byte(body)[:h.Size])
	}
	tw.Close()
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil }
}

// TestImageSources pulls the test image from a registry (an index, by platform),
// an OCI layout and a docker-save archive; the registry's blobs go into the cas,
// so that with the registry stopped the image still flattens, the same.
func TestImageSources(t *testing.T) {
	reg := registrytest.Start(t)
	idx, err := registrytest.Index()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Addr + "/vmb/test:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	amd64, _ := registrytest.Image("amd64")
	amd64Digest, _ := amd64.Digest()

	repo := t.TempDir()
	p, err := layout.Write(filepath.Join(repo, "layout"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(amd64, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "1"})); err != nil {
		t.Fatal(err)
	}
	tag, _ := name.NewTag("vmb/test:1")
	if err := tarball.WriteToFile(filepath.Join(repo, "saved.tar"), tag, amd64); err != nil {
		t.Fatal(err)
	}

	ctx := context.Background()
	for _, tc := range []struct{ ref, want string }{
		{reg.Addr + "/vmb/test:1", idxDigest.String()},
		{"oci:layout:1", amd64Digest.String()},
		{"oci:layout", amd64Digest.String()},
	} {
		if got, err := ResolveImage(ctx, repo, tc.ref); err != nil || got != tc.want {
			t.Errorf("ResolveImage(%s) = %s, %v; want %s", tc.ref, got, err, tc.want)
		}
	}

	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	x := &Executor{Store: store, RepoDir: repo}
	pull := func(ref, platform, arch string) []byte {
		t.Helper()
		j := &graph.ImageIn{Ref: ref, Platform: platform}
		layers, err := x.imageLayers(ctx, j)
		if err != nil {
			t.Fatalf("%s: %v", ref, err)
		}
		got, b := flattenLayers(t, layers)
		checkTestImage(t, got, arch)
		return b
	}
	pinned := reg.Addr + "/vmb/test:1@" + idxDigest.String()
	first := pull(pinned, "linux/amd64", "amd64")
	pull(pinned, "linux/arm64", "arm64")
	if _, err := x.imageLayers(ctx, &graph.ImageIn{Ref: pinned, Platform: "linux/s390x"}); err == nil || !strings.Contains(err.Error(), "linux/amd64, linux/arm64") {
		t.Errorf("a platform the index lacks: %v", err)
	}
	reg.Stop()
	if again := pull(pinned, "linux/amd64", "amd64"); !bytes.Equal(again, first) {
		t.Error("the image flattened from the cas differs from the one pulled")
	}
	// A cache without the blobs cannot pull from a stopped registry.
	other, _ := cas.Open(t.TempDir())
	if _, err := (&Executor{Store: other}).imageLayers(ctx, &graph.ImageIn{Ref: pinned, Platform: "linux/amd64"}); err == nil {
		t.Error("pulled from a stopped registry")
	}

	if b := pull("oci:layout@"+amd64Digest.String(), "linux/amd64", "amd64"); !bytes.Equal(b, first) {
		t.Error("the OCI layout's image flattens differently")
	}
	if b := pull("docker-archive:saved.tar", "linux/amd64", "amd64"); !bytes.Equal(b, first) {
		t.Error("the docker archive's image flattens differently")
	}

	// A layer blob in the cache that is not what its digest says fails.
	m, _ := amd64.Manifest()
	rec, err := store.GetAction(fetchID(m.Layers[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rec.Output("file"); !ok {
		t.Fatal("no blob recorded for the layer")
	}
	bad, _, _ := store.Put(strings.NewReader("not the layer"))
	store.PutAction(fetchID(m.Layers[0].Digest.String()), &cas.Result{Outputs: []cas.Output{{Name: "file", Kind: cas.KindBlob, Digest: bad}}})
	layers, err := x.imageLayers(ctx, &graph.ImageIn{Ref: pinned, Platform: "linux/amd64"})
	if err == nil {
		err = flatten(io.Discard, layers, t.TempDir())
	}
	if err == nil {
		t.Error("a layer that is not what its digest says was used")
	}
}
