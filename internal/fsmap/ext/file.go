package ext

import (
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"time"
)

// Inode is an inode's attributes, as vmb diff compares them.
type Inode struct {
	Ino                 uint32
	Mode                uint16 // file type and permission bits, as st_mode
	UID, GID            uint32
	Size                int64
	Links               uint16
	Atime, Ctime, Mtime time.Time
	Crtime              time.Time // zero when the inode has no room for it
	Flags               uint32

	raw []byte
}

// Inode flags this file reads.
const (
	flagExtents = 0x80000
	flagInline  = 0x10000000
)

// Inode reads inode ino.
func (f *FS) Inode(ino uint32) (*Inode, error) {
	if ino == 0 || int64(ino) > f.inodesPerGroup*int64(len(f.groups)) {
		return nil, fmt.Errorf("ext: inode %d out of range", ino)
	}
	g, k := int64(ino-1)/f.inodesPerGroup, int64(ino-1)%f.inodesPerGroup
	tab := f.groups[g].inodeTable
	if tab <= 0 || tab+f.itableBlocks() > f.blocks {
		return nil, fmt.Errorf("ext: inode %d: inode table out of range", ino)
	}
	raw := make([]byte, f.inodeSize)
	if _, err := f.r.ReadAt(raw, tab*f.blockSize+k*f.inodeSize); err != nil {
		return nil, fmt.Errorf("ext: read inode %d: %w", ino, err)
	}
	in := &Inode{
		Ino:   ino,
		Mode:  le.Uint16(raw[0:]),
		UID:   uint32(le.Uint16(raw[2:])) | uint32(le.Uint16(raw[0x78:]))<<16,
		GID:   uint32(le.Uint16(raw[0x18:])) | uint32(le.Uint16(raw[0x7a:]))<<16,
		Size:  int64(le.Uint32(raw[4:])) | int64(le.Uint32(raw[0x6c:]))<<32,
		Links: le.Uint16(raw[0x1a:]),
		Flags: le.Uint32(raw[0x20:]),
		raw:   raw,
	}
	extra := int64(0)
	if f.inodeSize > 128 {
		extra = int64(le.Uint16(raw[0x80:]))
	}
	has := func(at int64) bool { return 128+extra >= at+4 && at+4 <= f.inodeSize }
	stamp := func(at, extraAt int64) time.Time {
		sec, nsec := int64(int32(le.Uint32(raw[at:]))), int64(0)
		if has(extraAt) {
			x := le.Uint32(raw[extraAt:])
			sec += int64(x&3) << 32
			nsec = int64(x >> 2)
		}
		return time.Unix(sec, nsec%1e9).UTC()
	}
	in.Atime, in.Ctime, in.Mtime = stamp(0x8, 0x8c), stamp(0xc, 0x84), stamp(0x10, 0x88)
	if has(0x90) {
		in.Crtime = stamp(0x90, 0x94)
	}
	return in, nil
}

// Type names the inode's file type: file, directory, symlink, …
func (in *Inode) Type() string {
	switch in.Mode & 0xf000 {
	case 0x8000:
		return "file"
	case 0x4000:
		return "directory"
	case 0xa000:
		return "symlink"
	case 0x2000:
		return "char device"
	case 0x6000:
		return "block device"
	case 0x1000:
		return "fifo"
	case 0xc000:
		return "socket"
	}
	return fmt.Sprintf("type %#o", in.Mode>>12)
}

// Device is a device inode's major and minor numbers.
func (in *Inode) Device() (major, minor uint32) {
	if d := le.Uint32(in.raw[0x28:]); d != 0 { // old encoding
		return d >> 8 & 0xff, d & 0xff
	}
	d := le.Uint32(in.raw[0x2c:])
	return d >> 8 & 0xfff, d&0xff | d>>12&0xfff00
}

// ErrTooBig is returned by Content for a file larger than its limit.
var ErrTooBig = errors.New("ext: file too big")

