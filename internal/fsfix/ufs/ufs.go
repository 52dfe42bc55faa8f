// Package ufs reads UFS filesystems and makes the ones makefs (NetBSD's) builds
// reproducible.
//
// Linux cannot write UFS, so the build agent works on a copy of a UFS tree in
// memory: Read recreates the tree, Build makes the filesystem again from it with
// makefs, and Fix sets what makefs leaves to chance.
//
// vmb reads UFS itself: Linux's driver cannot find the UFS2 superblock makefs
// writes, and a tree read out whole is what makefs needs to build the filesystem
// again. This is a reader of little-endian UFS1 and UFS2 as makefs,
// FreeBSD and NetBSD write them: the superblock, inodes, direct and indirect
// blocks, directories, symlinks and device nodes. It trusts nothing it reads:
// every address is checked against the filesystem's size.
package ufs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const (
	ufs1Magic  = 0x011954
	ufs2Magic  = 0x19540119
	ufsRootIno = 2
)

var le = binary.LittleEndian

// ufsSuper is what the reader needs of a UFS superblock (struct fs of
// sys/ufs/ffs/fs.h), and where it was found.
type ufsSuper struct {
	loc                     int64 // byte offset of this superblock
	version                 int
	sblkno, iblkno          int64
	oldCgoffset, oldCgmask  int64
	ncg, bsize, fsize, frag int64
	nindir, inopb, ipg, fpg int64
	size                    int64 // of the device, in bytes
	label                   string
	id                      uint32
}

// Offsets in struct fs.
const (
	sbSblkno    = 8
	sbIblkno    = 16
	sbCgoffset  = 24
	sbCgmask    = 28
	sbNcg       = 44
	sbBsize     = 48
	sbFsize     = 52
	sbFrag      = 56
	sbNindir    = 116
	sbInopb     = 120
	sbID        = 144 // fs_id[2]
	sbIpg       = 184
	sbFpg       = 188
	sbVolname   = 680 // 32 bytes
	sbIncore    = 728 // fs_ocsp .. fs_active: pointers of the writer's memory
	sbIncoreEnd = 856
	sbSblockloc = 1000
	sbMagic     = 1372
	sbSize      = 1376
)

func readUFSSuper(f *os.File) (*ufsSuper, error) {
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, err
	}
	b := make([]byte, sbSize)
	for _, loc := range []int64{65536, 8192} {
		if _, err := f.ReadAt(b, loc); err != nil {
			continue
		}
		s := &ufsSuper{loc: loc, size: size}
		switch le.Uint32(b[sbMagic:]) {
		case ufs1Magic:
			if loc != 8192 {
				continue
			}
			s.version = 1
		case ufs2Magic:
			if int64(le.Uint64(b[sbSblockloc:])) != loc {
				continue
			}
			s.version = 2
		default:
			continue
		}
		i32 := func(off int) int64 { return int64(int32(le.Uint32(b[off:]))) }
		s.sblkno, s.iblkno = i32(sbSblkno), i32(sbIblkno)
		s.oldCgoffset, s.oldCgmask = i32(sbCgoffset), i32(sbCgmask)
		s.ncg, s.bsize, s.fsize, s.frag = i32(sbNcg), i32(sbBsize), i32(sbFsize), i32(sbFrag)
		s.nindir, s.inopb, s.ipg, s.fpg = i32(sbNindir), i32(sbInopb), i32(sbIpg), i32(sbFpg)
		s.label = string(bytes.TrimRight(b[sbVolname:sbVolname+32], "\x00"))
		s.id = le.Uint32(b[sbID+4:])
		if s.fsize < 512 || s.bsize < s.fsize || s.bsize > 1<<20 || s.frag != s.bsize/s.fsize ||
			s.ncg <= 0 || s.ipg <= 0 || s.fpg <= 0 || s.inopb <= 0 || s.nindir <= 0 {
			return nil, fmt.Errorf("ufs: superblock at %d: sizes out of range", loc)
		}
		return s, nil
	}
	return nil, errors.New("ufs: no UFS1 or UFS2 superblock (little-endian)")
}

