package exfat

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf16"
)

// Bounds on what a hostile filesystem can make walk do.
const (
	maxDirBytes = 8 << 20 // of a directory, read (exFAT allows 256 MiB)
	maxDepth    = 256
)

// Entry types, in use (bit 7 set).
const (
	typeBitmap = 0x81
	typeUpcase = 0x82
	typeFile   = 0x85
	typeStream = 0xc0
	typeName   = 0xc1
)

// walk reads FAT 1 and the directory tree from the root, and records which
// clusters belong to which structure. It runs once. Every cluster is claimed at
// most once, so chains that loop or cross end there, and the work is bounded by
// the number of clusters.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	f.fat = make([]byte, 4*(f.clusters+2))
	if n, err := f.r.ReadAt(f.fat, f.fatOff*f.sector); n < len(f.fat) {
		f.walkErr = fmt.Errorf("exfat: read FAT 1: %w", err)
		return f.walkErr
	}
	f.sets = map[string]*[64]byte{}
	w := &walker{f: f, seen: make([]uint64, (f.clusters+2+63)/64)}
	w.queue = append(w.queue, dir{path: "/", first: f.rootCluster})
	for len(w.queue) > 0 {
		d := w.queue[0]
		w.queue = w.queue[1:]
		id := f.name(d.path)
		structure := "directory"
		if d.depth == 0 {
			structure = "root directory"
		}
		w.entries(w.claim(d.first, d.length, d.contiguous, id, structure, true), d)
	}
	f.sortRuns()
	return nil
}

// name records the path p, and returns its id.
func (f *FS) name(p string) int {
	f.names = append(f.names, p)
	return len(f.names) - 1
}

// dir is a directory walk has yet to read.
type dir struct {
	path       string
	first      int64 // cluster
	length     int64 // bytes; 0 for the root: follow the FAT to its end
	contiguous bool  // NoFatChain: the clusters follow first, the FAT says nothing
	depth      int
}

type walker struct {
	f     *FS
	seen  []uint64 // clusters claimed, a bit each
	queue []dir
}

// claim claims for owner id the clusters of a structure from first, length bytes
// of them (0: up to the end of its chain), contiguous or chained in the FAT, and
// returns a directory's content (at most maxDirBytes of it) when read is set.
func (w *walker) claim(first, length int64, contiguous bool, id int, structure string, read bool) []byte {
	f := w.f
	want := (length + f.clusterSize - 1) / f.clusterSize
	if length <= 0 || want > f.clusters {
		want = f.clusters
	}
	var data []byte
	c := first
	for k := int64(0); k < want && f.valid(c) && w.seen[c/64]&(1<<(c%64)) == 0; k++ {
		w.seen[c/64] |= 1 << (c % 64)
		f.addRun(c, id, structure)
		at := f.heap*f.sector + (c-2)*f.clusterSize
		if read && int64(len(data))+f.clusterSize <= maxDirBytes && at+f.clusterSize <= f.size {
			buf := make([]byte, f.clusterSize)
			if n, _ := f.r.ReadAt(buf, at); n < len(buf) {
				read = false
			} else {
				data = append(data, buf...)
			}
		}
		if contiguous {
			c++
		} else {
			c = f.next(c)
		}
	}
	return data
}

// entries reads the 32-byte entries of directory d: it claims files' clusters and
// queues subdirectories; in the root, it claims the allocation bitmap and the
// up-case table too.
func (w *walker) entries(data []byte, d dir) {
	f := w.f
	for at := 0; at+32 <= len(data); at += 32 {
		e := data[at : at+32]
		switch e[0] {
		case 0:
			return // the end of the directory
		case typeBitmap, typeUpcase:
			if d.depth != 0 {
				continue
			}
			first, length := int64(le.Uint32(e[20:])), int64(le.Uint64(e[24:]))
			if e[0] == typeUpcase {
				w.claim(first, length, false, f.name(""), "up-case table", false)
				continue
			}
			structure := "allocation bitmap"
			if e[1]&1 != 0 { // TexFAT's second bitmap
				structure = "allocation bitmap 2"
			}
			bitmap := w.claim(first, length, false, f.name(""), structure, true)
			if e[1]&1 == 0 && f.bitmap == nil {
				f.bitmap = bitmap[:min(int64(len(bitmap)), (f.clusters+7)/8)]
			}
		case typeFile:
			n := int(e[1]) // secondary entries
			if n < 2 || at+32*(n+1) > len(data) {
				continue
			}
			set := data[at : at+32*(n+1)]
			at += 32 * n
			s := set[32:64]
			if s[0] != typeStream {
				continue
			}
			name := setName(set, int(s[3]))
			if name == "" || name == "." || name == ".." {
				continue
			}
			p := path.Join(d.path, name)
			if f.sets[p] == nil { // a name twice in one directory: the first counts
				f.sets[p] = (*[64]byte)(append([]byte(nil), set[:64]...))
			}
			first, length, contiguous := int64(le.Uint32(s[20:])), int64(le.Uint64(s[24:])), s[1]&2 != 0
			if le.Uint16(e[4:])&0x10 != 0 {
				if d.depth < maxDepth {
					w.queue = append(w.queue, dir{p, first, max(length, 1), contiguous, d.depth + 1})
				}
				continue
			}
			if length > 0 {
				w.claim(first, length, contiguous, f.name(p), "file data", false)
			}
		}
	}
}

// setName is the name that the file name entries of entry set set spell, n UTF-16
// units of it, 15 an entry.
func setName(set []byte, n int) string {
	var u []uint16
	for k := 64; k+32 <= len(set) && len(u) < n; k += 32 {
		if set[k] != typeName {
			break
		}
		for i := 2; i < 32 && len(u) < n; i += 2 {
			u = append(u, le.Uint16(set[k+i:]))
		}
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '\ufffd'
		}
		return r
	}, string(utf16.Decode(u)))
}