// Content writes the inode's bytes to w: a regular file's content, a directory's
// blocks or a symlink's target; holes and unwritten extents read as zeros.
func (f *FS) Content(in *Inode, w io.Writer) error {
	if in.Size < 0 || in.Size > f.size*64 { // sparse files may exceed the disk, not by that much
		return fmt.Errorf("ext: inode %d: size %d out of range", in.Ino, in.Size)
	}
	iblock := in.raw[0x28:0x64]
	switch {
	case in.Flags&flagInline != 0:
		data := append([]byte(nil), iblock...)
		if xs, err := f.Xattrs(in); err == nil {
			for _, x := range xs {
				if x.Name == "system.data" {
					data = append(data, x.Value...)
				}
			}
		}
		_, err := w.Write(data[:min(int64(len(data)), in.Size)])
		return err
	case in.Mode&0xf000 == 0xa000 && in.Flags&flagExtents == 0 && in.Size < 60:
		_, err := w.Write(iblock[:in.Size])
		return err
	}
	runs, err := f.blockRuns(in)
	if err != nil {
		return err
	}
	bs := f.blockSize
	buf := make([]byte, bs)
	zero := make([]byte, bs)
	left := in.Size
	for lb := int64(0); left > 0; lb++ {
		n := min(left, bs)
		i := sort.Search(len(runs), func(i int) bool { return runs[i].logical+runs[i].n > lb })
		if i < len(runs) && runs[i].logical <= lb && !runs[i].unwritten {
			b := runs[i].physical + lb - runs[i].logical
			if b <= 0 || b >= f.blocks {
				return fmt.Errorf("ext: inode %d: block %d out of range", in.Ino, b)
			}
			if _, err := f.r.ReadAt(buf[:n], b*bs); err != nil && err != io.EOF {
				return fmt.Errorf("ext: inode %d: read block %d: %w", in.Ino, b, err)
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return err
			}
		} else if _, err := w.Write(zero[:n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// run maps n logical blocks of a file to physical ones.
type run struct {
	logical, physical, n int64
	unwritten            bool
}

// blockRuns maps the inode's logical blocks, sorted; it reads at most as many
// tree blocks as the file can have.
func (f *FS) blockRuns(in *Inode) ([]run, error) {
	bs := f.blockSize
	nblocks := (in.Size + bs - 1) / bs
	budget := nblocks + 64 // tree blocks it may read
	var runs []run
	iblock := in.raw[0x28:0x64]
	if in.Flags&flagExtents != 0 {
		var node func(b []byte, depth int) error
		node = func(b []byte, depth int) error {
			if len(b) < 12 || le.Uint16(b[0:]) != 0xf30a || depth > 5 {
				return fmt.Errorf("ext: inode %d: bad extent tree node", in.Ino)
			}
			entries, d := int(le.Uint16(b[2:])), le.Uint16(b[6:])
			for i := range entries {
				if 12+12*(i+1) > len(b) {
					return fmt.Errorf("ext: inode %d: extent node overflows", in.Ino)
				}
				e := b[12+12*i:]
				if d == 0 {
					r := run{logical: int64(le.Uint32(e[0:])), n: int64(le.Uint16(e[4:])),
						physical: int64(le.Uint32(e[8:])) | int64(le.Uint16(e[6:]))<<32}
					if r.n > 32768 {
						r.n, r.unwritten = r.n-32768, true
					}
					if len(runs) > int(nblocks)+1 {
						return fmt.Errorf("ext: inode %d: more extents than blocks", in.Ino)
					}
					runs = append(runs, r)
					continue
				}
				child := int64(le.Uint32(e[4:])) | int64(le.Uint16(e[8:]))<<32
				if budget--; budget < 0 || child <= 0 || child >= f.blocks {
					return fmt.Errorf("ext: inode %d: extent tree block %d out of range", in.Ino, child)
				}
				buf := make([]byte, bs)
				if _, err := f.r.ReadAt(buf, child*bs); err != nil {
					return fmt.Errorf("ext: inode %d: read extent tree block: %w", in.Ino, err)
				}
				if err := node(buf, depth+1); err != nil {
					return err
				}
			}
			return nil
		}
		if err := node(iblock, 0); err != nil {
			return nil, err
		}
	} else {
		per := bs / 4
		var ind func(b int64, level int, logical int64) error
		ind = func(b int64, level int, logical int64) error {
			if b == 0 || logical >= nblocks {
				return nil
			}
			if budget--; budget < 0 || b < 0 || b >= f.blocks {
				return fmt.Errorf("ext: inode %d: indirect block %d out of range", in.Ino, b)
			}
			buf := make([]byte, bs)
			if _, err := f.r.ReadAt(buf, b*bs); err != nil {
				return fmt.Errorf("ext: inode %d: read indirect block: %w", in.Ino, err)
			}
			span := int64(1)
			for range level - 1 {
				span *= per
			}
			for i := range per {
				p := int64(le.Uint32(buf[4*i:]))
				if level == 1 {
					if p != 0 {
						runs = append(runs, run{logical: logical + i, physical: p, n: 1})
					}
				} else if err := ind(p, level-1, logical+i*span); err != nil {
					return err
				}
			}
			return nil
		}
		for i := range int64(12) {
			if p := int64(le.Uint32(iblock[4*i:])); p != 0 {
				runs = append(runs, run{logical: i, physical: p, n: 1})
			}
		}
		start, span := int64(12), per
		for level := 1; level <= 3; level++ {
			if err := ind(int64(le.Uint32(iblock[4*(11+level):])), level, start); err != nil {
				return nil, err
			}
			start += span
			span *= per
		}
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].logical < runs[j].logical })
	return runs, nil
}

// Xattr is an extended attribute: its full name ("user.x", "security.selinux")
// and value.
type Xattr struct {
	Name  string
	Value []byte
}

var xattrPrefix = map[byte]string{1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
	4: "trusted.", 6: "security.", 7: "system.", 8: "system.richacl"}

// Xattrs reads the inode's extended attributes, those in the inode and those in
// its xattr block, sorted by name.
func (f *FS) Xattrs(in *Inode) ([]Xattr, error) {
	var out []Xattr
	if f.inodeSize > 128 {
		extra := int64(le.Uint16(in.raw[0x80:]))
		if at := 128 + extra; at+4 <= f.inodeSize && le.Uint32(in.raw[at:]) == 0xEA020000 {
			area := in.raw[at+4:]
			xs, err := xattrEntries(area, area)
			if err != nil {
				return nil, fmt.Errorf("ext: inode %d: in-inode xattrs: %w", in.Ino, err)
			}
			out = append(out, xs...)
		}
	}
	if b := int64(le.Uint32(in.raw[0x68:])) | int64(le.Uint16(in.raw[0x76:]))<<32; b != 0 {
		if b < 0 || b >= f.blocks {
			return nil, fmt.Errorf("ext: inode %d: xattr block %d out of range", in.Ino, b)
		}
		buf := make([]byte, f.blockSize)
		if _, err := f.r.ReadAt(buf, b*f.blockSize); err != nil {
			return nil, fmt.Errorf("ext: inode %d: read xattr block: %w", in.Ino, err)
		}
		if le.Uint32(buf) != 0xEA020000 {
			return nil, fmt.Errorf("ext: inode %d: xattr block %d has no magic", in.Ino, b)
		}
		xs, err := xattrEntries(buf[32:], buf)
		if err != nil {
			return nil, fmt.Errorf("ext: inode %d: xattr block: %w", in.Ino, err)
		}
		out = append(out, xs...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// xattrEntries parses entries until a zero word; values lie at offsets within base.
func xattrEntries(entries, base []byte) ([]Xattr, error) {
	var out []Xattr
	for at := 0; at+4 <= len(entries) && le.Uint32(entries[at:]) != 0; {
		if at+16 > len(entries) {
			return nil, errors.New("entry overflows")
		}
		e := entries[at:]
		nameLen, index := int(e[0]), e[1]
		voff, vinum, vsize := int(le.Uint16(e[2:])), le.Uint32(e[4:]), int(le.Uint32(e[8:]))
		if 16+nameLen > len(e) {
			return nil, errors.New("name overflows")
		}
		x := Xattr{Name: xattrPrefix[index] + string(e[16:16+nameLen])}
		if _, ok := xattrPrefix[index]; !ok {
			x.Name = fmt.Sprintf("index%d.%s", index, e[16:16+nameLen])
		}
		switch {
		case vinum != 0:
			x.Value = fmt.Appendf(nil, "<value in inode %d, %d bytes>", vinum, vsize)
		case voff+vsize > len(base) || vsize < 0:
			return nil, fmt.Errorf("%s: value overflows", x.Name)
		default:
			x.Value = append([]byte(nil), base[voff:voff+vsize]...)
		}
		out = append(out, x)
		at += (16 + nameLen + 3) &^ 3
	}
	return out, nil
}

// Limits on Tree's work, against hostile or huge filesystems.
const (
	maxDirSize = 64 << 20
	maxEntries = 1 << 22
	maxDepth   = 256
)

// Tree lists every path of the filesystem from the root ("/") with its inode.
// A hard-linked inode appears under each of its paths.
func (f *FS) Tree() (map[string]uint32, error) {
	out := map[string]uint32{"/": 2}
	seen := map[uint32]bool{2: true}
	var walk func(ino uint32, p string, depth int) error
	walk = func(ino uint32, p string, depth int) error {
		if depth > maxDepth {
			return fmt.Errorf("ext: %s: directories nested too deep", p)
		}
		in, err := f.Inode(ino)
		if err != nil {
			return err
		}
		if in.Size > maxDirSize {
			return fmt.Errorf("ext: directory %s: %d bytes is too big", p, in.Size)
		}
		var data byteSink
		if err := f.Content(in, &data); err != nil {
			return fmt.Errorf("ext: directory %s: %w", p, err)
		}
		blocks := [][]byte{}
		if in.Flags&flagInline != 0 { // the parent's number, then entries
			if len(data) >= 4 {
				blocks = append(blocks, data[4:])
			}
		} else {
			for i := int64(0); i < int64(len(data)); i += f.blockSize {
				blocks = append(blocks, data[i:min(i+f.blockSize, int64(len(data)))])
			}
		}
		type sub struct {
			ino  uint32
			path string
		}
		var subdirs []sub
		for _, b := range blocks {
			for at := 0; at+8 <= len(b); {
				child := le.Uint32(b[at:])
				rec, nameLen := int(le.Uint16(b[at+4:])), int(b[at+6])
				if rec < 8 || at+rec > len(b) || 8+nameLen > rec {
					break
				}
				name := string(b[at+8 : at+8+nameLen])
				at += rec
				if child == 0 || name == "." || name == ".." || name == "" {
					continue
				}
				if len(out) >= maxEntries {
					return errors.New("ext: too many directory entries")
				}
				cp := path.Join(p, name)
				out[cp] = child
				isDir := b[at-rec+7] == 2 // file type: directory
				if b[at-rec+7] == 0 {     // no file type in entries: ask the inode
					ci, err := f.Inode(child)
					isDir = err == nil && ci.Mode&0xf000 == 0x4000
				}
				if isDir && !seen[child] {
					seen[child] = true
					subdirs = append(subdirs, sub{child, cp})
				}
			}
		}
		for _, d := range subdirs {
			if err := walk(d.ino, d.path, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	return out, walk(2, "/", 0)
}

// byteSink collects what is written to it.
type byteSink []byte

func (s *byteSink) Write(p []byte) (int, error) { *s = append(*s, p...); return len(p), nil }