// openUFS opens dev with flag and reads its superblock.
func openUFS(dev string, flag int) (*os.File, *ufsSuper, error) {
	f, err := os.OpenFile(dev, flag, 0)
	if err != nil {
		return nil, nil, err
	}
	s, err := readUFSSuper(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, s, nil
}

// cgstart is the first fragment of cylinder group c.
func (s *ufsSuper) cgstart(c int64) int64 {
	base := s.fpg * c
	if s.version == 1 {
		base += s.oldCgoffset * (c &^ s.oldCgmask)
	}
	return base
}

func (s *ufsSuper) inodeSize() int64 {
	if s.version == 1 {
		return 128
	}
	return 256
}

// ufsInode is a decoded inode.
type ufsInode struct {
	mode, nlink  uint16
	uid, gid     uint32
	size, blocks uint64
	atime, mtime unix.Timespec
	db           [12]int64
	ib           [3]int64
	raw          []byte // the block pointer area, for a short symlink
}

type ufsReader struct {
	f     *os.File
	s     *ufsSuper
	links map[uint32]string // inode -> first path, for hard links
	dirs  map[uint32]bool   // directories read: one reached again is a loop
	buf   []byte
}

func (r *ufsReader) inode(ino uint32) (*ufsInode, error) {
	s := r.s
	if int64(ino) >= s.ipg*s.ncg || ino < ufsRootIno {
		return nil, fmt.Errorf("ufs: inode %d out of range", ino)
	}
	c := int64(ino) / s.ipg
	in := int64(ino) % s.ipg
	frag := s.cgstart(c) + s.iblkno + in/s.inopb*s.frag
	off := frag*s.fsize + in%s.inopb*s.inodeSize()
	b := make([]byte, s.inodeSize())
	if off+int64(len(b)) > s.size {
		return nil, fmt.Errorf("ufs: inode %d beyond the filesystem", ino)
	}
	if _, err := r.f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("ufs: inode %d: %w", ino, err)
	}
	i := &ufsInode{mode: le.Uint16(b[0:]), nlink: le.Uint16(b[2:])}
	if s.version == 1 {
		i.size = le.Uint64(b[8:])
		i.atime = unix.Timespec{Sec: int64(int32(le.Uint32(b[16:]))), Nsec: int64(int32(le.Uint32(b[20:])))}
		i.mtime = unix.Timespec{Sec: int64(int32(le.Uint32(b[24:]))), Nsec: int64(int32(le.Uint32(b[28:])))}
		for k := range i.db {
			i.db[k] = int64(int32(le.Uint32(b[40+4*k:])))
		}
		for k := range i.ib {
			i.ib[k] = int64(int32(le.Uint32(b[88+4*k:])))
		}
		i.raw = b[40:100]
		i.blocks = uint64(le.Uint32(b[104:]))
		i.uid, i.gid = le.Uint32(b[112:]), le.Uint32(b[116:])
	} else {
		i.uid, i.gid = le.Uint32(b[4:]), le.Uint32(b[8:])
		i.size, i.blocks = le.Uint64(b[16:]), le.Uint64(b[24:])
		i.atime = unix.Timespec{Sec: int64(le.Uint64(b[32:])), Nsec: int64(int32(le.Uint32(b[68:])))}
		i.mtime = unix.Timespec{Sec: int64(le.Uint64(b[40:])), Nsec: int64(int32(le.Uint32(b[64:])))}
		for k := range i.db {
			i.db[k] = int64(le.Uint64(b[112+8*k:]))
		}
		for k := range i.ib {
			i.ib[k] = int64(le.Uint64(b[208+8*k:]))
		}
		i.raw = b[112:232]
	}
	return i, nil
}

// read reads n bytes at fragment address frag (0: a hole, zeros) into p.
func (r *ufsReader) read(p []byte, frag int64) error {
	if frag == 0 {
		clear(p)
		return nil
	}
	off := frag * r.s.fsize
	if frag < 0 || off+int64(len(p)) > r.s.size {
		return fmt.Errorf("ufs: block address %d beyond the filesystem", frag)
	}
	_, err := r.f.ReadAt(p, off)
	return err
}

