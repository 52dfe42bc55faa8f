package cas

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// entry is a file of the store found by a walk.
type entry struct {
	path    string
	digest  Digest // of the blob, or the action ID, parsed from the name
	size    int64
	modTime time.Time
}

// walk lists the files under objects/ or actions/. Files whose names are not digests
// in the right fan-out directory are reported in stray.
func (s *Store) walk(sub string) (entries []entry, stray []string, err error) {
	root := filepath.Join(s.dir, sub)
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed by a concurrent gc
			}
			return err
		}
		if de.IsDir() {
			return nil
		}
		d, perr := ParseDigest(de.Name())
		if perr != nil || filepath.Base(filepath.Dir(p)) != de.Name()[:2] {
			stray = append(stray, p)
			return nil
		}
		fi, err := de.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		entries = append(entries, entry{path: p, digest: d, size: fi.Size(), modTime: fi.ModTime()})
		return nil
	})
	return entries, stray, err
}

// Actions lists the IDs of every action record in the store.
func (s *Store) Actions() ([]ActionID, error) {
	es, _, err := s.walk(actionsDir)
	ids := make([]ActionID, len(es))
	for i, e := range es {
		ids[i] = ActionID(e.digest)
	}
	return ids, err
}

// temps lists the staging files under tmp/.
func (s *Store) temps() ([]entry, error) {
	des, err := os.ReadDir(filepath.Join(s.dir, tmpDir))
	if err != nil {
		return nil, err
	}
	var out []entry
	for _, de := range des {
		fi, err := de.Info()
		if err != nil {
			continue
		}
		out = append(out, entry{path: filepath.Join(s.dir, tmpDir, de.Name()), size: fi.Size(), modTime: fi.ModTime()})
	}
	return out, nil
}
