package registrytest

import (
	"archive/tar"
	"bytes"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// The test image has two layers. The base holds, owned by 1000:1000: etc/hello
// ("hello\n"), etc/link (a symlink to hello), etc/hard (a hard link to
// etc/hello), dev/null (char device 1:3), etc/xattr (with the xattr user.vmb=1),
// gone, opq/lower, old ("old\n") and oldlink (a hard link to old). The second
// layer removes gone (a whiteout), makes opq opaque and adds opq/upper, and
// replaces old ("new\n"), so that oldlink must keep "old\n"
// (go-containerregistry#2002).
var (
	Hello = []byte("hello\n")
	Old   = []byte("old\n")
	New   = []byte("new\n")
)

type entry struct {
	name string
	typ  byte
	body []byte
	link string
	pax  map[string]string
}

func layer(entries ...entry) (v1.Layer, error) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Uid: 1000, Gid: 1000, Size: int64(len(e.body)),
			Linkname: e.link, PAXRecords: e.pax, Format: tar.FormatPAX}
		switch e.typ {
		case tar.TypeDir:
			h.Mode = 0o755
		case tar.TypeChar:
			h.Mode, h.Devmajor, h.Devminor = 0o666, 1, 3
		case tar.TypeSymlink:
			h.Mode = 0o777
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		tw.Write(e.body)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	data := b.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
}

// Image returns the test image for a platform ("amd64", "arm64"): the layers
// are the same but for etc/arch, which holds the architecture.
func Image(arch string) (v1.Image, error) {
	base, err := layer(
		entry{name: "etc/", typ: tar.TypeDir},
		entry{name: "etc/hello", typ: tar.TypeReg, body: Hello},
		entry{name: "etc/link", typ: tar.TypeSymlink, link: "hello"},
		entry{name: "etc/hard", typ: tar.TypeLink, link: "etc/hello"},
		entry{name: "etc/xattr", typ: tar.TypeReg, body: []byte("x\n"), pax: map[string]string{"SCHILY.xattr.user.vmb": "1"}},
		entry{name: "etc/arch", typ: tar.TypeReg, body: []byte(arch + "\n")},
		entry{name: "dev/", typ: tar.TypeDir},
		entry{name: "dev/null", typ: tar.TypeChar},
		entry{name: "gone", typ: tar.TypeReg, body: []byte("removed by the upper layer\n")},
		entry{name: "opq/", typ: tar.TypeDir},
		entry{name: "opq/lower", typ: tar.TypeReg, body: []byte("hidden by the upper layer\n")},
		entry{name: "old", typ: tar.TypeReg, body: Old},
		entry{name: "oldlink", typ: tar.TypeLink, link: "old"},
	)
	if err != nil {
		return nil, err
	}
	upper, err := layer(
		entry{name: ".wh.gone", typ: tar.TypeReg},
		entry{name: "opq/", typ: tar.TypeDir},
		entry{name: "opq/.wh..wh..opq", typ: tar.TypeReg},
		entry{name: "opq/upper", typ: tar.TypeReg, body: []byte("upper\n")},
		entry{name: "old", typ: tar.TypeReg, body: New},
	)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, base, upper)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	return mutate.ConfigFile(img, cf)
}

// Index returns an index of the test image for linux/amd64 and linux/arm64.
func Index() (v1.ImageIndex, error) {
	var adds []mutate.IndexAddendum
	for _, arch := range []string{"amd64", "arm64"} {
		img, err := Image(arch)
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	return mutate.AppendManifests(empty.Index, adds...), nil
}
