package btrfs

import (
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
)

// Item key types this package reads.
const (
	keyInode      = 1
	keyInodeRef   = 12
	keyExtentData = 108
	keyRootItem   = 132
	keyRootBack   = 144
	keyChunk      = 228
)

// key is an item's key.
type key struct {
	objectid uint64
	typ      uint8
	offset   uint64
}

const (
	headerSize = 101
	maxLevel   = 7 // BTRFS_MAX_LEVEL is 8: levels 0 to 7
	maxRuns    = 1 << 24
)

// Well-known trees.
const (
	rootTree      = 1
	fsTree        = 5
	firstSubvol   = 256
	lastSubvol    = math.MaxUint64 - 256 // ids above are negative: log, reloc, …
	treeLog       = math.MaxUint64 - 5   // -6
	treeDataReloc = math.MaxUint64 - 8   // -9
)

var treeNames = map[uint64]string{
	1: "root tree", 2: "extent tree", 3: "chunk tree", 4: "device tree", 5: "fs tree",
	7: "checksum tree", 8: "quota tree", 9: "UUID tree", 10: "free space tree",
	11: "block group tree", 12: "raid stripe tree",
	treeLog: "log tree", treeDataReloc: "data relocation tree", math.MaxUint64 - 7: "tree relocation tree",
}

func treeName(id uint64) string {
	if n, ok := treeNames[id]; ok {
		return n
	}
	if id >= firstSubvol && id <= lastSubvol {
		return fmt.Sprintf("subvolume tree %d", id)
	}
	return fmt.Sprintf("tree %d", int64(id))
}

// tree walks the tree whose root node is at logical address l, level high, named
// name (tree id, for the inodes its leaves hold), and hands each leaf item to
// item with its key, data and the leaf's logical address.
func (f *FS) tree(l uint64, level uint8, name string, id uint64, item func(k key, data []byte, leaf int64)) {
	if level > maxLevel {
		return
	}
	f.node(l, int(level), name, id, item)
}

func (f *FS) node(l uint64, level int, name string, id uint64, item func(key, []byte, int64)) {
	if f.seen[l] || l > math.MaxInt64 {
		return
	}
	f.seen[l] = true
	b := f.readLogical(l, f.nodeSize)
	if b == nil || le.Uint64(b[48:]) != l || int(b[100]) != level {
		return
	}
	n := int64(le.Uint32(b[96:]))
	var inodes []owner
	if level == 0 {
		for i := range min(n, (f.nodeSize-headerSize)/25) {
			it := b[headerSize+25*i:]
			k := key{le.Uint64(it), it[8], le.Uint64(it[9:])}
			off, sz := int64(le.Uint32(it[17:])), int64(le.Uint32(it[21:]))
			if off+sz > f.nodeSize-headerSize {
				continue
			}
			if k.typ == keyInode && id >= firstSubvol && id <= lastSubvol || k.typ == keyInode && id == fsTree {
				inodes = append(inodes, owner{id, k.objectid})
			}
			if item != nil {
				item(k, b[headerSize+off:headerSize+off+sz], int64(l))
			}
		}
	}
	for _, p := range f.physical(int64(l), f.nodeSize) {
		f.addRun(p, p+f.nodeSize, name, inodes)
	}
	if level == 0 {
		return
	}
	for i := range min(n, (f.nodeSize-headerSize)/33) {
		kp := b[headerSize+33*i:]
		f.node(le.Uint64(kp[17:]), level-1, name, id, item)
	}
}

func (f *FS) addRun(start, end int64, what string, owners []owner) {
	if start < 0 || end > f.size || start >= end || len(f.raw) >= maxRuns {
		return
	}
	f.raw = append(f.raw, run{start, end, what, owners})
}

// walk maps every tree the root tree names and files' data, then flattens what it
// found into disjoint runs. It runs once.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	f.refs = map[owner]ref{}
	f.subvols = map[uint64]ref{}
	type root struct {
		id, bytenr uint64
		level      uint8
	}
	var roots []root
	rootItems := func(k key, data []byte, _ int64) {
		switch {
		case k.typ == keyRootItem && len(data) >= 239:
			roots = append(roots, root{k.objectid, le.Uint64(data[176:]), data[238]})
		case k.typ == keyRootBack && len(data) >= 18:
			nl := int(le.Uint16(data[16:]))
			if 18+nl <= len(data) {
				f.subvols[k.objectid] = ref{owner{k.offset, le.Uint64(data)}, string(data[18 : 18+nl])}
			}
		}
	}
	f.tree(f.root, f.rootLevel, "root tree", rootTree, rootItems)
	if f.logRoot != 0 {
		// The log root tree names a log tree per subvolume with a log.
		n := len(roots)
		f.tree(f.logRoot, f.logLevel, "log tree", treeLog, rootItems)
		for i := n; i < len(roots); i++ {
			roots[i].id = treeLog
		}
	}
	for _, rt := range roots {
		id := rt.id
		item := func(k key, data []byte, leaf int64) {}
		if id == fsTree || id >= firstSubvol && id <= lastSubvol {
			item = func(k key, data []byte, _ int64) { f.fsItem(id, k, data) }
		}
		f.tree(rt.bytenr, rt.level, treeName(id), id, item)
	}
	f.flatten()
	f.raw, f.seen = nil, nil
	return nil
}

