package lang

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"lukechampine.com/blake3"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
)

// hasher digests local inputs by content: a file by its bytes and mode, a tree by
// the sorted list of its entries (path, type, NormalMode, content digest or
// symlink target). Owners and times are not part of it. A stat cache maps a file's
// path, size, mtime, ctime and inode to its digest, so that re-hashing an unchanged
// tree reads no file. A file changed in the last racyWindow is not cached.
type hasher struct {
	ctx   context.Context
	path  string // where the stat cache is kept; "" for none
	mu    sync.Mutex
	cache map[string]statEntry
	dirty bool
	reads int           // files read, for tests
	racy  time.Duration // racyWindow; tests set 0
}

// racyWindow: a file modified this recently is not cached, since a write within the
// same clock tick would leave its stat unchanged (git's "racy clean" problem).
const racyWindow = 2 * time.Second

type statEntry struct {
	Size   int64  `json:"s"`
	Mtime  int64  `json:"m"`
	Ctime  int64  `json:"c"`
	Inode  uint64 `json:"i"`
	Digest string `json:"d"`
}

func newHasher(ctx context.Context, path string) *hasher {
	h := &hasher{ctx: ctx, path: path, cache: map[string]statEntry{}, racy: racyWindow}
	if path != "" {
		if b, err := os.ReadFile(path); err == nil {
			json.Unmarshal(b, &h.cache) // a damaged cache is an empty one
		}
	}
	return h
}

// save writes the stat cache back if it changed.
func (h *hasher) save() error {
	if h.path == "" || !h.dirty {
		return nil
	}
	b, err := json.Marshal(h.cache)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(h.path, b, 0o644)
}

// digest returns "blake3:<hex>" of the file or tree at path.
func (h *hasher) digest(path string) (string, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	var list graph.TreeDigest
	if fi.IsDir() {
		err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if err := h.ctx.Err(); err != nil {
				return err
			}
			rel, _ := filepath.Rel(path, p)
			info, err := d.Info()
			if err != nil {
				return err
			}
			return h.entry(&list, p, filepath.ToSlash(rel), info)
		})
	} else {
		err = h.entry(&list, path, ".", fi)
	}
	if err != nil {
		return "", err
	}
	return list.Sum(), nil
}

// entry adds one entry to a tree listing. WalkDir visits in lexical order, so the
// listing is sorted.
func (h *hasher) entry(list *graph.TreeDigest, p, rel string, fi fs.FileInfo) error {
	switch {
	case fi.Mode().IsRegular():
		d, err := h.file(p, fi)
		list.File(rel, fi.Mode(), d)
		return err
	case fi.IsDir():
		list.Dir(rel, fi.Mode())
		return nil
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		list.Symlink(rel, target)
		return err
	}
	return fmt.Errorf("%s: not a regular file, directory or symlink", p)
}

// file returns the hex BLAKE3 of a regular file's content, from the stat cache when
// the file is unchanged.
func (h *hasher) file(p string, fi fs.FileInfo) (string, error) {
	st, _ := fi.Sys().(*syscall.Stat_t)
	var key statEntry
	if st != nil {
		key = statEntry{Size: fi.Size(), Mtime: fi.ModTime().UnixNano(), Ctime: st.Ctim.Nano(), Inode: st.Ino}
		h.mu.Lock()
		e, ok := h.cache[p]
		h.mu.Unlock()
		if ok && e.Size == key.Size && e.Mtime == key.Mtime && e.Ctime == key.Ctime && e.Inode == key.Inode {
			return e.Digest, nil
		}
	}
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h.mu.Lock()
	h.reads++
	h.mu.Unlock()
	hh := blake3.New(32, nil)
	if _, err := io.Copy(hh, f); err != nil {
		return "", err
	}
	d := hex.EncodeToString(hh.Sum(nil))
	if st != nil && time.Since(fi.ModTime()) >= h.racy && time.Since(time.Unix(0, key.Ctime)) >= h.racy {
		key.Digest = d
		h.mu.Lock()
		h.cache[p] = key
		h.dirty = true
		h.mu.Unlock()
	}
	return d, nil
}
