package vmexec

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"lukechampine.com/blake3"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
)

// An image-in's image is read from a registry (the OCI distribution API) or an OCI
// layout directory by go-containerregistry, which we do not reimplement, or from a
// docker save archive in the repository. Every blob of a registry or layout image
// (index, manifest, config, layers) is checked against its sha256 and stored in
// the cas, found by that digest through an action record as a fetched file is
// (fetchID: a fetched file and an image blob with the same sha256 are one blob).
// So a rebuild, or another machine sharing the cache, reads nothing from the
// source, and a source that is down does not stop a build whose blobs are cached.
// Layers are read back from the cas, each time checked against its sha256 again,
// and flattened on the host (flatten.go); the build VM extracts the result.

// blobSource reads the blobs of one image by digest.
type blobSource interface {
	manifest(ctx context.Context, d v1.Hash) ([]byte, error)
	blob(ctx context.Context, d v1.Hash) (io.ReadCloser, error)
}

// registrySource reads from a registry, anonymously or with the user's docker
// credentials.
type registrySource struct{ repo name.Repository }

func (r registrySource) opts(ctx context.Context) []remote.Option {
	return []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)}
}

func (r registrySource) manifest(ctx context.Context, d v1.Hash) ([]byte, error) {
	desc, err := remote.Get(r.repo.Digest(d.String()), r.opts(ctx)...)
	if err != nil {
		return nil, err
	}
	return desc.Manifest, nil
}

func (r registrySource) blob(ctx context.Context, d v1.Hash) (io.ReadCloser, error) {
	l, err := remote.Layer(r.repo.Digest(d.String()), r.opts(ctx)...)
	if err != nil {
		return nil, err
	}
	return l.Compressed()
}

// layoutSource reads from an OCI image layout directory.
type layoutSource struct{ p layout.Path }

func (l layoutSource) manifest(_ context.Context, d v1.Hash) ([]byte, error) { return l.p.Bytes(d) }
func (l layoutSource) blob(_ context.Context, d v1.Hash) (io.ReadCloser, error) {
	return l.p.Blob(d)
}

// imageSource opens the source an image-in ref names (a path relative to dir).
func imageSource(dir, ref string) (blobSource, error) {
	source, loc, _ := graph.ParseImageRef(ref)
	switch source {
	case graph.ImageRegistry:
		r, err := name.ParseReference(loc)
		if err != nil {
			return nil, err
		}
		return registrySource{r.Context()}, nil
	case graph.ImageOCILayout:
		d, _ := splitLayoutTag(loc)
		p, err := layout.FromPath(filepath.Join(dir, filepath.FromSlash(d)))
		if err != nil {
			return nil, err
		}
		return layoutSource{p}, nil
	}
	return nil, fmt.Errorf("%s: not a registry or an OCI layout", ref)
}

// splitLayoutTag splits "DIR:tag" into DIR and tag ("" if none).
func splitLayoutTag(loc string) (dir, tag string) {
	if i := strings.LastIndex(loc, ":"); i > strings.LastIndex(loc, "/") {
		return loc[:i], loc[i+1:]
	}
	return loc, ""
}

// ResolveImage returns the digest ("sha256:<hex>") an image-in ref without one
// names now: the registry's manifest (or index) for its tag, or the layout's
// manifest for its tag (or its only one). dir is the build repository. It is what
// the CLI gives lang.Options.ResolveImage.
func ResolveImage(ctx context.Context, dir, ref string) (string, error) {
	source, loc, _ := graph.ParseImageRef(ref)
	switch source {
	case graph.ImageRegistry:
		r, err := name.ParseReference(loc)
		if err != nil {
			return "", err
		}
		desc, err := remote.Head(r, registrySource{}.opts(ctx)...)
		if err != nil {
			return "", err
		}
		return desc.Digest.String(), nil
	case graph.ImageOCILayout:
		d, tag := splitLayoutTag(loc)
		p, err := layout.FromPath(filepath.Join(dir, filepath.FromSlash(d)))
		if err != nil {
			return "", err
		}
		idx, err := p.ImageIndex()
		if err != nil {
			return "", err
		}
		m, err := idx.IndexManifest()
		if err != nil {
			return "", err
		}
		var found []string
		for _, desc := range m.Manifests {
			if tag == "" || desc.Annotations["org.opencontainers.image.ref.name"] == tag {
				found = append(found, desc.Digest.String())
			}
		}
		if len(found) != 1 {
			return "", fmt.Errorf("%s: the layout has %d images tagged %q, want one", d, len(found), tag)
		}
		return found[0], nil
	}
	return "", fmt.Errorf("%s: a docker-save archive is keyed by its content: it needs no digest", ref)
}

