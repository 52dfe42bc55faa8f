package cas

import (
	"errors"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// mountTmpfs mounts a tmpfs at a new directory, or skips the test where this machine
// does not allow it (mounting needs root, as in CI).
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
		t.Skipf("cannot mount a tmpfs here (%v): needs root", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// A full disk fails the write with one clear error and leaves the store sound: no
// staging file, no torn blob, and the store still usable for what fits.
func TestFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "size=3m")
	s, err := Open(filepath.Join(mnt, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk")
	sparseImage(t, rand.New(rand.NewPCG(40, 41)), disk, 16<<20, 60)
	_, _, err = s.IngestDisk(t.Context(), disk, IngestOptions{})
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), disk) {
		t.Fatalf("ingest into a full store = %v, want ENOSPC naming the disk", err)
	}
	_, _, err = s.Put(slowReader{rand.New(rand.NewPCG(1, 2))})
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Put into a full store = %v, want ENOSPC", err)
	}
	checkStore(t, s, -1)
	if _, err := s.PutBytes([]byte("small")); err != nil {
		t.Fatalf("small put after a full disk: %v", err)
	}
}

func TestReadOnlyCache(t *testing.T) {
	mnt := mountTmpfs(t, "size=1m")
	if _, err := Open(filepath.Join(mnt, "cache")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("", mnt, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("cannot remount read-only: %v", err)
	}
	_, err := Open(filepath.Join(mnt, "cache"))
	if err == nil || !strings.Contains(err.Error(), mnt) || !strings.Contains(err.Error(), "not writable") {
		t.Fatalf("Open(read-only cache) = %v, want a 'not writable' error naming it", err)
	}
}
