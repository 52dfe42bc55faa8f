package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"sort"
)

// XFS (v5, with checksums) records the moment and order of every change: inode
// times to the nanosecond (mkfs.xfs stamps the root, realtime bitmap and summary
// inodes with the clock; the kernel a new inode's creation time, which nothing can
// set later), a random generation for every new inode, and in every metadata block
// the log sequence number (LSN) of its last write, which depends on how the log
// went. The log itself holds the session's transactions and an unmount record with
// a random ticket ID. fixXFS, on an unmounted filesystem, sets every time after the
// epoch to the epoch and every generation to 0 in each inode of each inode chunk,
// sets every metadata block's LSN to 0 as mkfs.xfs leaves them, writes the
// checksums again, and formats the log as mkfs.xfs does (xfs_db logformat).

// xfsCRC writes the CRC32C of b, with the checksum at b[at:at+4] zeroed, there.
func xfsCRC(b []byte, at int) {
	binary.LittleEndian.PutUint32(b[at:], 0)
	binary.LittleEndian.PutUint32(b[at:], crc32.Checksum(b, castagnoli))
}

func xfsCRCOK(b []byte, at int) bool {
	saved := binary.LittleEndian.Uint32(b[at:])
	xfsCRC(b, at)
	ok := binary.LittleEndian.Uint32(b[at:]) == saved
	binary.LittleEndian.PutUint32(b[at:], saved)
	return ok
}

// The metadata block formats: where the LSN, the UUID, the block's own address (in
// 512-byte units) and the CRC are.
type xfsBlockFormat struct {
	lsn, uuid, blkno, crc int
	dir                   bool // a directory block: dirblksize long
}

var (
	xfsShortBtree = xfsBlockFormat{lsn: 24, uuid: 32, blkno: 16, crc: 52}
	xfsLongBtree  = xfsBlockFormat{lsn: 32, uuid: 40, blkno: 24, crc: 64}
	xfsDir3Block  = xfsBlockFormat{lsn: 16, uuid: 24, blkno: 8, crc: 4, dir: true}
	xfsDA3Block   = xfsBlockFormat{lsn: 24, uuid: 32, blkno: 16, crc: 12}
	xfsRemote     = xfsBlockFormat{lsn: 48, uuid: 16, blkno: 40, crc: 12}
)

// xfsFormatOf returns the format of the metadata block b starts, if it is one.
func xfsFormatOf(b []byte) (xfsBlockFormat, bool) {
	be := binary.BigEndian
	switch string(b[:4]) {
	case "AB3B", "AB3C", "IAB3", "FIB3", "RMB3", "R3FC":
		return xfsShortBtree, true
	case "BMA3":
		return xfsLongBtree, true
	case "XDB3", "XDD3", "XDF3":
		return xfsDir3Block, true
	case "XSLM", "XARM":
		return xfsRemote, true
	}
	switch be.Uint16(b[8:]) {
	case 0x3ebe, 0x3df1, 0x3dff: // da3 node, dir3 leaf1, dir3 leafn: a directory's
		f := xfsDA3Block
		f.dir = true
		return f, true
	case 0x3bee: // attr3 leaf
		return xfsDA3Block, true
	}
	return xfsBlockFormat{}, false
}

type xfsFS struct {
	f         *os.File
	uuid      []byte
	epoch     int64
	blockSize int64
	sectSize  int64
	agBlocks  int64
	agCount   int64
	agBlkLog  uint
	inodeSize int64
	inoPBLog  uint
	dirBlk    int64
	logStart  int64 // the internal log, in filesystem blocks (0: external)
	logBlocks int64
	dblocks   int64
	sparse    bool // sparse inode chunks: inode btree records have a hole mask
	changed   int
}