// imageLayers returns the layers of an image-in's image, bottom first, each as a
// function that opens its uncompressed tar stream: for a registry or layout image
// from the cas, pulling what the cas lacks first.
func (x *Executor) imageLayers(ctx context.Context, j *graph.ImageIn) ([]func() (io.ReadCloser, error), error) {
	source, loc, pin := graph.ParseImageRef(j.Ref)
	if source == graph.ImageDockerArchive {
		return archiveLayers(x.src(loc))
	}
	p := &puller{x: x, ref: j.Ref, ctx: ctx}
	want, err := v1.ParsePlatform(j.Platform)
	if err != nil {
		return nil, err
	}
	d, err := v1.NewHash(pin)
	if err != nil {
		return nil, fmt.Errorf("ref %s: %w", j.Ref, err)
	}
	for {
		b, err := p.manifest(d)
		if err != nil {
			return nil, err
		}
		var probe struct {
			MediaType types.MediaType   `json:"mediaType"`
			Manifests []json.RawMessage `json:"manifests"`
		}
		if err := json.Unmarshal(b, &probe); err != nil {
			return nil, fmt.Errorf("%s %s: %w", j.Ref, d, err)
		}
		if probe.MediaType.IsIndex() || probe.Manifests != nil {
			idx, err := v1.ParseIndexManifest(bytes.NewReader(b))
			if err != nil {
				return nil, fmt.Errorf("%s %s: %w", j.Ref, d, err)
			}
			if d, err = pickPlatform(idx, *want); err != nil {
				return nil, fmt.Errorf("%s: %w", j.Ref, err)
			}
			continue
		}
		m, err := v1.ParseManifest(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", j.Ref, d, err)
		}
		if _, err := p.blobDigest(m.Config.Digest); err != nil { // kept with the image, for what may read it later
			return nil, err
		}
		var layers []func() (io.ReadCloser, error)
		for _, l := range m.Layers {
			cd, err := p.blobDigest(l.Digest)
			if err != nil {
				return nil, err
			}
			layers = append(layers, func() (io.ReadCloser, error) { return x.openLayer(cd, l.Digest) })
		}
		return layers, nil
	}
}

// pickPlatform returns the manifest of an index for a platform.
func pickPlatform(idx *v1.IndexManifest, want v1.Platform) (v1.Hash, error) {
	var have []string
	for _, m := range idx.Manifests {
		if m.Platform == nil {
			continue
		}
		if m.Platform.Satisfies(want) {
			return m.Digest, nil
		}
		have = append(have, m.Platform.String())
	}
	return v1.Hash{}, fmt.Errorf("no image for platform %s in the index (it has %s)", want.String(), strings.Join(have, ", "))
}

// puller finds the blobs of one image in the cas, and pulls those it lacks from
// the image's source (opened on first use: a build whose blobs are cached reads
// nothing from it).
type puller struct {
	x   *Executor
	ref string
	ctx context.Context
	src blobSource
}

func (p *puller) source() (blobSource, error) {
	if p.src == nil {
		s, err := imageSource(p.x.RepoDir, p.ref)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.ref, err)
		}
		p.src = s
	}
	return p.src, nil
}

// manifest returns the bytes of the manifest or index d, checked against d.
func (p *puller) manifest(d v1.Hash) ([]byte, error) {
	if rec, err := p.x.Store.GetAction(fetchID(d.String())); err == nil {
		if o, ok := rec.Output("file"); ok {
			if b, err := p.x.Store.Get(o.Digest); err == nil && sha256Hex(b) == d.Hex {
				return b, nil
			}
		}
	}
	s, err := p.source()
	if err != nil {
		return nil, err
	}
	b, err := s.manifest(p.ctx, d)
	if err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", p.ref, d, err)
	}
	if got := sha256Hex(b); got != d.Hex {
		return nil, fmt.Errorf("%s: manifest %s: the source sent sha256:%s", p.ref, d, got)
	}
	cd, _, err := p.x.Store.Put(bytes.NewReader(b))
	if err == nil {
		err = p.record(d, cd)
	}
	return b, err
}

