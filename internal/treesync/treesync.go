// Package treesync makes one directory tree the same as another, changing only
// what differs, in place: an entry that is the same keeps its inode and its
// blocks, a file whose content changed is rewritten in the inode it has. The
// agent uses it to carry a boot-mode run's changes from the disk the target booted
// from over to the disk as it was before the boot, so that what the boot did not
// change stays byte for byte as it was.
package treesync

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Stats counts what Sync changed.
type Stats struct {
	Created, Updated, Removed int
}

// Sync makes the tree at dst what the tree at src is: types, contents, link
// targets, device numbers, modes, owners, extended attributes, hard links, and
// access and modification times of what it changes. skip, given a path relative
// to the roots ("/" for the roots themselves, "/etc/hostname"), leaves a path, and
// a directory's tree, as dst has it, and keeps it from being removed. Sockets are
// not carried over.
//
// An entry is taken as unchanged without reading its content when both sides
// have it as the same inode number with the same change time, modification time
// and size: dst is a copy of what src was before src changed, and every change
// to an inode sets its change time to the clock.
func Sync(src, dst string, skip func(rel string) bool) (Stats, error) {
	s := &syncer{src: src, dst: dst, skip: skip, links: map[uint64]string{}}
	err := filepath.WalkDir(src, s.visit)
	if err == nil {
		err = s.removeExtra()
	}
	// Directories last, deepest first: their times change as entries come and go.
	for i := len(s.dirs) - 1; err == nil && i >= 0; i-- {
		err = setTimes(s.dirs[i].path, s.dirs[i].st)
	}
	return s.stats, err
}

type syncer struct {
	src, dst string
	skip     func(string) bool
	links    map[uint64]string // src inode of a file with more than one link -> its dst path
	dirs     []dirTimes
	stats    Stats
}

type dirTimes struct {
	path string
	st   *unix.Stat_t
}

func rel(root, p string) string {
	r, _ := filepath.Rel(root, p)
	return filepath.Clean("/" + r)
}

func (s *syncer) visit(p string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	r := rel(s.src, p)
	if s.skip != nil && s.skip(r) {
		if d.IsDir() {
			return filepath.SkipDir
		}
		return nil
	}
	var st, dt unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFSOCK {
		return nil
	}
	q := filepath.Join(s.dst, r)
	exists := unix.Lstat(q, &dt) == nil
	if exists && st.Ino == dt.Ino && st.Ctim == dt.Ctim && st.Mtim == dt.Mtim && st.Size == dt.Size && st.Mode == dt.Mode {
		if st.Nlink > 1 && !d.IsDir() {
			s.links[st.Ino] = q
		}
		return nil // as it was
	}
	// A hard link to a file already carried over.
	if st.Nlink > 1 && !d.IsDir() {
		if first, ok := s.links[st.Ino]; ok {
			var ft unix.Stat_t
			if exists && unix.Lstat(first, &ft) == nil && ft.Ino == dt.Ino {
				return nil
			}
			if exists {
				if err := os.RemoveAll(q); err != nil {
					return err
				}
			}
			s.stats.Created++
			return os.Link(first, q)
		}
		defer func() { s.links[st.Ino] = q }()
	}
	if exists && st.Mode&unix.S_IFMT != dt.Mode&unix.S_IFMT || exists && isDev(st) && st.Rdev != dt.Rdev {
		if err := os.RemoveAll(q); err != nil {
			return err
		}
		exists = false
	}
	if exists && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		a, err1 := os.Readlink(p)
		b, err2 := os.Readlink(q)
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		if a != b {
			if err := os.Remove(q); err != nil {
				return err
			}
			exists = false
		}
	}
	if exists {
		s.stats.Updated++
	} else {
		s.stats.Created++
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if !exists {
			if err := os.Mkdir(q, 0o700); err != nil {
				return err
			}
		}
		s.dirs = append(s.dirs, dirTimes{q, &st})
	case unix.S_IFREG:
		if err := copyContent(p, q, st.Size); err != nil {
			return err
		}
	case unix.S_IFLNK:
		if !exists {
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, q); err != nil {
				return err
			}
		}
	default: // devices and fifos
		if !exists {
			if err := unix.Mknod(q, st.Mode, int(st.Rdev)); err != nil {
				return fmt.Errorf("mknod %s: %w", q, err)
			}
		}
	}
	if err := unix.Lchown(q, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		// After chown, which clears set-user-ID and set-group-ID bits.
		if err := unix.Chmod(q, st.Mode&0o7777); err != nil {
			return err
		}
	}
	if err := copyXattrs(p, q); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return nil
	}
	return setTimes(q, &st)
}

