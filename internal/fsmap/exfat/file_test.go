package exfat

import (
	"bytes"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// Paths, Stat and ReadFile agree with the tree exfat-fuse wrote and showed while
// mounted: every path, its type, size and content, and its modification time; a
// deep path, a long name, a fragmented file and an empty one included. The
// fields exfat-fuse does not show (creation and access time, attributes, UTC
// offsets) are patched into an entry set and read back.
func TestFiles(t *testing.T) {
	t.Setenv("TZ", "UTC")
	when := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC) // an odd second: 2 s units and 100 × 10 ms
	type seen struct {
		dir   bool
		mtime time.Time
		data  []byte
	}
	tree := map[string]seen{}
	img := mkexfat(t, 64<<20, func(root string) {
		fsmaptest.Write(t, root, "/a/b/c/d/e/f/g/deep.bin", fsmaptest.Stamped("deep", 40000, 4096))
		fsmaptest.Write(t, root, "/Ünïcode ñame with a long name, longer than fifteen.txt", []byte("hello\n"))
		fsmaptest.Write(t, root, "/hole", make([]byte, 3*4096))
		fsmaptest.Write(t, root, "/after", make([]byte, 4096))
		os.Remove(filepath.Join(root, "hole"))
		fsmaptest.Write(t, root, "/frag.bin", fsmaptest.Stamped("frag", 10*4096, 4096)) // fills the hole, then goes on after /after
		fsmaptest.Write(t, root, "/empty", nil)
		fsmaptest.Write(t, root, "/patched.txt", []byte("p"))
		os.Chtimes(filepath.Join(root, "after"), when, when)
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
			fi, _ := d.Info()
			s := seen{dir: d.IsDir(), mtime: fi.ModTime()}
			if !d.IsDir() {
				s.data, _ = os.ReadFile(p)
			}
			tree[rel] = s
			return nil
		})
	})
	// patched.txt's entry set: found by its name entry, which follows the stream
	// extension; the file entry is 64 bytes before it.
	b, _ := os.ReadFile(img)
	name := []byte{0xc1, 0}
	for _, r := range "patched.txt" {
		name = append(name, byte(r), 0)
	}
	at := bytes.Index(b, name) - 64
	if at < 0 || b[at] != 0x85 {
		t.Fatalf("no entry set for patched.txt (at %d)", at)
	}
	e := b[at:]
	le.PutUint16(e[4:], 0x21)                                            // read-only, archive
	le.PutUint32(e[8:], (2023-1980)<<25|7<<21|8<<16|9<<11|10<<5|12/2)    // created 2023-07-08 09:10:12
	e[20], e[22] = 157, 0x80|0x7c                                        // + 1.57 s, UTC-01:00 (-4 × 15 min)
	le.PutUint32(e[16:], (2024-1980)<<25|2<<21|29<<16|23<<11|59<<5|58/2) // accessed 2024-02-29 23:59:58
	e[24] = 0x80 | 0x16                                                  // UTC+05:30
	sum := uint16(0)                                                     // the set checksum, skipping its own field
	for i := 0; i < 32*(1+int(e[1])); i++ {
		if i != 2 && i != 3 {
			sum = (sum<<15 | sum>>1) + uint16(e[i])
		}
	}
	le.PutUint16(e[2:], sum)
	os.WriteFile(img, b, 0o644)
	fsmaptest.Run(t, "fsck.exfat", "-n", img)

	fs, _ := fsmaptest.Open(t, img, Open)
	paths, err := fs.Paths()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(slices.Sorted(maps.Keys(tree)), slices.Sorted(maps.Keys(paths))); diff != "" {
		t.Errorf("paths, as mounted (-) and Paths (+):\n%s", diff)
	}
	for p, want := range tree {
		st, err := fs.Stat(p)
		if err != nil {
			t.Errorf("Stat %s: %v", p, err)
			continue
		}
		if want.dir != (st.Type == "directory") {
			t.Errorf("%s: type %s", p, st.Type)
		}
		if p != "/" && !strings.HasPrefix(st.Mtime, want.mtime.UTC().Format("2006-01-02T15:04:05.00")) {
			t.Errorf("%s: mtime %s, mounted %s", p, st.Mtime, want.mtime.UTC().Format(time.RFC3339Nano))
		}
		if want.dir {
			continue
		}
		var got bytes.Buffer
		if err := fs.ReadFile(p, &got); err != nil {
			t.Errorf("ReadFile %s: %v", p, err)
		}
		if !bytes.Equal(got.Bytes(), want.data) || st.Size != int64(len(want.data)) {
			t.Errorf("%s: read %d bytes (size %d), wrote %d", p, got.Len(), st.Size, len(want.data))
		}
	}
	st, _ := fs.Stat("/after")
	if want := "2021-03-04T05:06:07.00+00:00"; st.Mtime != want { // exfat-fuse: whole seconds, UTC offset 0
		t.Errorf("/after: mtime %s, want %s", st.Mtime, want)
	}
	st, _ = fs.Stat("/patched.txt")
	if st.Attrs != "read-only archive" || st.Crtime != "2023-07-08T09:10:13.57-01:00" || st.Atime != "2024-02-29T23:59:58+05:30" {
		t.Errorf("/patched.txt: attributes %q, crtime %q, atime %q; want \"read-only archive\", 2023-07-08T09:10:13.57-01:00, 2024-02-29T23:59:58+05:30",
			st.Attrs, st.Crtime, st.Atime)
	}
}

// A filesystem vmb did not write cannot make Paths, Stat or ReadFile panic or
// loop, and ReadFile writes no more than the size Stat reports.
func FuzzFiles(f *testing.F) {
	f.Add(seedImage(f))
	f.Fuzz(func(t *testing.T, disk []byte) {
		fs, err := Open(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		paths, err := fs.Paths()
		if err != nil {
			return
		}
		for p := range paths {
			st, err := fs.Stat(p)
			if err != nil {
				continue
			}
			if st.Size < 0 {
				t.Errorf("%s: size %d", p, st.Size)
			}
			if st.Type != "file" {
				continue
			}
			fsmaptest.CheckRead(t, p, st.Size, func(w io.Writer) error { return fs.ReadFile(p, w) })
		}
	})
}