// blobDigest returns the cas digest of blob d, pulling it if the cas lacks it.
func (p *puller) blobDigest(d v1.Hash) (cas.Digest, error) {
	if rec, err := p.x.Store.GetAction(fetchID(d.String())); err == nil {
		if o, ok := rec.Output("file"); ok && p.x.Store.Has(o.Digest) {
			return o.Digest, nil
		}
	}
	s, err := p.source()
	if err != nil {
		return cas.Digest{}, err
	}
	r, err := s.blob(p.ctx, d)
	if err != nil {
		return cas.Digest{}, fmt.Errorf("%s: blob %s: %w", p.ref, d, err)
	}
	defer r.Close()
	h := sha256.New()
	cd, _, err := p.x.Store.Put(io.TeeReader(r, h))
	if err != nil {
		return cas.Digest{}, fmt.Errorf("%s: blob %s: %w", p.ref, d, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
		return cas.Digest{}, fmt.Errorf("%s: blob %s: the source sent sha256:%s", p.ref, d, got)
	}
	return cd, p.record(d, cd)
}

// record stores the action record that finds blob cd by its sha256 d.
func (p *puller) record(d v1.Hash, cd cas.Digest) error {
	return p.x.Store.PutAction(fetchID(d.String()), &cas.Result{
		Outputs: []cas.Output{{Name: "file", Kind: cas.KindBlob, Digest: cd}}, Executor: "vmb image-in " + p.ref})
}

// openLayer opens a layer's blob in the cas, uncompressed. Its Close reads the
// rest of the blob and fails if the blob's bytes do not have the sha256 d.
func (x *Executor) openLayer(cd cas.Digest, d v1.Hash) (io.ReadCloser, error) {
	r, err := x.Store.Open(cd)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	u, err := uncompressed(io.TeeReader(r, h))
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("layer %s: %w", d, err)
	}
	return &checkedLayer{Reader: u, close: func() error {
		defer r.Close()
		if _, err := io.Copy(h, r); err != nil {
			return fmt.Errorf("layer %s: %w", d, err)
		}
		if got := hex.EncodeToString(h.Sum(nil)); got != d.Hex {
			return fmt.Errorf("layer %s in the cache has sha256:%s", d, got)
		}
		return nil
	}}, nil
}

type checkedLayer struct {
	io.Reader
	close func() error
}

func (c *checkedLayer) Close() error { return c.close() }

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// archiveLayers returns the layers of the one image in a docker save archive.
func archiveLayers(file string) ([]func() (io.ReadCloser, error), error) {
	img, err := tarball.ImageFromPath(file, nil)
	if err != nil {
		return nil, fmt.Errorf("docker-archive %s: %w", file, err)
	}
	ls, err := img.Layers()
	if err != nil {
		return nil, fmt.Errorf("docker-archive %s: %w", file, err)
	}
	layers := make([]func() (io.ReadCloser, error), len(ls))
	for i, l := range ls {
		layers[i] = l.Uncompressed
	}
	return layers, nil
}

// flattenImage writes the flattened filesystem of an image-in's image into dir
// and returns its path. A docker-save archive is checked against the node's key
// first, as a src is.
func (x *Executor) flattenImage(ctx context.Context, n *graph.Node, j *graph.ImageIn, dir string) (string, error) {
	if source, file, _ := graph.ParseImageRef(j.Ref); source == graph.ImageDockerArchive {
		got, err := fileDigest(x.src(file))
		if err != nil {
			return "", fmt.Errorf("ref %s: %w", j.Ref, err)
		}
		if err := checkSrc(n, file, got); err != nil {
			return "", err
		}
	}
	layers, err := x.imageLayers(ctx, j)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "image.tar")
	err = atomicfile.Write(p, 0o644, func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 1<<20)
		if err := flatten(bw, layers, dir); err != nil {
			return err
		}
		return bw.Flush()
	})
	if err != nil {
		return "", fmt.Errorf("%s: %w", j.Ref, err)
	}
	return p, nil
}

// fileDigest returns the digest of a local file as lang keys a src (graph.TreeDigest).
func fileDigest(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := blake3.New(32, nil)
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return graph.FileDigest(fi.Mode(), hex.EncodeToString(h.Sum(nil))), nil
}
