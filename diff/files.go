package diff

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	textdiff "github.com/rogpeppe/go-internal/diff"

	"vmb.dev/vmb/internal/fsmap"
)

// Filesystem is level 3 for one filesystem that differs: which of its files do.
type Filesystem struct {
	Partition string     `json:"partition,omitempty"`
	FS        string     `json:"fs"`
	Error     string     `json:"error,omitempty"` // why its files could not be compared
	Files     []FileDiff `json:"files"`           // sorted by path; empty: no file differs
}

// FileDiff is how one path differs.
type FileDiff struct {
	Path   string `json:"path"`
	Change string `json:"change"` // added, removed or changed
	// Fields: for a changed path the fields that differ; for an added or removed
	// one what it is (type, mode, owner, content size and digest, target), one side.
	Fields Fields `json:"fields"`
}

// Fields are the attributes of a path that vmb diff compares, each as its value
// in A and in B.
type Fields struct {
	Type    *Pair    `json:"type,omitempty"`
	Content *Content `json:"content,omitempty"`
	Target  *Pair    `json:"target,omitempty"` // a symlink's
	Device  *Pair    `json:"device,omitempty"` // "major:minor"
	Mode    *Pair    `json:"mode,omitempty"`   // permission bits, octal
	Owner   *Pair    `json:"owner,omitempty"`  // "uid:gid"
	// Attributes are the DOS attributes set (FAT, exFAT): "read-only hidden system archive".
	Attributes *Pair           `json:"attributes,omitempty"`
	Links      *Pair           `json:"links,omitempty"` // hard-link count
	Mtime      *Pair           `json:"mtime,omitempty"`
	Ctime      *Pair           `json:"ctime,omitempty"`
	Atime      *Pair           `json:"atime,omitempty"`
	Crtime     *Pair           `json:"crtime,omitempty"`
	Xattrs     map[string]Pair `json:"xattrs,omitempty"` // by name; a side left out has none
}

// Pair is a field's value in A and in B ("" where a side has none).
type Pair struct {
	A string `json:"a,omitempty"`
	B string `json:"b,omitempty"`
}

// Content is how a file's content differs: sizes, SHA-256 digests, and for small
// text files a unified diff.
type Content struct {
	ASize   int64  `json:"a_size"`
	BSize   int64  `json:"b_size"`
	ADigest string `json:"a_digest,omitempty"`
	BDigest string `json:"b_digest,omitempty"`
	Diff    string `json:"diff,omitempty"`
}

// maxTextDiff is the largest file that gets a text diff.
const maxTextDiff = 64 << 10

// fileTree is a filesystem whose files level 3 compares: ext2/3/4, FAT12/16/32
// and exFAT implement it (internal/fsmap).
type fileTree interface {
	// Paths lists every path from the root ("/") with its identity: a path whose
	// identity is the same in both snapshots, and that no differing range names,
	// has the same content (ext: the inode number; FAT: a hash of the size and
	// cluster chain).
	Paths() (map[string]uint64, error)
	// Stat reads what the filesystem records of a path it listed.
	Stat(p string) (*fsmap.File, error)
	// ReadFile writes a regular file's content.
	ReadFile(p string, w io.Writer) error
}

// named is what the differing ranges of one filesystem name, in A or in B.
type named struct {
	ids   map[uint64]bool // inodes
	paths map[string]bool
}

// file is what level 3 knows of one path in one filesystem.
type file struct {
	st      *fsmap.File
	digest  string
	content []byte // when small enough for a text diff
}

