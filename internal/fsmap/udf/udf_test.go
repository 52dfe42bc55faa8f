package udf

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap"
	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// mkudffs makes a UDF image of size bytes with mkudffs (and args), and returns
// its path.
func mkudffs(t testing.TB, size int64, args ...string) string {
	fsmaptest.Need(t, "udftools and genisoimage", "mkudffs", "udfinfo")
	img := filepath.Join(t.TempDir(), "udf.img")
	fsmaptest.Blank(t, img, size)
	fsmaptest.Run(t, "mkudffs", append(args, img)...)
	return img
}

// layout is what udfinfo says of an image: its block size, free blocks, and
// where its structures lie ("VRS", "MVDS", "RVDS", "LVID", "ANCHOR", "PSPACE"),
// in blocks.
type layout struct {
	bs, free int64
	at       map[string][][2]int64
}

func udfinfo(t testing.TB, img string) layout {
	out := fsmaptest.Run(t, "udfinfo", img)
	l := layout{at: map[string][][2]int64{}}
	num := func(key string) int64 {
		m := regexp.MustCompile(`(?m)^` + key + `=(\d+)$`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("udfinfo: no %s in\n%s", key, out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	l.bs, l.free = num("blocksize"), num("freeblocks")
	for _, m := range regexp.MustCompile(`(?m)^start=(\d+), blocks=(\d+), type=(\w+)$`).FindAllStringSubmatch(out, -1) {
		start, _ := strconv.ParseInt(m[1], 10, 64)
		n, _ := strconv.ParseInt(m[2], 10, 64)
		l.at[m[3]] = append(l.at[m[3]], [2]int64{start, n})
	}
	return l
}

var names = map[string]string{
	"VRS":    "volume recognition sequence",
	"MVDS":   "main volume descriptor sequence",
	"RVDS":   "reserve volume descriptor sequence",
	"LVID":   "logical volume integrity descriptor",
	"ANCHOR": "anchor volume descriptor pointer",
}

// checkLayout checks Locate against udfinfo's layout.
func checkLayout(t *testing.T, fs *FS, l layout) {
	t.Helper()
	for typ, name := range names {
		if len(l.at[typ]) == 0 {
			t.Errorf("udfinfo lists no %s", typ)
		}
		for _, e := range l.at[typ] {
			want := []fsmap.Span{{Off: e[0] * l.bs, Len: e[1] * l.bs, Structure: name}}
			if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, e[0]*l.bs, e[1]*l.bs)); diff != "" {
				t.Errorf("%s at block %d (-want +got):\n%s", typ, e[0], diff)
			}
		}
	}
}

// Locate agrees with udfinfo on where mkudffs put the volume's descriptors and
// on how many blocks are free; the file set descriptor and the root's file entry
// lie in the partition.
func TestLayout(t *testing.T) {
	for _, args := range [][]string{nil, {"-b", "2048"}, {"-b", "512"}} {
		t.Run(fmt.Sprint(args), func(t *testing.T) {
			const size = 32<<20 + 1000
			img := mkudffs(t, size, args...)
			l := udfinfo(t, img)
			fs, _ := fsmaptest.Open(t, img, Open)
			if fs.BlockSize() != l.bs {
				t.Errorf("block size %d, udfinfo says %d", fs.BlockSize(), l.bs)
			}
			checkLayout(t, fs, l)
			part := l.at["PSPACE"][0]
			all := fsmaptest.Locate(t, fs, 0, size)
			fsmaptest.Tile(t, all, size)
			free := int64(0)
			seen := map[string]bool{}
			for _, s := range all {
				seen[fmt.Sprintf("%s %v", s.Structure, s.Paths)] = true
				switch s.Structure {
				case "free blocks":
					free += s.Len / l.bs
					if s.Off < part[0]*l.bs || s.Off+s.Len > (part[0]+part[1])*l.bs {
						t.Errorf("free blocks %+v outside the partition %v", s, part)
					}
				case "allocated, owner unknown", "blocks, allocation unknown":
					t.Errorf("span %+v", s)
				}
			}
			if free != l.free {
				t.Errorf("%d free blocks, udfinfo says %d", free, l.free)
			}
			for _, w := range []string{"file set descriptor []", "file entry [/]", "space bitmap []", "past the last block []"} {
				if !seen[w] {
					t.Errorf("no span %q", w)
				}
			}
		})
	}
}

// Locate agrees with the bytes genisoimage -udf wrote on which blocks hold which
// file, names a file entry for every path, and agrees with udfinfo on the layout.
func TestFiles(t *testing.T) {
	fsmaptest.Need(t, "udftools and genisoimage", "genisoimage", "udfinfo")
	src := filepath.Join(t.TempDir(), "src")
	files := map[string]int{"/d/e/f.bin": 30000, "/x": 100, "/Ünïcode ñame with a long name.txt": 5000}
	for i := range 40 {
		files[fmt.Sprintf("/many/a file with a long name %02d", i)] = 3000
	}
	for p, n := range files {
		os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755)
		os.WriteFile(filepath.Join(src, p), fsmaptest.Stamped(p, n, 2048), 0o644)
	}
	img := filepath.Join(t.TempDir(), "udf.iso")
	fsmaptest.Run(t, "genisoimage", "-quiet", "-udf", "-input-charset", "utf-8", "-o", img, src)
	l := udfinfo(t, img)
	fs, size := fsmaptest.Open(t, img, Open)
	checkLayout(t, fs, l)
	b := fsmaptest.ReadImage(t, img)
	found := map[string]int{}
	for blk := int64(0); blk*2048 < size; blk++ {
		m := fsmaptest.StampRE.FindSubmatch(b[blk*2048:])
		if m == nil {
			continue
		}
		p := string(m[1])
		found[p]++
		want := []fsmap.Span{{Off: blk*2048 + 7, Len: 2048 - 9, Structure: "file data", Paths: []string{p}}}
		if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, want[0].Off, want[0].Len)); diff != "" {
			t.Errorf("block %d, block %s of %s (-want +got):\n%s", blk, m[2], p, diff)
		}
	}
	entries := map[string]bool{}
	for p, n := range files {
		if want := (n + 2047) / 2048; found[p] != want {
			t.Errorf("%s: %d stamped blocks, want %d", p, found[p], want)
		}
		for q := p; q != "/"; q = filepath.Dir(q) {
			entries[q] = true
		}
	}
	entries["/"] = true
	all := fsmaptest.Locate(t, fs, 0, size)
	fsmaptest.Tile(t, all, size)
	got := map[string]bool{}
	for _, s := range all {
		if s.Structure == "file entry" {
			for k := int64(0); k < s.Len/2048; k++ { // one a block, merged when of one path
				got[s.Paths[0]] = true
			}
		}
	}
	if diff := cmp.Diff(entries, got); diff != "" {
		t.Errorf("file entries (-want +got):\n%s", diff)
	}
}