// fixXFS returns how many blocks and inodes it rewrote; xfsDB is the xfs_db to
// format the log with ("" leaves the log alone).
func fixXFS(dev string, epoch int64, xfsDB string) (int, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	x := &xfsFS{f: f, epoch: epoch}
	if err := x.fix(); err != nil {
		return x.changed, fmt.Errorf("xfs %s: %w", dev, err)
	}
	if err := f.Close(); err != nil {
		return x.changed, err
	}
	if xfsDB != "" && x.logStart != 0 {
		if out, err := exec.Command(xfsDB, "-x", "-c", "logformat", dev).CombinedOutput(); err != nil {
			return x.changed, fmt.Errorf("xfs %s: xfs_db logformat: %v\n%s", dev, err, out)
		}
	}
	return x.changed, nil
}

func (x *xfsFS) fix() error {
	be := binary.BigEndian
	sb := make([]byte, 512)
	if _, err := x.f.ReadAt(sb, 0); err != nil {
		return err
	}
	if string(sb[:4]) != "XFSB" {
		return errors.New("no XFS superblock")
	}
	if v := be.Uint16(sb[100:]) & 0xf; v != 5 {
		return fmt.Errorf("version %d: only version 5 (with checksums) is made reproducible", v)
	}
	x.blockSize, x.sectSize = int64(be.Uint32(sb[4:])), int64(be.Uint16(sb[102:]))
	x.agBlocks, x.agCount = int64(be.Uint32(sb[84:])), int64(be.Uint32(sb[88:]))
	x.inodeSize, x.inoPBLog, x.agBlkLog = int64(be.Uint16(sb[104:])), uint(sb[123]), uint(sb[124])
	x.dirBlk = x.blockSize << sb[192]
	x.logStart, x.logBlocks = int64(be.Uint64(sb[48:])), int64(be.Uint32(sb[96:]))
	x.dblocks, x.sparse = int64(be.Uint64(sb[8:])), be.Uint32(sb[216:])&2 != 0
	if x.blockSize < 512 || x.blockSize > 65536 || x.sectSize < 512 || x.sectSize > x.blockSize ||
		x.inodeSize < 256 || x.inodeSize > 2048 || x.agBlocks <= 0 || x.agCount <= 0 || x.agCount > 1<<20 ||
		x.dirBlk > 65536 || x.blockSize>>x.inoPBLog != x.inodeSize {
		return errors.New("superblock geometry out of range")
	}
	x.uuid = bytes.Clone(sb[32:48])
	if be.Uint32(sb[216:])&4 != 0 { // META_UUID: metadata carries the original UUID
		x.uuid = bytes.Clone(sb[248:264])
	}
	for ag := range x.agCount {
		if err := x.fixAG(ag); err != nil {
			return fmt.Errorf("AG %d: %w", ag, err)
		}
	}
	return nil
}

