package main

// vmb reads UFS (the BSDs' Fast File System) itself. Linux's ufs driver is
// read-only in Debian's kernel, and it looks for a UFS2 superblock only at byte
// 65536, while NetBSD's makefs, which vmb writes UFS with, puts it at byte 8192
// (fs_sblockloc 8192). So a job that changes a UFS filesystem has readUFS recreate
// its whole tree in memory, changes that, and builds the filesystem again with
// makefs; fixUFS then makes makefs's output reproducible and labelled.
//
// The layouts are those of sys/ufs/ffs/fs.h and sys/ufs/ufs/dinode.h, little-endian
// only. Every offset below was checked against images written by makefs 20190105.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	ufs1Magic = 0x011954
	ufs2Magic = 0x19540119

	ufsRootIno  = 2
	ufsNDirect  = 12  // direct block pointers in a dinode
	ufsDirBlk   = 512 // DIRBLKSIZ: directory entries never cross one
	ufsMaxDepth = 256 // directory nesting readUFS accepts
	ufsSBRead   = 1376
	ufsInCore   = 728 // [728, 856): fs_ocsp[], fs_contigdirs, fs_csp, fs_maxcluster, fs_active
	ufsInCoreTo = 856

	// Offsets in struct fs.
	sbSblkno, sbIblkno, sbCgoffset, sbCgmask = 8, 16, 24, 28
	sbNcg, sbBsize, sbFsize, sbFrag          = 44, 48, 52, 56
	sbNindir, sbInopb, sbID0, sbID1          = 116, 120, 144, 148
	sbIpg, sbFpg, sbVolname, sbVolnameLen    = 184, 188, 680, 32
	sbSblockloc, sbFlags, sbMaxSymlink       = 1000, 1312, 1320
	sbMagic                                  = 1372

	fsMetaCkHash = 0x200 // FreeBSD's FS_METACKHASH (NetBSD's FS_DOQUOTA2): makefs sets neither
)

// ufsSuper is what readUFS needs from a superblock.
type ufsSuper struct {
	version                    int
	loc                        int64 // byte offset of the primary superblock
	sblkno, iblkno             int64 // in fragments from the start of a cylinder group
	cgoffset, cgmask           int64 // UFS1's cylinder group stagger
	ncg, ipg, fpg, inopb       int64
	nindir, bsize, fsize, frag int64
	maxSymlink                 int64 // symlink targets shorter than this are in the inode
	label                      string
	id                         uint32 // fs_id[1]
}

// readSuper finds and checks the superblock of the filesystem f holds.
func readSuper(f io.ReaderAt) (*ufsSuper, error) {
	b := make([]byte, ufsSBRead)
	// FreeBSD's newfs puts a UFS2 superblock at 65536, makefs at 8192.
	for _, c := range []struct {
		loc     int64
		version int
	}{{65536, 2}, {8192, 2}, {8192, 1}} {
		if _, err := f.ReadAt(b, c.loc); err != nil {
			continue
		}
		le := binary.LittleEndian
		magic, want := le.Uint32(b[sbMagic:]), uint32(ufs1Magic)
		if c.version == 2 {
			want = ufs2Magic
		}
		if magic == bswap32(want) {
			return nil, fmt.Errorf("ufs: big-endian UFS%d is not supported", c.version)
		}
		if magic != want || c.version == 2 && int64(le.Uint64(b[sbSblockloc:])) != c.loc {
			continue
		}
		i := func(off int) int64 { return int64(int32(le.Uint32(b[off:]))) }
		s := &ufsSuper{version: c.version, loc: c.loc,
			sblkno: i(sbSblkno), iblkno: i(sbIblkno), cgoffset: i(sbCgoffset), cgmask: i(sbCgmask),
			ncg: i(sbNcg), ipg: i(sbIpg), fpg: i(sbFpg), inopb: i(sbInopb),
			nindir: i(sbNindir), bsize: i(sbBsize), fsize: i(sbFsize), frag: i(sbFrag),
			maxSymlink: i(sbMaxSymlink), id: le.Uint32(b[sbID1:]),
		}
		name := b[sbVolname : sbVolname+sbVolnameLen]
		if n := bytes.IndexByte(name, 0); n >= 0 {
			name = name[:n]
		}
		s.label = string(name)
		return s, s.check()
	}
	return nil, errors.New("ufs: no UFS1 or UFS2 superblock")
}

