package ext

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"time"

	"vmb.dev/vmb/internal/fsmap"
)

// Paths lists every path of the filesystem from the root ("/") with its inode
// number, its identity for vmb diff: a path whose inode is the same in two
// snapshots, and named by no range that differs, has the same content.
func (f *FS) Paths() (map[string]uint64, error) {
	if f.tree == nil {
		t, err := f.Tree()
		if err != nil {
			return nil, err
		}
		f.tree = t
	}
	out := make(map[string]uint64, len(f.tree))
	for p, ino := range f.tree {
		out[p] = uint64(ino)
	}
	return out, nil
}

// inodeOf is the inode of path p, as Paths lists it.
func (f *FS) inodeOf(p string) (*Inode, error) {
	if _, err := f.Paths(); err != nil {
		return nil, err
	}
	ino, ok := f.tree[p]
	if !ok {
		return nil, fmt.Errorf("ext: %s: no such path", p)
	}
	return f.Inode(ino)
}

// Stat reads the attributes of path p: type, size, symlink target, device
// numbers, mode, owner, link count, the four times (to the nanosecond, UTC) and
// xattrs.
func (f *FS) Stat(p string) (*fsmap.File, error) {
	in, err := f.inodeOf(p)
	if err != nil {
		return nil, err
	}
	xs, err := f.Xattrs(in)
	if err != nil {
		return nil, err
	}
	st := &fsmap.File{
		Type:   in.Type(),
		Size:   in.Size,
		Mode:   fmt.Sprintf("%04o", in.Mode&0o7777),
		Owner:  fmt.Sprintf("%d:%d", in.UID, in.GID),
		Links:  strconv.Itoa(int(in.Links)),
		Mtime:  stamp(in.Mtime),
		Ctime:  stamp(in.Ctime),
		Atime:  stamp(in.Atime),
		Crtime: stamp(in.Crtime),
	}
	for _, x := range xs {
		if st.Xattrs == nil {
			st.Xattrs = map[string]string{}
		}
		st.Xattrs[x.Name] = string(x.Value)
	}
	switch st.Type {
	case "symlink":
		var b bytes.Buffer
		if err := f.Content(in, &b); err != nil {
			return nil, err
		}
		st.Target = b.String()
	case "char device", "block device":
		major, minor := in.Device()
		st.Device = fmt.Sprintf("%d:%d", major, minor)
	}
	return st, nil
}

// ReadFile writes the content of the regular file at p to w.
func (f *FS) ReadFile(p string, w io.Writer) error {
	in, err := f.inodeOf(p)
	if err != nil {
		return err
	}
	if in.Type() != "file" {
		return fmt.Errorf("ext: %s: a %s, not a file", p, in.Type())
	}
	return f.Content(in, w)
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(time.RFC3339Nano)
}