// compareFiles compares the trees of a and b path by path. A path whose identity
// is the same in both and that the differing ranges do not name has the same
// content, which is then not read.
func compareFiles(ctx context.Context, a, b fileTree, t named) ([]FileDiff, error) {
	ta, err := a.Paths()
	if err != nil {
		return nil, fmt.Errorf("A: %w", err)
	}
	tb, err := b.Paths()
	if err != nil {
		return nil, fmt.Errorf("B: %w", err)
	}
	paths := make([]string, 0, len(tb))
	for p := range tb {
		paths = append(paths, p)
	}
	for p := range ta {
		if _, ok := tb[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	out := []FileDiff{}
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		ia, inA := ta[p]
		ib, inB := tb[p]
		readContent := !inA || !inB || ia != ib || t.ids[ib] || t.paths[p]
		var fa, fb *file
		if inA {
			if fa, err = readFile(a, p, readContent); err != nil {
				return nil, fmt.Errorf("A %s: %w", p, err)
			}
		}
		if inB {
			if fb, err = readFile(b, p, readContent); err != nil {
				return nil, fmt.Errorf("B %s: %w", p, err)
			}
		}
		switch {
		case !inA:
			out = append(out, FileDiff{Path: p, Change: "added", Fields: describeFile(fb, false)})
		case !inB:
			out = append(out, FileDiff{Path: p, Change: "removed", Fields: describeFile(fa, true)})
		default:
			if f, differ := compareFile(p, fa, fb, readContent); differ {
				out = append(out, FileDiff{Path: p, Change: "changed", Fields: f})
			}
		}
	}
	return out, nil
}

// readFile reads path p's attributes, and its content if asked (never a
// directory's: entries are compared as paths).
func readFile(fs fileTree, p string, content bool) (*file, error) {
	st, err := fs.Stat(p)
	if err != nil {
		return nil, err
	}
	f := &file{st: st}
	if st.Type != "file" || !content {
		return f, nil
	}
	h := sha256.New()
	var small bytes.Buffer
	w := io.Writer(h)
	if st.Size <= maxTextDiff {
		w = io.MultiWriter(h, &small)
	}
	if err := fs.ReadFile(p, w); err != nil {
		return nil, err
	}
	f.digest = hex.EncodeToString(h.Sum(nil))
	if st.Size <= maxTextDiff {
		f.content = small.Bytes()
	}
	return f, nil
}

// describeFile is what an added (or, with inA, removed) path is.
func describeFile(f *file, inA bool) Fields {
	side := func(v string) *Pair {
		if v == "" {
			return nil
		}
		if inA {
			return &Pair{A: v}
		}
		return &Pair{B: v}
	}
	st := f.st
	fl := Fields{Type: side(st.Type), Mode: side(st.Mode), Owner: side(st.Owner), Attributes: side(st.Attrs),
		Target: side(st.Target), Device: side(st.Device)}
	if st.Type == "file" {
		fl.Content = &Content{BSize: st.Size, BDigest: f.digest}
		if inA {
			fl.Content = &Content{ASize: st.Size, ADigest: f.digest}
		}
	}
	return fl
}

// compareFile lists the fields in which a and b differ.
func compareFile(p string, a, b *file, withContent bool) (Fields, bool) {
	var fl Fields
	differ := false
	pair := func(x, y string) *Pair {
		if x == y {
			return nil
		}
		differ = true
		return &Pair{x, y}
	}
	sa, sb := a.st, b.st
	fl.Type = pair(sa.Type, sb.Type)
	fl.Mode = pair(sa.Mode, sb.Mode)
	fl.Owner = pair(sa.Owner, sb.Owner)
	fl.Attributes = pair(sa.Attrs, sb.Attrs)
	fl.Target = pair(sa.Target, sb.Target)
	fl.Device = pair(sa.Device, sb.Device)
	if sa.Type != "directory" && sb.Type != "directory" { // a directory's count follows its subdirectories
		fl.Links = pair(sa.Links, sb.Links)
	}
	fl.Mtime = pair(sa.Mtime, sb.Mtime)
	fl.Ctime = pair(sa.Ctime, sb.Ctime)
	fl.Atime = pair(sa.Atime, sb.Atime)
	fl.Crtime = pair(sa.Crtime, sb.Crtime)
	for name, v := range sb.Xattrs {
		if w, ok := sa.Xattrs[name]; !ok || v != w {
			mapAdd(&fl.Xattrs, name, Pair{w, v})
		}
	}
	for name, v := range sa.Xattrs {
		if _, ok := sb.Xattrs[name]; !ok {
			mapAdd(&fl.Xattrs, name, Pair{A: v})
		}
	}
	differ = differ || len(fl.Xattrs) > 0
	if withContent && sa.Type == "file" && sb.Type == "file" && (sa.Size != sb.Size || a.digest != b.digest) {
		differ = true
		fl.Content = &Content{ASize: sa.Size, BSize: sb.Size, ADigest: a.digest, BDigest: b.digest}
		if text(a) && text(b) {
			d := textdiff.Diff("a"+p, a.content, "b"+p, b.content)
			_, d, _ = bytes.Cut(d, []byte("\n")) // the "diff a b" line
			fl.Content.Diff = string(d)
		}
	}
	return fl, differ
}

func mapAdd(m *map[string]Pair, k string, v Pair) {
	if *m == nil {
		*m = map[string]Pair{}
	}
	(*m)[k] = v
}

// text reports whether f's content is small text: valid UTF-8 without NUL.
func text(f *file) bool {
	return f.content != nil && int64(len(f.content)) == f.st.Size && utf8.Valid(f.content) && bytes.IndexByte(f.content, 0) < 0
}

// writeFiles writes level 3 for people.
func writeFiles(w io.Writer, fss []Filesystem) {
	for _, fs := range fss {
		where := strings.TrimSpace(fs.Partition + " " + fs.FS)
		switch {
		case fs.Error != "":
			fmt.Fprintf(w, "files (%s): not compared: %s\n", where, fs.Error)
			continue
		case len(fs.Files) == 0:
			fmt.Fprintf(w, "files (%s): no file differs\n", where)
			continue
		}
		fmt.Fprintf(w, "files (%s):\n", where)
		for _, f := range fs.Files {
			fmt.Fprintf(w, "  %s: %s\n", f.Path, fileLine(f))
			if c := f.Fields.Content; c != nil && c.Diff != "" {
				for _, l := range strings.SplitAfter(strings.TrimSuffix(c.Diff, "\n"), "\n") {
					fmt.Fprintf(w, "    %s", strings.TrimSuffix(l, "\n")+"\n")
				}
			}
		}
	}
}

// fileLine is the one line that says how a path differs.
func fileLine(f FileDiff) string {
	fl := f.Fields
	if f.Change != "changed" {
		one := func(p *Pair) string {
			if p == nil {
				return ""
			}
			return p.A + p.B
		}
		parts := []string{one(fl.Type)}
		if t := one(fl.Target); t != "" {
			parts[0] += " -> " + t
		}
		if d := one(fl.Device); d != "" {
			parts[0] += " " + d
		}
		for _, p := range []*Pair{fl.Mode, fl.Owner, fl.Attributes} { // those the filesystem has
			if v := one(p); v != "" {
				parts = append(parts, v)
			}
		}
		if c := fl.Content; c != nil {
			parts = append(parts, FormatSize(c.ASize+c.BSize))
		}
		return fmt.Sprintf("%s (%s)", f.Change, strings.Join(parts, ", "))
	}
	var parts []string
	add := func(name string, p *Pair) {
		if p != nil {
			parts = append(parts, fmt.Sprintf("%s %s -> %s", name, orNone(p.A), orNone(p.B)))
		}
	}
	add("type", fl.Type)
	if c := fl.Content; c != nil {
		if c.Diff != "" {
			parts = append(parts, fmt.Sprintf("content (%s -> %s)", FormatSize(c.ASize), FormatSize(c.BSize)))
		} else {
			parts = append(parts, fmt.Sprintf("content (%s -> %s, sha256 %.12s -> %.12s)", FormatSize(c.ASize), FormatSize(c.BSize), c.ADigest, c.BDigest))
		}
	}
	add("target", fl.Target)
	add("device", fl.Device)
	add("mode", fl.Mode)
	add("owner", fl.Owner)
	add("attributes", fl.Attributes)
	add("links", fl.Links)
	add("mtime", fl.Mtime)
	add("ctime", fl.Ctime)
	add("atime", fl.Atime)
	add("crtime", fl.Crtime)
	names := make([]string, 0, len(fl.Xattrs))
	for n := range fl.Xattrs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := fl.Xattrs[n]
		switch {
		case p.A == "" && p.B != "":
			parts = append(parts, fmt.Sprintf("xattr %s added (%s)", n, xattrValue(p.B)))
		case p.B == "" && p.A != "":
			parts = append(parts, fmt.Sprintf("xattr %s removed (%s)", n, xattrValue(p.A)))
		default:
			parts = append(parts, fmt.Sprintf("xattr %s %s -> %s", n, xattrValue(p.A), xattrValue(p.B)))
		}
	}
	return strings.Join(parts, ", ")
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// xattrValue shows a value quoted when it is short text, else by size and digest.
func xattrValue(v string) string {
	if len(v) <= 64 && utf8.ValidString(v) {
		return strconv.Quote(v)
	}
	return fmt.Sprintf("%s, sha256 %.12x", FormatSize(int64(len(v))), sha256.Sum256([]byte(v)))
}
