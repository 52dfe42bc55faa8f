package cas

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// SnapshotReader reads a disk snapshot in place, as an io.ReaderAt, fetching (and
// verifying) only the chunks a read touches: what a reader of a few structures of a
// large disk needs, without materializing it. It keeps the last chunks it read.
// It is safe for use by many goroutines.
type SnapshotReader struct {
	s     *Store
	m     *Manifest
	mu    sync.Mutex
	cache map[int64][]byte // chunk offset -> content, at most readerCache of them
	order []int64          // cache keys, oldest first
}

// readerCache is how many chunks a SnapshotReader keeps.
const readerCache = 16

// NewSnapshotReader returns a reader of the disk m describes, whose chunks are in s.
func (s *Store) NewSnapshotReader(m *Manifest) *SnapshotReader {
	return &SnapshotReader{s: s, m: m, cache: map[int64][]byte{}}
}

// Size is the disk's size in bytes.
func (r *SnapshotReader) Size() int64 { return r.m.Size }

// ReadAt reads len(p) bytes of the disk at off; it reads chunks not in the manifest
// as zeros, and returns io.EOF for a read that reaches past the end of the disk.
func (r *SnapshotReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("snapshot read at %d: negative offset", off)
	}
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		if pos >= r.m.Size {
			return n, io.EOF
		}
		start := pos / r.m.ChunkSize * r.m.ChunkSize
		b, err := r.chunk(start)
		if err != nil {
			return n, err
		}
		n += copy(p[n:], b[pos-start:])
	}
	return n, nil
}

// chunk returns the content of the chunk at off (zeros for one not stored).
func (r *SnapshotReader) chunk(off int64) ([]byte, error) {
	r.mu.Lock()
	b, ok := r.cache[off]
	r.mu.Unlock()
	if ok {
		return b, nil
	}
	want := r.m.chunkLen(off)
	i := sort.Search(len(r.m.Chunks), func(i int) bool { return r.m.Chunks[i].Offset >= off })
	if i == len(r.m.Chunks) || r.m.Chunks[i].Offset != off {
		b = make([]byte, want)
	} else {
		var err error
		_, b, err = r.s.getInto(r.m.Chunks[i].Digest, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("chunk at %#x: %w", off, err)
		}
		if int64(len(b)) != want {
			return nil, fmt.Errorf("chunk at %#x: blob %s holds %d bytes, the manifest wants %d", off, r.m.Chunks[i].Digest, len(b), want)
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.cache[off]; !ok {
		if len(r.order) == readerCache {
			delete(r.cache, r.order[0])
			r.order = r.order[1:]
		}
		r.cache[off] = b
		r.order = append(r.order, off)
	}
	return b, nil
}

// Lookup returns the blobs and the action records whose names begin with prefix
// (hex digits, at least two), for commands that accept a digest or a key abridged.
func (s *Store) Lookup(prefix string) ([]Digest, []ActionID, error) {
	prefix = strings.ToLower(prefix)
	if len(prefix) < 2 || len(prefix) > 2*Size || strings.Trim(prefix, "0123456789abcdef") != "" {
		return nil, nil, fmt.Errorf("%q is not a digest or the beginning of one", prefix)
	}
	var blobs []Digest
	var actions []ActionID
	for _, sub := range []string{objectsDir, actionsDir} {
		des, err := os.ReadDir(filepath.Join(s.dir, sub, prefix[:2]))
		if err != nil && !os.IsNotExist(err) {
			return nil, nil, err
		}
		for _, de := range des {
			if !strings.HasPrefix(de.Name(), prefix) {
				continue
			}
			d, err := ParseDigest(de.Name())
			if err != nil {
				continue // a stray file: verify reports it
			}
			if sub == objectsDir {
				blobs = append(blobs, d)
			} else {
				actions = append(actions, ActionID(d))
			}
		}
	}
	return blobs, actions, nil
}