func isDev(st unix.Stat_t) bool {
	t := st.Mode & unix.S_IFMT
	return t == unix.S_IFBLK || t == unix.S_IFCHR
}

// copyContent makes q's content p's, rewriting q in place only if it differs.
func copyContent(p, q string, size int64) error {
	in, err := os.Open(p)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(q, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	if fi, err := out.Stat(); err == nil && fi.Size() == size {
		same, err := sameContent(in, out)
		if err != nil || same {
			return err
		}
		if _, err := in.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if _, err := out.Seek(0, io.SeekStart); err != nil {
			return err
		}
	}
	if err := out.Truncate(0); err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Close()
}

func sameContent(a, b io.Reader) (bool, error) {
	x, y := make([]byte, 256<<10), make([]byte, 256<<10)
	for {
		n, err1 := io.ReadFull(a, x)
		m, err2 := io.ReadFull(b, y)
		if !bytes.Equal(x[:n], y[:m]) {
			return false, nil
		}
		if err1 == io.EOF || err1 == io.ErrUnexpectedEOF {
			return err2 == io.EOF || err2 == io.ErrUnexpectedEOF, nil
		}
		if err := errors.Join(err1, err2); err != nil {
			return false, err
		}
	}
}

// copyXattrs makes q's extended attributes p's.
func copyXattrs(p, q string) error {
	want, err := xattrs(p)
	if err != nil {
		return err
	}
	have, err := xattrs(q)
	if err != nil {
		return err
	}
	for name := range have {
		if _, ok := want[name]; !ok {
			if err := unix.Lremovexattr(q, name); err != nil {
				return fmt.Errorf("remove xattr %s of %s: %w", name, q, err)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		if v, ok := have[name]; ok && bytes.Equal(v, want[name]) {
			continue
		}
		if err := unix.Lsetxattr(q, name, want[name], 0); err != nil {
			return fmt.Errorf("set xattr %s of %s: %w", name, q, err)
		}
	}
	return nil
}

func xattrs(p string) (map[string][]byte, error) {
	buf := make([]byte, 4096)
	n, err := unix.Llistxattr(p, buf)
	if errors.Is(err, unix.ERANGE) {
		if n, err = unix.Llistxattr(p, nil); err == nil {
			buf = make([]byte, n)
			n, err = unix.Llistxattr(p, buf)
		}
	}
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", p, err)
	}
	m := map[string][]byte{}
	for _, name := range bytes.Split(buf[:n], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		sz, err := unix.Lgetxattr(p, string(name), nil)
		if err != nil {
			return nil, fmt.Errorf("xattr %s of %s: %w", name, p, err)
		}
		v := make([]byte, sz)
		if sz, err = unix.Lgetxattr(p, string(name), v); err != nil {
			return nil, fmt.Errorf("xattr %s of %s: %w", name, p, err)
		}
		m[string(name)] = v[:sz]
	}
	return m, nil
}

func setTimes(p string, st *unix.Stat_t) error {
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW)
}

// removeExtra removes what dst has and src has not.
func (s *syncer) removeExtra() error {
	return filepath.WalkDir(s.dst, func(q string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r := rel(s.dst, q)
		if s.skip != nil && s.skip(r) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if _, err := os.Lstat(filepath.Join(s.src, r)); errors.Is(err, fs.ErrNotExist) {
			s.stats.Removed++
			if err := os.RemoveAll(q); err != nil {
				return err
			}
			if d.IsDir() {
				return filepath.SkipDir
			}
		} else if err != nil {
			return err
		}
		return nil
	})
}