func bswap32(x uint32) uint32 {
	return x>>24 | x>>8&0xff00 | x<<8&0xff0000 | x<<24
}

// check rejects a superblock whose geometry readUFS cannot trust.
func (s *ufsSuper) check() error {
	pow2 := func(x int64) bool { return x > 0 && x&(x-1) == 0 }
	bad := func(what string) error { return fmt.Errorf("ufs: superblock: bad %s", what) }
	switch {
	case !pow2(s.bsize) || s.bsize < 4096 || s.bsize > 65536:
		return bad("block size")
	case !pow2(s.fsize) || s.fsize < 512 || s.fsize > s.bsize || s.bsize/s.fsize != s.frag || s.frag > 8:
		return bad("fragment size")
	case s.ncg <= 0 || s.ipg <= 0 || s.fpg <= 0 || s.ipg > 1<<31/s.ncg:
		return bad("cylinder group geometry")
	case s.inopb != s.bsize/s.dinodeSize() || s.nindir != s.bsize/s.ptrSize():
		return bad("inodes or pointers per block")
	case s.sblkno < 0 || s.iblkno <= s.sblkno || s.iblkno >= s.fpg:
		return bad("cylinder group layout")
	case s.maxSymlink < 0 || s.maxSymlink > 15*s.ptrSize():
		return bad("maximum inline symlink length")
	}
	return nil
}

func (s *ufsSuper) dinodeSize() int64 { return 32 * s.ptrSize() } // 128 or 256 bytes
func (s *ufsSuper) ptrSize() int64    { return 2 << s.version }   // 4 or 8 bytes

// cgstart is the first fragment of cylinder group cg.
func (s *ufsSuper) cgstart(cg int64) int64 {
	if s.version == 1 {
		return s.fpg*cg + s.cgoffset*(cg&^s.cgmask)
	}
	return s.fpg * cg
}

// ufsVersion is the UFS version (1 or 2) of the filesystem on dev.
func ufsVersion(dev string) (int, error) {
	s, err := ufsSuperOf(dev)
	if err != nil {
		return 0, err
	}
	return s.version, nil
}

// ufsSuperOf reads the superblock of the filesystem on dev: its version, block and
// fragment sizes, label and ID are what a rebuild keeps.
func ufsSuperOf(dev string) (*ufsSuper, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return readSuper(f)
}