// blockAddr maps logical block lbn of inode i to its fragment address (0: a hole).
func (r *ufsReader) blockAddr(i *ufsInode, lbn int64) (int64, error) {
	if lbn < 12 {
		return i.db[lbn], nil
	}
	lbn -= 12
	n := r.s.nindir
	for level, span := 0, n; level < 3; level, span = level+1, span*n {
		if lbn >= span {
			lbn -= span
			continue
		}
		addr := i.ib[level]
		for per := span / n; addr != 0; per /= n {
			var err error
			if addr, err = r.pointer(addr, lbn/per); err != nil {
				return 0, err
			}
			lbn %= per
			if per == 1 {
				break
			}
		}
		return addr, nil
	}
	return 0, fmt.Errorf("ufs: file too large")
}

// pointer reads entry idx of the indirect block at fragment address addr.
func (r *ufsReader) pointer(addr, idx int64) (int64, error) {
	w := int64(4)
	if r.s.version == 2 {
		w = 8
	}
	var b [8]byte
	off := addr*r.s.fsize + idx*w
	if addr <= 0 || off+w > r.s.size {
		return -1, fmt.Errorf("ufs: indirect block address %d beyond the filesystem", addr)
	}
	if _, err := r.f.ReadAt(b[:w], off); err != nil {
		return -1, err
	}
	if w == 4 {
		return int64(int32(le.Uint32(b[:]))), nil
	}
	return int64(le.Uint64(b[:])), nil
}

// content calls fn with each piece of inode i's data, in order.
func (r *ufsReader) content(i *ufsInode, fn func([]byte) error) error {
	if int64(i.size) > r.s.size*64 {
		return fmt.Errorf("ufs: file size %d beyond reason", i.size)
	}
	bs := r.s.bsize
	if len(r.buf) < int(bs) {
		r.buf = make([]byte, bs)
	}
	for lbn, left := int64(0), int64(i.size); left > 0; lbn++ {
		n := min(bs, left)
		addr, err := r.blockAddr(i, lbn)
		if err != nil {
			return err
		}
		if err := r.read(r.buf[:n], addr); err != nil {
			return err
		}
		if err := fn(r.buf[:n]); err != nil {
			return err
		}
		left -= n
	}
	return nil
}

// Read recreates the tree of the UFS filesystem on dev under dst, an existing
// directory: contents, modes, owners, times, symlinks, device nodes, hard links.
func Read(dev, dst string) error {
	f, s, err := openUFS(dev, os.O_RDONLY)
	if err != nil {
		return err
	}
	defer f.Close()
	r := &ufsReader{f: f, s: s, links: map[uint32]string{}, dirs: map[uint32]bool{ufsRootIno: true}}
	root, err := r.inode(ufsRootIno)
	if err != nil {
		return err
	}
	return r.dir(root, dst, 0)
}

// dir recreates directory i's entries under path, then sets path's own metadata.
func (r *ufsReader) dir(i *ufsInode, path string, depth int) error {
	if depth > 256 {
		return fmt.Errorf("ufs: directories nested too deep at %s", path)
	}
	var data bytes.Buffer
	if err := r.content(i, func(b []byte) error { data.Write(b); return nil }); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	d := data.Bytes()
	for off := 0; off+8 <= len(d); {
		ino := le.Uint32(d[off:])
		reclen := int(le.Uint16(d[off+4:]))
		namlen := int(d[off+7])
		if reclen < 8 || off+reclen > len(d) || 8+namlen > reclen {
			return fmt.Errorf("ufs: %s: bad directory entry at %d", path, off)
		}
		name := string(d[off+8 : off+8+namlen])
		off += reclen
		if ino == 0 || name == "." || name == ".." {
			continue
		}
		if name == "" || bytes.ContainsAny([]byte(name), "/\x00") {
			return fmt.Errorf("ufs: %s: bad name %q", path, name)
		}
		if err := r.entry(ino, filepath.Join(path, name), depth); err != nil {
			return err
		}
	}
	return r.meta(i, path)
}