// A directory whose entry names itself, or its parent, ends the walk.
func TestLoop(t *testing.T) {
	fsmaptest.Need(t, "udftools and genisoimage", "genisoimage")
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "d"), 0o755)
	os.WriteFile(filepath.Join(src, "d", "f"), []byte("f"), 0o644)
	img := filepath.Join(t.TempDir(), "udf.iso")
	fsmaptest.Run(t, "genisoimage", "-quiet", "-udf", "-o", img, src)
	b := fsmaptest.ReadImage(t, img)
	// /d's file identifier of f: point its ICB at /d's own file entry (the
	// walk reads no tag checksum of a file identifier).
	fs, _ := fsmaptest.Open(t, img, Open)
	var dEntry, fFID int64 = -1, -1
	for _, s := range fsmaptest.Locate(t, fs, 0, int64(len(b))) {
		if s.Structure == "file entry" && s.Paths[0] == "/d" {
			dEntry = s.Off/2048 - fs.part.start
		}
		if i := bytes.Index(b[s.Off:s.Off+s.Len], []byte{8, 'f'}); s.Structure == "directory" && s.Paths[0] == "/d" && i >= 0 {
			fFID = s.Off + int64(i) - 38 // the name follows 38 bytes, and no implementation use
		}
	}
	if dEntry < 0 || fFID < 38 {
		t.Fatalf("no /d (entry %d, file identifier at %d)", dEntry, fFID)
	}
	b[fFID+24], b[fFID+25], b[fFID+26], b[fFID+27] = byte(dEntry), byte(dEntry>>8), 0, 0
	fs, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range fsmaptest.Locate(t, fs, 0, int64(len(b))) {
		if s.Structure == "file entry" && s.Paths[0] != "/" && s.Paths[0] != "/d" {
			t.Errorf("span %+v: /d/f is /d now", s)
		}
	}
}

// A volume vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	img := mkudffs(f, 160<<10, "-b", "512")
	b := fsmaptest.ReadImage(f, img)
	fsmaptest.FuzzLocate(f, b, Open, "volume")
}

// Open and a Locate of the whole volume (which walks every directory) on an image
// holding 3000 files in 30 directories.
func BenchmarkLocate(b *testing.B) {
	fsmaptest.Need(b, "udftools and genisoimage", "genisoimage")
	src := filepath.Join(b.TempDir(), "src")
	fsmaptest.BenchTree(b, src)
	img := filepath.Join(b.TempDir(), "udf.iso")
	fsmaptest.Run(b, "genisoimage", "-quiet", "-udf", "-o", img, src)
	fsmaptest.BenchLocateAll(b, img, Open)
}
