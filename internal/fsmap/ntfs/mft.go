package ntfs

import (
	"fmt"
	"path"
	"strings"
	"unicode/utf16"
)

// Attribute types.
const (
	attrList       = 0x20
	attrFileName   = 0x30
	attrSecurity   = 0x50
	attrData       = 0x80
	attrIndexRoot  = 0x90
	attrIndexAlloc = 0xa0
	attrBitmap     = 0xb0
)

// attrNames names the non-resident attributes other than data and index blocks.
var attrNames = map[uint32]string{
	attrList:     "attribute list",
	attrSecurity: "security descriptor",
	0xc0:         "reparse point",
	0xd0:         "extended attribute information",
	0xe0:         "extended attributes",
	0x100:        "logged utility stream",
}

// systemFiles names the data of the records of the system files.
var systemFiles = map[int64]string{
	1: "MFT mirror", 2: "$LogFile", 3: "$Volume", 4: "$AttrDef", 6: "$Bitmap",
	7: "$Boot", 8: "bad clusters", 9: "$Secure", 10: "$UpCase", 11: "$Extend",
}

const (
	maxRecords = 1 << 26 // records walk reads at most
	maxDepth   = 256     // of a path
	root       = 5       // the root directory's record
)

// walk reads the MFT, record by record, and $Bitmap, and records which clusters
// belong to which record's attribute. It runs once.
func (f *FS) walk() error {
	if f.walked {
		return f.walkErr
	}
	f.walked = true
	f.walkErr = f.readMFT()
	return f.walkErr
}

func (f *FS) readMFT() error {
	rec := make([]byte, f.recordSize)
	if n, err := f.r.ReadAt(rec, f.mftLCN*f.cluster); n < len(rec) {
		return fmt.Errorf("ntfs: read $MFT's record: %w", err)
	}
	if err := unfix(rec); err != nil {
		return fmt.Errorf("ntfs: $MFT's record: %w", err)
	}
	var size int64
	for _, a := range attributes(rec) {
		if a.typ == attrData && a.nonResident && a.name == "" {
			f.mft, size = f.extents(a.b), a.size
		}
	}
	if f.mft == nil {
		return fmt.Errorf("ntfs: $MFT's record maps no data")
	}
	mapped := int64(0)
	for _, e := range f.mft {
		mapped = max(mapped, e.vcn+e.n)
	}
	count := min(size, mapped*f.cluster) / f.recordSize
	count = min(count, maxRecords, f.clusters*f.cluster/f.recordSize)
	f.recs = make([]record, count)
	for n := range f.recs {
		f.recs[n] = record{parent: -1, nameNS: -1}
	}
	const batch = 256
	buf := make([]byte, batch*f.recordSize)
	for first := int64(0); first < count; first += batch {
		k := min(batch, count-first)
		b := buf[:k*f.recordSize]
		f.readAttr(f.mft, first*f.recordSize, b)
		for i := range k {
			f.record(first+i, b[i*f.recordSize:(i+1)*f.recordSize])
		}
	}
	f.readBitmap()
	f.sortRuns()
	return nil
}