// fsItem reads an fs tree's item: a file's data extent, or an inode's name.
func (f *FS) fsItem(tree uint64, k key, data []byte) {
	switch k.typ {
	case keyInodeRef:
		if len(data) >= 10 {
			if nl := int(le.Uint16(data[8:])); 10+nl <= len(data) {
				f.refs[owner{tree, k.objectid}] = ref{owner{tree, k.offset}, string(data[10 : 10+nl])}
			}
		}
	case keyExtentData:
		if len(data) < 53 || data[20] == 0 { // inline: the data is in the leaf
			return
		}
		disk, diskLen := int64(le.Uint64(data[21:])&math.MaxInt64), int64(le.Uint64(data[29:])&math.MaxInt64)
		off, n := int64(le.Uint64(data[37:])&math.MaxInt64), int64(le.Uint64(data[45:])&math.MaxInt64)
		if disk == 0 { // a hole
			return
		}
		if data[16] == 0 && off < diskLen { // uncompressed: the part of the extent the file uses
			disk, diskLen = disk+off, min(n, diskLen-off)
		}
		f.data(disk, diskLen, owner{tree, k.objectid})
	}
}

// data maps the logical range [l, l+n) of a file's data to the device, a chunk at
// a time.
func (f *FS) data(l, n int64, o owner) {
	for n > 0 {
		i := sort.Search(len(f.chunks), func(i int) bool { return f.chunks[i].logical+f.chunks[i].length > l })
		if i == len(f.chunks) || f.chunks[i].logical > l {
			return
		}
		c := f.chunks[i]
		m := min(n, c.logical+c.length-l)
		for _, p := range c.phys {
			at := p + l - c.logical
			f.addRun(at, min(at+m, f.size), "file data", []owner{o})
		}
		l, n = l+m, n-m
	}
}

// flatten turns the runs the walk found, which overlap where extents are shared,
// into disjoint ones sorted by start, owners merged; and lists the chunks' stripes.
func (f *FS) flatten() {
	sort.SliceStable(f.raw, func(i, j int) bool { return f.raw[i].start < f.raw[j].start })
	var active []run
	cuts := make([]int64, 0, 2*len(f.raw))
	for _, r := range f.raw {
		cuts = append(cuts, r.start, r.end)
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i] < cuts[j] })
	next := 0
	for ci := 0; ci+1 < len(cuts); ci++ {
		lo, hi := cuts[ci], cuts[ci+1]
		if lo == hi {
			continue
		}
		for next < len(f.raw) && f.raw[next].start <= lo {
			active = append(active, f.raw[next])
			next++
		}
		kept := active[:0]
		for _, r := range active {
			if r.end > lo {
				kept = append(kept, r)
			}
		}
		active = kept
		if len(active) == 0 {
			continue
		}
		seg := run{start: lo, end: hi, what: active[0].what}
		for _, r := range active {
			if r.what == seg.what {
				seg.owners = addOwners(seg.owners, r.owners)
			}
		}
		if k := len(f.runs) - 1; k >= 0 && f.runs[k].end == lo && f.runs[k].what == seg.what && slices.Equal(f.runs[k].owners, seg.owners) {
			f.runs[k].end = hi
		} else {
			f.runs = append(f.runs, seg)
		}
	}
	for _, c := range f.chunks {
		for _, p := range c.phys {
			if p < f.size {
				f.stripes = append(f.stripes, stripe{p, min(p+c.length, f.size), c.typ})
			}
		}
	}
	sort.Slice(f.stripes, func(i, j int) bool { return f.stripes[i].start < f.stripes[j].start })
}

func addOwners(a, b []owner) []owner {
	for _, o := range b {
		found := false
		for _, x := range a {
			found = found || x == o
		}
		if !found && len(a) < 64 {
			a = append(a, o)
		}
	}
	return a
}

// path names inode o by its INODE_REFs up to its tree's root directory, and the
// tree by its ROOT_BACKREFs up to the fs tree; "" where the chain breaks.
func (f *FS) path(o owner) string {
	var parts []string
	for depth := 0; depth < 1024; depth++ {
		r, ok := f.refs[o]
		if o.ino == firstSubvol { // the tree's root directory
			if o.tree == fsTree {
				return "/" + path.Join(reverse(parts)...)
			}
			sv, ok := f.subvols[o.tree]
			if !ok {
				return ""
			}
			parts = append(parts, sv.name)
			o = sv.parent
			continue
		}
		if !ok {
			return ""
		}
		parts = append(parts, r.name)
		o = r.parent
	}
	return ""
}

func reverse(s []string) []string {
	for i, j := 0, len(s)-1; i < j; i, j = i+1, j-1 {
		s[i], s[j] = s[j], s[i]
	}
	return s
}
