// Package atomicfile writes files so that a reader, or a crash, finds the old file or
// the new one whole, never part of one: the bytes go to a temporary file on the
// destination's filesystem, are flushed to stable storage (fsync), and the file is
// renamed into place. It is vmb's one way to write a file that others read.
//
// It imports only the standard library, so that every package of vmb may use it:
// cas, which imports nothing else of vmb's, and lang, which may not import cas.
package atomicfile

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// WriteFile writes data to path atomically, with permissions perm (applied as
// given, not masked by the umask), creating path's directory if need be.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// Write is WriteFile for content that write streams. The temporary file is made
// beside path, named .<name>.tmp-*, and removed if anything fails.
func Write(path string, perm fs.FileMode, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	if err = write(f); err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = Commit(f, path)
	} else {
		f.Close()
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// Commit makes f, a temporary file written on path's filesystem, the file at path:
// it syncs and closes f and renames it, creating path's directory if need be. It
// closes f whatever happens; on failure the caller removes f.Name().
func Commit(f *os.File, path string) error {
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	err := os.Rename(f.Name(), path)
	if errors.Is(err, fs.ErrNotExist) {
		if err = os.MkdirAll(filepath.Dir(path), 0o755); err == nil {
			err = os.Rename(f.Name(), path)
		}
	}
	return err
}
