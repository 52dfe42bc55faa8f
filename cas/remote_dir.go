package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"vmb.dev/vmb/internal/atomicfile"
)

// dirBackend is a remote in a directory: another cache directory, written as the
// store writes its own (temp file in tmp/, fsync, then a link or rename).
type dirBackend struct{ dir string }

func (b *dirBackend) path(key string) string { return filepath.Join(b.dir, filepath.FromSlash(key)) }

func (b *dirBackend) Get(_ context.Context, key string) (io.ReadCloser, error) {
	f, err := os.Open(b.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", key, ErrNotFound)
	}
	return f, err
}

func (b *dirBackend) Has(_ context.Context, key string) (bool, error) {
	_, err := os.Stat(b.path(key))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

func (b *dirBackend) Put(_ context.Context, key string, r io.ReadSeeker, _ int64, create bool) error {
	tmp := filepath.Join(b.dir, tmpDir)
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(tmp, "put-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	p := b.path(key)
	if !create {
		return atomicfile.Commit(f, p)
	}
	// A hard link never replaces a file: the no-overwrite rename.
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	if err := os.Link(f.Name(), p); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func (b *dirBackend) List(_ context.Context, prefix string) ([]string, error) {
	var keys []string
	root := b.path(prefix)
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(b.dir, p)
		keys = append(keys, filepath.ToSlash(rel))
		return nil
	})
	return keys, err
}