func (r *ufsReader) entry(ino uint32, p string, depth int) error {
	i, err := r.inode(ino)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	mode := uint32(i.mode)
	if mode&unix.S_IFMT != unix.S_IFDIR && i.nlink > 1 {
		if first, ok := r.links[ino]; ok {
			return os.Link(first, p)
		}
		r.links[ino] = p
	}
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if r.dirs[ino] {
			return fmt.Errorf("ufs: %s: directory inode %d reached twice", p, ino)
		}
		r.dirs[ino] = true
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		return r.dir(i, p, depth+1)
	case unix.S_IFREG:
		out, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		err = r.content(i, func(b []byte) error { _, err := out.Write(b); return err })
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	case unix.S_IFLNK:
		var target []byte
		if i.blocks == 0 && i.size <= uint64(len(i.raw)) {
			target = i.raw[:i.size]
		} else if err := r.content(i, func(b []byte) error { target = append(target, b...); return nil }); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		if err := os.Symlink(string(target), p); err != nil {
			return err
		}
	case unix.S_IFCHR, unix.S_IFBLK, unix.S_IFIFO, unix.S_IFSOCK:
		rdev := uint64(uint32(i.db[0]))
		if r.s.version == 2 {
			rdev = uint64(i.db[0])
		}
		if err := unix.Mknod(p, mode&unix.S_IFMT|0o600, int(rdev)); err != nil {
			return fmt.Errorf("mknod %s: %w", p, err)
		}
	default:
		return fmt.Errorf("ufs: %s: inode %d has mode %o", p, ino, mode)
	}
	return r.meta(i, p)
}

// meta sets owner, mode and times.
func (r *ufsReader) meta(i *ufsInode, p string) error {
	if err := os.Lchown(p, int(i.uid), int(i.gid)); err != nil {
		return err
	}
	if uint32(i.mode)&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(p, uint32(i.mode)&0o7777); err != nil {
			return err
		}
	}
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{i.atime, i.mtime}, unix.AT_SYMLINK_NOFOLLOW)
}

// ReadParams returns what a rebuild (Build) of the UFS filesystem on dev keeps.
func ReadParams(dev string) (Params, error) {
	f, s, err := openUFS(dev, os.O_RDONLY)
	if err != nil {
		return Params{}, err
	}
	f.Close()
	return Params{Version: s.version, BSize: int(s.bsize), FSize: int(s.fsize), Label: s.label, ID: s.id}, nil
}

// Fix sets, in every copy of the superblock of the UFS filesystem makefs just
// wrote on dev, the label and the second half of the ID (makefs writes the same
// for every filesystem: blkid's UUID), and zeroes the fields makefs fills from its
// own memory (in-core pointers, different at every run).
func Fix(dev, label string, id uint32) error {
	if len(label) > 31 {
		return fmt.Errorf("ufs: label %q is longer than 31 bytes", label)
	}
	f, s, err := openUFS(dev, os.O_RDWR)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, sbSize)
	for c := int64(-1); c < s.ncg; c++ {
		loc := s.loc
		if c >= 0 {
			loc = (s.cgstart(c) + s.sblkno) * s.fsize
		}
		if _, err := f.ReadAt(b, loc); err != nil {
			return fmt.Errorf("ufs: superblock copy at %d: %w", loc, err)
		}
		if m := le.Uint32(b[sbMagic:]); m != ufs1Magic && m != ufs2Magic {
			return fmt.Errorf("ufs: no superblock copy at %d", loc)
		}
		clear(b[sbIncore:sbIncoreEnd])
		clear(b[sbVolname : sbVolname+32])
		copy(b[sbVolname:], label)
		le.PutUint32(b[sbID+4:], id)
		if _, err := f.WriteAt(b, loc); err != nil {
			return err
		}
	}
	return f.Sync()
}
