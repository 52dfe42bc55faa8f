package vmexec

import (
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"vmb.dev/vmb/cas"
)

// warmDisks keeps the raw disks the last jobs left behind, by the snapshot each
// holds, so that the next job of a chain takes its disk as it is instead of
// materializing the snapshot again: a 10-step image materializes its disk once, not
// ten times. A disk is taken (moved) by one job at a time; one whose job failed is
// not given back. At most maxWarm disks are kept, the oldest dropped first.
type warmDisks struct {
	mu    sync.Mutex
	dir   string
	disks []warmDisk // oldest first
	seq   int
}

type warmDisk struct {
	d    cas.Digest
	path string
}

const maxWarm = 4

// take moves a raw disk holding snapshot d to path, if one is kept.
func (w *warmDisks) take(d cas.Digest, path string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, wd := range w.disks {
		if wd.d == d {
			w.disks = append(w.disks[:i], w.disks[i+1:]...)
			return os.Rename(wd.path, path) == nil
		}
	}
	return false
}

// give keeps the raw disk at path, which holds snapshot d.
func (w *warmDisks) give(tmpDir string, d cas.Digest, path string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir == "" {
		dir, err := os.MkdirTemp(tmpDir, "vmb-warm-")
		if err != nil {
			return
		}
		w.dir = dir
	}
	w.seq++
	kept := filepath.Join(w.dir, d.Short()+"-"+strconv.Itoa(w.seq)+".raw")
	if os.Rename(path, kept) != nil {
		return
	}
	w.disks = append(w.disks, warmDisk{d, kept})
	for len(w.disks) > maxWarm {
		os.Remove(w.disks[0].path)
		w.disks = w.disks[1:]
	}
}

// close removes every kept disk.
func (w *warmDisks) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir != "" {
		os.RemoveAll(w.dir)
	}
	w.disks, w.dir = nil, ""
}