// record reads MFT record n, whose bytes are rec.
func (f *FS) record(n int64, rec []byte) {
	if string(rec[:4]) != "FILE" || unfix(rec) != nil {
		return
	}
	flags := le.Uint16(rec[22:])
	if flags&1 == 0 {
		return
	}
	base := int64(le.Uint64(rec[32:]) & (1<<48 - 1))
	if base == 0 || base >= int64(len(f.recs)) {
		base = n
	}
	if base == n {
		f.recs[n].inUse, f.recs[n].dir = true, flags&2 != 0
	}
	for _, a := range attributes(rec) {
		if a.typ == attrFileName && !a.nonResident {
			f.fileName(base, a.value)
			continue
		}
		if !a.nonResident {
			continue
		}
		o := owner{rec: base}
		if a.name != "" {
			o.suffix = ":" + a.name
		}
		switch {
		case base == 0 && a.typ == attrData && a.name == "":
			continue // the MFT's records, mapped from record 0's own
		case base == 0 && a.typ == attrBitmap:
			o.structure, o.suffix = "MFT bitmap", ""
		case a.typ == attrData && systemFiles[base] != "":
			o.structure = systemFiles[base]
		case a.typ == attrData:
			o.structure = "file data"
		case a.typ == attrIndexAlloc:
			o.structure = "index blocks"
			if a.name == "$I30" {
				o.suffix = ""
			}
		case a.typ == attrBitmap:
			o.structure = "index bitmap"
			if a.name == "$I30" {
				o.suffix = ""
			}
		case attrNames[a.typ] != "":
			o.structure = attrNames[a.typ]
		default:
			o.structure = fmt.Sprintf("attribute 0x%x", a.typ)
		}
		ext := f.extents(a.b)
		if base == 6 && a.typ == attrData && a.name == "" {
			f.bitmapExt = append(f.bitmapExt, ext...)
		}
		f.addRuns(ext, o)
	}
	if n == 0 {
		f.addRuns(f.mft, owner{rec: 0, mft: true})
	}
}

// fileName takes a $FILE_NAME attribute's value for record n: its parent and its
// name, when no better one (Win32 over POSIX over DOS) has come before it.
func (f *FS) fileName(n int64, v []byte) {
	if len(v) < 66 {
		return
	}
	l, ns := int(v[64]), int8(v[65])
	if 66+2*l > len(v) {
		return
	}
	rank := func(ns int8) int { return [...]int{0, 2, 3, 1, 4}[min(max(int(ns)+1, 0), 4)] }
	r := &f.recs[n]
	if r.nameNS >= 0 && rank(ns) <= rank(r.nameNS) {
		return
	}
	u := make([]uint16, l)
	for i := range u {
		u[i] = le.Uint16(v[66+2*i:])
	}
	r.name = strings.Map(func(c rune) rune {
		if c == '/' || c == 0 {
			return '\ufffd'
		}
		return c
	}, string(utf16.Decode(u)))
	r.parent = int64(le.Uint64(v) & (1<<48 - 1))
	r.nameNS = ns
}

// path is the path of record n, from the parents' names. A record without a name
// (mkntfs's reserved 12 to 15) is "<record n>"; a parent number out of range, or
// a loop, makes the path start with "?".
func (f *FS) path(n int64) string {
	var parts []string
	for d := 0; ; d++ {
		if n == root {
			break
		}
		if n < 0 || n >= int64(len(f.recs)) || d >= maxDepth {
			parts = append(parts, "?")
			break
		}
		r := f.recs[n]
		if r.name == "" {
			parts = append(parts, fmt.Sprintf("<record %d>", n))
			break
		}
		parts = append(parts, r.name)
		n = r.parent
	}
	elems := make([]string, 0, len(parts)+1)
	elems = append(elems, "/")
	for i := len(parts) - 1; i >= 0; i-- {
		elems = append(elems, parts[i])
	}
	return path.Join(elems...)
}

// readBitmap reads $Bitmap (record 6's data): a bit a cluster.
func (f *FS) readBitmap() {
	if f.bitmapExt == nil {
		return
	}
	f.bitmap = make([]byte, (f.clusters+7)/8)
	if !f.readAttr(f.bitmapExt, 0, f.bitmap) {
		f.bitmap = nil
	}
}

// readAttr reads len(b) bytes from byte off of an attribute mapped by ext: what
// no extent maps (sparse, or past the last) reads as zeros. It reports whether
// every mapped byte could be read.
func (f *FS) readAttr(ext []extent, off int64, b []byte) bool {
	clear(b)
	ok := true
	end := off + int64(len(b))
	for _, e := range ext {
		lo, hi := max(off, e.vcn*f.cluster), min(end, (e.vcn+e.n)*f.cluster)
		if lo >= hi || e.lcn < 0 {
			continue
		}
		at := e.lcn*f.cluster + lo - e.vcn*f.cluster
		if n, _ := f.r.ReadAt(b[lo-off:hi-off], at); int64(n) < hi-lo {
			ok = false
		}
	}
	return ok
}