// fixAG fixes an allocation group's headers, inodes and metadata blocks.
func (x *xfsFS) fixAG(ag int64) error {
	be := binary.BigEndian
	base := ag * x.agBlocks * x.blockSize
	// The headers: superblock, AGF, AGI, AGFL, one sector each; LSN and CRC.
	hdrs := make([]byte, 4*x.sectSize)
	if _, err := x.f.ReadAt(hdrs, base); err != nil {
		return err
	}
	sect := func(i int64) []byte { return hdrs[i*x.sectSize : (i+1)*x.sectSize] }
	for i, h := range []struct {
		magic   string
		lsn, cs int
	}{{"XFSB", 240, 224}, {"XAGF", 208, 216}, {"XAGI", 320, 312}, {"XAFL", 24, 32}} {
		s := sect(int64(i))
		if string(s[:4]) != h.magic {
			return fmt.Errorf("no %s in sector %d", h.magic, i)
		}
		if be.Uint64(s[h.lsn:]) != 0 {
			be.PutUint64(s[h.lsn:], 0)
			xfsCRC(s, h.cs)
			if _, err := x.f.WriteAt(s, base+int64(i)*x.sectSize); err != nil {
				return err
			}
			x.changed++
		}
	}
	agf, agi := sect(1), sect(2)

	// Free space, from the by-block btree: not read.
	var free [][2]int64
	err := x.walkBtree(ag, int64(be.Uint32(agf[16:])), int(be.Uint32(agf[28:])), 8, 8, func(rec []byte) error {
		free = append(free, [2]int64{int64(be.Uint32(rec)), int64(be.Uint32(rec[4:]))})
		return nil
	})
	if err != nil {
		return fmt.Errorf("free space btree: %w", err)
	}
	// Inode chunks, from the inode btree: fixed inode by inode. Their blocks are
	// not scanned; a sparse chunk's holes may hold anything.
	var skip [][2]int64
	per := int64(1) << x.inoPBLog // inodes a block
	err = x.walkBtree(ag, int64(be.Uint32(agi[20:])), int(be.Uint32(agi[24:])), 16, 4, func(rec []byte) error {
		agino := int64(be.Uint32(rec))
		var holes uint16 // a bit for each 4 inodes
		if x.sparse {
			holes = be.Uint16(rec[4:])
		}
		for i := int64(0); i < 64; i++ {
			if holes>>(i/4)&1 != 0 {
				continue
			}
			if err := x.fixInode(ag, agino+i); err != nil {
				return err
			}
			if (agino+i)%per == 0 || i == 0 {
				skip = append(skip, [2]int64{(agino + i) >> x.inoPBLog, 1})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("inode btree: %w", err)
	}

	// Everything else that is allocated: metadata blocks, found by their magic
	// and checked by their UUID, own address and CRC (a file's data never is one).
	skip = append(skip, free...)
	skip = append(skip, [2]int64{0, max(1, (4*x.sectSize+x.blockSize-1)/x.blockSize)}) // the headers
	if x.logStart != 0 && x.logStart>>x.agBlkLog == ag {
		skip = append(skip, [2]int64{x.logStart & (1<<x.agBlkLog - 1), x.logBlocks})
	}
	sort.Slice(skip, func(i, j int) bool { return skip[i][0] < skip[j][0] })
	next := int64(0)
	for _, s := range append(skip, [2]int64{min(x.agBlocks, x.dblocks-ag*x.agBlocks), 0}) {
		if s[0] > next {
			if err := x.scan(ag, next, s[0]); err != nil {
				return err
			}
		}
		next = max(next, s[0]+s[1])
	}
	return nil
}

// scan reads the AG's blocks [from, to) and fixes the metadata blocks among them.
func (x *xfsFS) scan(ag, from, to int64) error {
	const chunk = 4 << 20
	buf := make([]byte, chunk+x.dirBlk)
	for at := from; at < to; {
		n := min(to-at, chunk/x.blockSize)
		off := (ag*x.agBlocks + at) * x.blockSize
		// A directory block of several filesystem blocks may run past n.
		m := min(int64(len(buf)), (to-at)*x.blockSize)
		if _, err := x.f.ReadAt(buf[:m], off); err != nil {
			return fmt.Errorf("blocks %d to %d: %w", at, at+n, err)
		}
		for i := int64(0); i < n; i++ {
			b := buf[i*x.blockSize : m]
			fm, ok := xfsFormatOf(b)
			if !ok {
				continue
			}
			daddr := uint64(off+i*x.blockSize) / 512
			if !bytes.Equal(b[fm.uuid:fm.uuid+16], x.uuid) || binary.BigEndian.Uint64(b[fm.blkno:]) != daddr ||
				binary.BigEndian.Uint64(b[fm.lsn:]) == 0 {
				continue
			}
			// A directory's blocks are dirblksize long; a da3 node is a
			// directory's or an attribute fork's (a filesystem block).
			sizes := []int64{x.blockSize}
			if fm.dir && x.dirBlk != x.blockSize {
				sizes = []int64{x.dirBlk, x.blockSize}
			}
			found := false
			for _, size := range sizes {
				if int64(len(b)) >= size && xfsCRCOK(b[:size], fm.crc) {
					b, found = b[:size], true
					break
				}
			}
			if !found {
				continue
			}
			binary.BigEndian.PutUint64(b[fm.lsn:], 0)
			xfsCRC(b, fm.crc)
			if _, err := x.f.WriteAt(b, off+i*x.blockSize); err != nil {
				return err
			}
			x.changed++
		}
		at += n
	}
	return nil
}

// walkBtree calls fn with each record of a short-form btree of an AG, whose
// records and keys are of the given sizes.
func (x *xfsFS) walkBtree(ag, root int64, levels, recSize, keySize int, fn func([]byte) error) error {
	be := binary.BigEndian
	if levels < 1 || levels > 9 {
		return fmt.Errorf("%d levels", levels)
	}
	const hdr = 56
	blk := make([]byte, x.blockSize)
	var walk func(agbno int64, level int) error
	walk = func(agbno int64, level int) error {
		if agbno <= 0 || agbno >= x.agBlocks {
			return fmt.Errorf("block %d out of the AG", agbno)
		}
		off := (ag*x.agBlocks + agbno) * x.blockSize
		if _, err := x.f.ReadAt(blk, off); err != nil {
			return err
		}
		if _, ok := xfsFormatOf(blk); !ok || int(be.Uint16(blk[4:])) != level {
			return fmt.Errorf("block %d: no btree block of level %d", agbno, level)
		}
		n := int(be.Uint16(blk[6:]))
		if level == 0 {
			if hdr+n*recSize > len(blk) {
				return fmt.Errorf("block %d: %d records", agbno, n)
			}
			recs := bytes.Clone(blk[hdr : hdr+n*recSize])
			for i := range n {
				if err := fn(recs[i*recSize : (i+1)*recSize]); err != nil {
					return err
				}
			}
			return nil
		}
		// Keys, then pointers, each array sized for a full block.
		maxRecs := (len(blk) - hdr) / (keySize + 4)
		if n > maxRecs {
			return fmt.Errorf("block %d: %d keys", agbno, n)
		}
		ptrs := make([]int64, n)
		for i := range n {
			ptrs[i] = int64(be.Uint32(blk[hdr+maxRecs*keySize+4*i:]))
		}
		for _, p := range ptrs {
			if err := walk(p, level-1); err != nil {
				return err
			}
		}
		return nil
	}
	return walk(root, levels-1)
}

// fixInode clamps an inode's times to the epoch and sets its generation and LSN
// to 0.
func (x *xfsFS) fixInode(ag, agino int64) error {
	be := binary.BigEndian
	off := (ag*x.agBlocks+agino>>x.inoPBLog)*x.blockSize + agino&(1<<x.inoPBLog-1)*x.inodeSize
	in := make([]byte, x.inodeSize)
	if _, err := x.f.ReadAt(in, off); err != nil {
		return err
	}
	ino := uint64(ag)<<(x.agBlkLog+x.inoPBLog) | uint64(agino)
	if string(in[:2]) != "IN" || in[4] != 3 || be.Uint64(in[152:]) != ino {
		return fmt.Errorf("inode %d: no version 3 inode", ino)
	}
	orig := bytes.Clone(in)
	bigtime := be.Uint64(in[120:])&(1<<3) != 0
	for _, at := range []int{32, 40, 48, 144} { // atime, mtime, ctime, crtime
		if bigtime {
			// Nanoseconds since 1901-12-13 (the epoch of 32-bit seconds).
			limit := uint64(x.epoch+1<<31) * 1e9
			if be.Uint64(in[at:]) > limit {
				be.PutUint64(in[at:], limit)
			}
		} else if s, ns := int64(int32(be.Uint32(in[at:]))), be.Uint32(in[at+4:]); s > x.epoch || s == x.epoch && ns != 0 {
			be.PutUint32(in[at:], uint32(x.epoch))
			be.PutUint32(in[at+4:], 0)
		}
	}
	be.PutUint32(in[92:], 0)  // generation
	be.PutUint64(in[112:], 0) // LSN
	if bytes.Equal(in, orig) {
		return nil
	}
	xfsCRC(in, 100)
	x.changed++
	_, err := x.f.WriteAt(in, off)
	return err
}

// fixXFSTarget runs fixXFS on an unmounted xfs target.
func (a *agent) fixXFS(m mountpoint) error {
	if m.fstype != "xfs" {
		return nil
	}
	n, err := fixXFS(m.dev, a.job.Epoch, "xfs_db")
	if err != nil {
		return err
	}
	if n > 0 {
		fmt.Printf("+ XFS: %d inodes and blocks set to the epoch and LSN 0, log formatted\n", n)
	}
	return nil
}
