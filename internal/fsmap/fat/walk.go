package fat

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf16"
)

// Bounds on what a hostile filesystem can make walk do.
const (
	maxDirBytes = 65536 * 32 // a directory holds at most 65536 entries
	maxDepth    = 256
)

// walk reads FAT 1 and the directory tree from the root, and records which
// clusters belong to which directory or file. It runs once. Every cluster is
// claimed at most once, so chains that loop or cross end there, and the work is
// bounded by the number of clusters.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	f.fat = make([]byte, f.fatSectors*f.sector)
	if n, err := f.r.ReadAt(f.fat, f.reserved*f.sector); n < len(f.fat) {
		f.walkErr = fmt.Errorf("fat: read FAT 1: %w", err)
		return f.walkErr
	}
	f.dirents = map[string]*[32]byte{}
	w := &walker{f: f, seen: make([]uint64, (f.clusters+2+63)/64)}
	if f.bits == 32 {
		w.queue = append(w.queue, dir{"/", f.rootCluster, 0})
	} else {
		root := make([]byte, f.rootEntries*32)
		if n, err := f.r.ReadAt(root, f.rootSector*f.sector); n < len(root) {
			f.walkErr = fmt.Errorf("fat: read the root directory: %w", err)
			return f.walkErr
		}
		w.entries(root, "/", 0)
	}
	for len(w.queue) > 0 {
		d := w.queue[0]
		w.queue = w.queue[1:]
		id := len(f.names)
		f.names = append(f.names, d.path)
		w.entries(w.chain(d.first, id, true), d.path, d.depth)
	}
	f.sortRuns()
	return nil
}

// dir is a directory walk has yet to read.
type dir struct {
	path  string
	first int64 // cluster
	depth int
}

type walker struct {
	f     *FS
	seen  []uint64 // clusters claimed, a bit each
	queue []dir
}

// chain claims the clusters of the chain from first for owner id, and returns a
// directory's content (at most maxDirBytes of it).
func (w *walker) chain(first int64, id int, isDir bool) []byte {
	f := w.f
	var data []byte
	read := isDir
	for c := first; f.valid(c) && w.seen[c/64]&(1<<(c%64)) == 0; c = f.entry(c) {
		w.seen[c/64] |= 1 << (c % 64)
		f.addRun(c, id, isDir)
		if read && int64(len(data))+f.clusterSize <= maxDirBytes {
			buf := make([]byte, f.clusterSize)
			if n, _ := f.r.ReadAt(buf, f.dataSector*f.sector+(c-2)*f.clusterSize); n < len(buf) {
				read = false // past the end of what r holds
				continue
			}
			data = append(data, buf...)
		}
	}
	return data
}

// entries reads the 32-byte entries of the directory at p: it claims files'
// clusters and queues subdirectories. A run of long-name entries (attribute 0x0f,
// last part first) names the short entry that follows it, when their checksum
// agrees.
func (w *walker) entries(data []byte, p string, depth int) {
	f := w.f
	var long lfn
	for at := 0; at+32 <= len(data); at += 32 {
		e := data[at : at+32]
		attr := e[11]
		switch {
		case e[0] == 0:
			return // the end of the directory
		case e[0] == 0xe5:
			long.reset() // deleted
			continue
		case attr&0x3f == 0x0f:
			long.add(e)
			continue
		case attr&0x08 != 0: // the volume label
			long.reset()
			continue
		}
		name := long.name(e)
		long.reset()
		if name == "" {
			name = shortName(e)
		}
		if name == "." || name == ".." || name == "" {
			continue
		}
		first := int64(le.Uint16(e[26:]))
		if f.bits == 32 {
			first |= int64(le.Uint16(e[20:])) << 16
		}
		cp := path.Join(p, name)
		if f.dirents[cp] == nil { // a name twice in one directory: the first counts
			f.dirents[cp] = (*[32]byte)(append([]byte(nil), e...))
		}
		if attr&0x10 != 0 {
			if depth < maxDepth {
				w.queue = append(w.queue, dir{cp, first, depth + 1})
			}
			continue
		}
		id := len(f.names)
		f.names = append(f.names, cp)
		w.chain(first, id, false)
	}
}

// shortName is the 8.3 name of entry e, lowercased where the flags Windows NT (and
// Linux, and mtools) set in byte 12 say so. Bytes of the OEM code page past ASCII
// read as U+FFFD.
func shortName(e []byte) string {
	conv := func(b []byte, lower bool) string {
		var s strings.Builder
		for _, c := range b {
			switch {
			case c >= 0x80 || c < 0x20 || c == '/':
				s.WriteRune('\ufffd')
			case lower && c >= 'A' && c <= 'Z':
				s.WriteByte(c + 'a' - 'A')
			default:
				s.WriteByte(c)
			}
		}
		return strings.TrimRight(s.String(), " ")
	}
	base := make([]byte, 8)
	copy(base, e[:8])
	if base[0] == 0x05 { // a name starting with 0xe5
		base[0] = 0xe5
	}
	name := conv(base, e[12]&0x08 != 0)
	if ext := conv(e[8:11], e[12]&0x10 != 0); ext != "" {
		name += "." + ext
	}
	return name
}

// lfn gathers the parts of a long name, 13 UTF-16 units an entry.
type lfn struct {
	units  []uint16
	expect int  // the ordinal of the next part, counting down to 1; 0 when complete
	sum    byte // the short entry's checksum, as each part records it
	ok     bool
}

func (l *lfn) reset() { *l = lfn{units: l.units[:0]} }

// add takes one long-name entry.
func (l *lfn) add(e []byte) {
	ord := int(e[0] & 0x1f)
	if e[0]&0x40 != 0 { // the last part, which comes first
		l.reset()
		if ord == 0 || ord > 20 {
			return
		}
		l.units = append(l.units[:0], make([]uint16, 13*ord)...)
		l.expect, l.sum, l.ok = ord, e[13], true
	}
	if !l.ok || ord != l.expect || e[13] != l.sum {
		l.ok = false
		return
	}
	u := l.units[(ord-1)*13:]
	k := 0
	for _, r := range [][2]int{{1, 11}, {14, 26}, {28, 32}} {
		for i := r[0]; i < r[1]; i += 2 {
			u[k] = le.Uint16(e[i:])
			k++
		}
	}
	l.expect--
}

// name is the long name of short entry e, "" if the parts before it do not name it.
func (l *lfn) name(e []byte) string {
	if !l.ok || l.expect != 0 || len(l.units) == 0 {
		return ""
	}
	var sum byte
	for _, c := range e[:11] {
		sum = (sum&1)<<7 + sum>>1 + c
	}
	if sum != l.sum {
		return ""
	}
	u := l.units
	for i, c := range u {
		if c == 0 {
			u = u[:i]
			break
		}
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '\ufffd'
		}
		return r
	}, string(utf16.Decode(u)))
}