// fixUFS rewrites every copy of the superblock of the filesystem makefs wrote on
// dev: it zeroes the in-core pointers makefs copies from its memory (they differ
// from run to run), and sets the label (fs_volname) and fs_id[1], which blkid shows
// in the UUID after fs_id[0] (makefs's timestamp) and which makefs sets to the same
// constant for every filesystem.
func fixUFS(dev, label string, id uint32) error {
	if len(label) >= sbVolnameLen {
		return fmt.Errorf("ufs: label %q is longer than %d bytes", label, sbVolnameLen-1)
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := readSuper(f)
	if err != nil {
		return err
	}
	locs := []int64{s.loc}
	for cg := range s.ncg {
		locs = append(locs, (s.cgstart(cg)+s.sblkno)*s.fsize)
	}
	b := make([]byte, ufsSBRead)
	for _, loc := range locs {
		if _, err := f.ReadAt(b, loc); err != nil {
			return fmt.Errorf("ufs: superblock copy at %d: %w", loc, err)
		}
		if !bytes.Equal(b[sbMagic:sbMagic+4], binary.LittleEndian.AppendUint32(nil, magicOf(s.version))) {
			return fmt.Errorf("ufs: no superblock copy at %d", loc)
		}
		if binary.LittleEndian.Uint32(b[sbFlags:])&fsMetaCkHash != 0 {
			return fmt.Errorf("ufs: superblock at %d has check hashes, which vmb does not compute", loc)
		}
		clear(b[ufsInCore:ufsInCoreTo])
		clear(b[sbVolname : sbVolname+sbVolnameLen])
		copy(b[sbVolname:], label)
		binary.LittleEndian.PutUint32(b[sbID1:], id)
		if _, err := f.WriteAt(b, loc); err != nil {
			return err
		}
	}
	return f.Sync()
}

func magicOf(version int) uint32 {
	if version == 1 {
		return ufs1Magic
	}
	return ufs2Magic
}

// ufsInode is a dinode, UFS1's or UFS2's.
type ufsInode struct {
	ino          uint32
	mode         uint32
	uid, gid     uint32
	size         int64
	atime, mtime unix.Timespec
	db           [ufsNDirect]int64
	ib           [3]int64
	ptrs         []byte // di_db and di_ib as stored: a short symlink's target
}

// ufsReader reads a filesystem's tree out into a directory.
type ufsReader struct {
	f     *os.File
	s     *ufsSuper
	size  int64             // of the device
	links map[uint32]string // a non-directory's first path
	dirs  map[uint32]bool   // directories entered
	buf   []byte
}

// readUFS recreates the tree of the UFS filesystem on dev under the directory dst:
// directories, files, symlinks, devices, fifos, sockets and hard links, with their
// modes, owners and access and modification times.
func readUFS(dev, dst string) error {
	f, err := os.Open(dev)
	if err != nil {
		return err
	}
	defer f.Close()
	s, err := readSuper(f)
	if err != nil {
		return err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	r := &ufsReader{f: f, s: s, size: size, links: map[uint32]string{},
		dirs: map[uint32]bool{}, buf: make([]byte, s.bsize)}
	root, err := r.inode(ufsRootIno)
	if err != nil {
		return err
	}
	if root.mode&unix.S_IFMT != unix.S_IFDIR {
		return errors.New("ufs: the root inode is not a directory")
	}
	return r.dir(root, dst, 0)
}

// inode reads inode ino.
func (r *ufsReader) inode(ino uint32) (*ufsInode, error) {
	s := r.s
	n := int64(ino)
	if n < ufsRootIno || n >= s.ncg*s.ipg {
		return nil, fmt.Errorf("ufs: inode %d out of range", ino)
	}
	frag := s.cgstart(n/s.ipg) + s.iblkno + n%s.ipg/s.inopb*s.frag
	b := make([]byte, s.dinodeSize())
	if err := r.read(ino, b, frag, n%s.inopb*s.dinodeSize()); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	in := &ufsInode{ino: ino, mode: uint32(le.Uint16(b))}
	ts := func(sec int64, nsec uint32) (unix.Timespec, error) {
		if nsec >= 1e9 {
			return unix.Timespec{}, fmt.Errorf("ufs: inode %d: bad nanoseconds %d", ino, nsec)
		}
		return unix.Timespec{Sec: sec, Nsec: int64(nsec)}, nil
	}
	var err1, err2 error
	if s.version == 1 {
		in.size = int64(le.Uint64(b[8:]))
		in.atime, err1 = ts(int64(int32(le.Uint32(b[16:]))), le.Uint32(b[20:]))
		in.mtime, err2 = ts(int64(int32(le.Uint32(b[24:]))), le.Uint32(b[28:]))
		in.ptrs = b[40:100]
		in.uid, in.gid = le.Uint32(b[112:]), le.Uint32(b[116:])
	} else {
		in.uid, in.gid = le.Uint32(b[4:]), le.Uint32(b[8:])
		in.size = int64(le.Uint64(b[16:]))
		in.atime, err1 = ts(int64(le.Uint64(b[32:])), le.Uint32(b[68:]))
		in.mtime, err2 = ts(int64(le.Uint64(b[40:])), le.Uint32(b[64:]))
		in.ptrs = b[112:232]
	}
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	for i := range ufsNDirect + 3 {
		p := r.ptr(in.ptrs, int64(i))
		if i < ufsNDirect {
			in.db[i] = p
		} else {
			in.ib[i-ufsNDirect] = p
		}
	}
	if in.size < 0 {
		return nil, fmt.Errorf("ufs: inode %d: bad size %d", ino, in.size)
	}
	return in, nil
}

// ptr is the i-th block pointer in b.
func (r *ufsReader) ptr(b []byte, i int64) int64 {
	if r.s.version == 1 {
		return int64(int32(binary.LittleEndian.Uint32(b[4*i:])))
	}
	return int64(binary.LittleEndian.Uint64(b[8*i:]))
}

// read reads len(b) bytes at byte off of fragment frag, for inode ino.
func (r *ufsReader) read(ino uint32, b []byte, frag, off int64) error {
	if frag <= 0 || frag > (r.size-off-int64(len(b)))/r.s.fsize {
		return fmt.Errorf("ufs: inode %d: block pointer %d outside the filesystem", ino, frag)
	}
	if _, err := r.f.ReadAt(b, frag*r.s.fsize+off); err != nil {
		return fmt.Errorf("ufs: inode %d: %w", ino, err)
	}
	return nil
}

// blocks calls fn with the logical number and fragment address of every allocated
// block of in, in order; holes are skipped.
func (r *ufsReader) blocks(in *ufsInode, fn func(lbn, frag int64) error) error {
	s := r.s
	n := (in.size + s.bsize - 1) / s.bsize
	if max := ufsNDirect + s.nindir*(1+s.nindir*(1+s.nindir)); n > max {
		return fmt.Errorf("ufs: inode %d: size %d beyond the maximum", in.ino, in.size)
	}
	for lbn := range min(n, ufsNDirect) {
		if p := in.db[lbn]; p != 0 {
			if err := fn(lbn, p); err != nil {
				return err
			}
		}
	}
	lbn, span := int64(ufsNDirect), int64(1)
	for level := range 3 {
		span *= s.nindir
		if lbn >= n {
			break
		}
		if p := in.ib[level]; p != 0 {
			if err := r.indirect(in, p, span/s.nindir, lbn, n, fn); err != nil {
				return err
			}
		}
		lbn += span
	}
	return nil
}

// indirect walks the indirect block at frag, whose pointers each cover span
// blocks, the first from lbn on; blocks n and beyond are past the end of the file.
func (r *ufsReader) indirect(in *ufsInode, frag, span, lbn, n int64, fn func(lbn, frag int64) error) error {
	b := make([]byte, r.s.bsize)
	if err := r.read(in.ino, b, frag, 0); err != nil {
		return err
	}
	for i := int64(0); i < r.s.nindir && lbn < n; i, lbn = i+1, lbn+span {
		p := r.ptr(b, i)
		var err error
		switch {
		case p == 0:
		case span == 1:
			err = fn(lbn, p)
		default:
			err = r.indirect(in, p, span/r.s.nindir, lbn, n, fn)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// data is the content of a directory or a symlink.
func (r *ufsReader) data(in *ufsInode) ([]byte, error) {
	if in.size > r.size {
		return nil, fmt.Errorf("ufs: inode %d: size %d beyond the filesystem", in.ino, in.size)
	}
	b := make([]byte, in.size)
	return b, r.blocks(in, func(lbn, frag int64) error {
		off := lbn * r.s.bsize
		return r.read(in.ino, b[off:min(off+r.s.bsize, in.size)], frag, 0)
	})
}

// file writes the content of the regular file in to the new file p.
func (r *ufsReader) file(in *ufsInode, p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = r.blocks(in, func(lbn, frag int64) error {
		off := lbn * r.s.bsize
		b := r.buf[:min(r.s.bsize, in.size-off)]
		if err := r.read(in.ino, b, frag, 0); err != nil {
			return err
		}
		_, err := f.WriteAt(b, off)
		return err
	})
	if err == nil {
		err = f.Truncate(in.size) // a hole at the end
	}
	return errors.Join(err, f.Close())
}

// dir recreates the entries of directory in in the existing directory p, then
// gives p in's metadata.
func (r *ufsReader) dir(in *ufsInode, p string, depth int) error {
	if depth > ufsMaxDepth {
		return fmt.Errorf("ufs: inode %d: directories nested deeper than %d", in.ino, ufsMaxDepth)
	}
	if r.dirs[in.ino] {
		return fmt.Errorf("ufs: inode %d: directory met twice (a loop)", in.ino)
	}
	r.dirs[in.ino] = true
	b, err := r.data(in)
	if err != nil {
		return err
	}
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			return fmt.Errorf("ufs: directory inode %d: entry at %d truncated", in.ino, off)
		}
		ino := binary.LittleEndian.Uint32(b[off:])
		reclen, namlen := int(binary.LittleEndian.Uint16(b[off+4:])), int(b[off+7])
		if reclen < 8 || reclen%4 != 0 || off%ufsDirBlk+reclen > ufsDirBlk || off+reclen > len(b) || 8+namlen > reclen {
			return fmt.Errorf("ufs: directory inode %d: bad entry at %d", in.ino, off)
		}
		name := string(b[off+8 : off+8+namlen])
		off += reclen
		if ino == 0 || name == "." || name == ".." {
			continue
		}
		if name == "" || strings.ContainsAny(name, "/\x00") {
			return fmt.Errorf("ufs: directory inode %d: bad name %q", in.ino, name)
		}
		if err := r.entry(ino, filepath.Join(p, name), depth); err != nil {
			return err
		}
	}
	return r.setMeta(in, p)
}

// entry recreates inode ino at the new path p.
func (r *ufsReader) entry(ino uint32, p string, depth int) error {
	if first, ok := r.links[ino]; ok {
		return os.Link(first, p)
	}
	in, err := r.inode(ino)
	if err != nil {
		return err
	}
	perm := in.mode & 0o7777
	switch typ := in.mode & unix.S_IFMT; typ {
	case unix.S_IFDIR:
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		return r.dir(in, p, depth+1)
	case unix.S_IFREG:
		err = r.file(in, p)
	case unix.S_IFLNK:
		var target []byte
		if in.size < r.s.maxSymlink {
			target = in.ptrs[:in.size]
		} else if in.size > unix.PathMax {
			return fmt.Errorf("ufs: inode %d: symlink target of %d bytes", ino, in.size)
		} else if target, err = r.data(in); err != nil {
			return err
		}
		err = os.Symlink(string(target), p)
	case unix.S_IFCHR, unix.S_IFBLK:
		// di_rdev is di_db[0]; makefs stores the host's dev_t.
		rdev := uint64(in.db[0])
		if r.s.version == 1 {
			rdev &= 0xffffffff
		}
		err = unix.Mknod(p, typ|perm, int(rdev))
	case unix.S_IFIFO, unix.S_IFSOCK:
		err = unix.Mknod(p, typ|perm, 0)
	default:
		return fmt.Errorf("ufs: inode %d: unknown file type %#o", ino, typ)
	}
	if err != nil {
		return err
	}
	r.links[ino] = p
	return r.setMeta(in, p)
}

// setMeta gives p in's owner, mode and times. The mode comes after the owner, which
// clears setuid and setgid.
func (r *ufsReader) setMeta(in *ufsInode, p string) error {
	if err := os.Lchown(p, int(in.uid), int(in.gid)); err != nil {
		return err
	}
	if in.mode&unix.S_IFMT != unix.S_IFLNK {
		if err := unix.Chmod(p, in.mode&0o7777); err != nil {
			return fmt.Errorf("chmod %s: %w", p, err)
		}
	}
	ts := []unix.Timespec{in.atime, in.mtime}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return fmt.Errorf("set the times of %s: %w", p, err)
	}
	return nil
}
