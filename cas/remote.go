package cas

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// A remote is a cache elsewhere — a directory, an HTTP server, an S3 bucket — that
// holds the same layout as a local cache: objects/ab/<hex> (zstd frames, as stored
// here), actions/cd/<hex> (action records, signed) and refs/NAME. A directory
// remote is just another cache directory. Push, Pull and Remotes move blobs,
// records and refs between a Store and a Remote; the Backend only moves files.

// Backend is the storage of a remote: files named by slash-separated keys
// ("objects/ab/ab12…"). Its methods are safe for concurrent use.
type Backend interface {
	// Get opens the file at key; a missing file is an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, error)
	// Has reports whether there is a file at key.
	Has(ctx context.Context, key string) (bool, error)
	// Put writes the size bytes of r at key, whole or not at all. With create set
	// it never replaces a file that is there (a conditional PUT where the server
	// has it) and returns nil if there is one; callers check with Has first where
	// the server may not honour the condition.
	Put(ctx context.Context, key string, r io.ReadSeeker, size int64, create bool) error
	// List returns the keys of the files under prefix (a directory key ending in
	// "/"), at any depth.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Remote is a cache reached through a Backend, with the local cache's layout.
type Remote struct {
	url string
	b   Backend
}

// NewRemote returns the remote that b holds, called name in messages.
func NewRemote(name string, b Backend) *Remote { return &Remote{url: name, b: b} }

// OpenRemote opens the remote a URL names: a directory path or file:///path,
// http(s)://host/prefix (GET, HEAD and PUT, as nginx's WebDAV module speaks them;
// user:password@ in the URL is sent as basic auth) or s3://bucket/prefix (endpoint,
// region and credentials as the AWS SDK reads them from the environment:
// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, …).
func OpenRemote(ctx context.Context, rawURL string) (*Remote, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" || len(u.Scheme) == 1 { // C:\… is a path
		return openDirRemote(rawURL, rawURL)
	}
	switch u.Scheme {
	case "file":
		return openDirRemote(rawURL, u.Path)
	case "http", "https":
		return NewRemote(redact(u), newHTTPBackend(u)), nil
	case "s3":
		b, err := newS3Backend(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("remote %s: %w", rawURL, err)
		}
		return NewRemote(rawURL, b), nil
	}
	return nil, fmt.Errorf("remote %s: unknown scheme %q (want a directory, file://, http://, https:// or s3://)", rawURL, u.Scheme)
}

func openDirRemote(name, dir string) (*Remote, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", name, err)
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		// A cache directory is created on first push, but its parent must be there.
		if fi, err := os.Stat(filepath.Dir(abs)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("remote %s: no such directory", name)
		}
	}
	return NewRemote(name, &dirBackend{dir: abs}), nil
}

// redact drops a password from u, for messages.
func redact(u *url.URL) string { return u.Redacted() }

// String returns the remote's URL, without a password.
func (r *Remote) String() string { return r.url }

func objectKey(d Digest) string {
	h := d.String()
	return objectsDir + "/" + h[:2] + "/" + h
}

func actionKey(a ActionID) string {
	h := a.String()
	return actionsDir + "/" + h[:2] + "/" + h
}

func refKey(name string) string { return refsDir + "/" + name }

// HasAction reports whether the remote has the record of action a (it is not
// read, so neither verified nor checked for a signature).
func (r *Remote) HasAction(ctx context.Context, a ActionID) (bool, error) {
	ok, err := r.b.Has(ctx, actionKey(a))
	if err != nil {
		return false, fmt.Errorf("remote %s: action %s: %w", r, a, err)
	}
	return ok, nil
}

// HasObject reports whether the remote has blob d (it is not read, so not verified).
func (r *Remote) HasObject(ctx context.Context, d Digest) (bool, error) {
	ok, err := r.b.Has(ctx, objectKey(d))
	if err != nil {
		return false, fmt.Errorf("remote %s: blob %s: %w", r, d, err)
	}
	return ok, nil
}

// fetchObject copies blob d from the remote into s, verified, and returns the
// bytes stored. A blob that does not verify is a *CorruptError and enters nothing.
func (r *Remote) fetchObject(ctx context.Context, s *Store, d Digest) (int64, error) {
	rc, err := r.b.Get(ctx, objectKey(d))
	if err != nil {
		return 0, fmt.Errorf("remote %s: blob %s: %w", r, d, err)
	}
	defer rc.Close()
	return s.putStored(d, rc, r.url+"/"+objectKey(d))
}

// pushObject uploads the stored file of blob d from s unless the remote has it,
// and reports whether it did.
func (r *Remote) pushObject(ctx context.Context, s *Store, d Digest) (int64, bool, error) {
	key := objectKey(d)
	if ok, err := r.b.Has(ctx, key); err != nil || ok {
		return 0, false, wrapRemote(r, "blob "+d.String(), err)
	}
	f, err := os.Open(s.objectPath(d))
	if err != nil {
		return 0, false, fmt.Errorf("push blob %s: %w", d, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, false, err
	}
	if err := r.b.Put(ctx, key, f, fi.Size(), true); err != nil {
		return 0, false, wrapRemote(r, "push blob "+d.String(), err)
	}
	return fi.Size(), true, nil
}

// getFile reads the whole file at key; what names it in errors.
func (r *Remote) getFile(ctx context.Context, key, what string) ([]byte, error) {
	rc, err := r.b.Get(ctx, key)
	if err != nil {
		return nil, wrapRemote(r, what, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 64<<20))
	if err != nil {
		return nil, wrapRemote(r, what, err)
	}
	return b, nil
}

func (r *Remote) putFile(ctx context.Context, key string, b []byte, create bool) error {
	return r.b.Put(ctx, key, bytes.NewReader(b), int64(len(b)), create)
}

// Action returns the bytes of the remote's record for a: ErrNotFound if none.
func (r *Remote) Action(ctx context.Context, a ActionID) ([]byte, error) {
	return r.getFile(ctx, actionKey(a), "action "+a.String())
}

// Ref returns the remote's ref name.
func (r *Remote) Ref(ctx context.Context, name string) (*Ref, error) {
	if err := checkRefName(name); err != nil {
		return nil, err
	}
	b, err := r.getFile(ctx, refKey(name), "ref "+name)
	if err != nil {
		return nil, err
	}
	ref, err := decodeRef(b)
	if err != nil {
		return nil, &CorruptError{What: "ref " + name, Path: r.url + "/" + refKey(name), Err: err}
	}
	return ref, nil
}

// Refs lists the remote's refs.
func (r *Remote) Refs(ctx context.Context) ([]string, error) {
	keys, err := r.b.List(ctx, refsDir+"/")
	if err != nil {
		return nil, wrapRemote(r, "list refs", err)
	}
	var names []string
	for _, k := range keys {
		if name := strings.TrimPrefix(k, refsDir+"/"); checkRefName(name) == nil {
			names = append(names, name)
		}
	}
	return names, nil
}

func wrapRemote(r *Remote, what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("remote %s: %s: %w", r, what, err)
}

// ErrRemote marks the failure of a remote's server (down, slow, erroring), as
// opposed to what it holds; a solve warns and goes on without the remote.
var ErrRemote = errors.New("remote failed")
