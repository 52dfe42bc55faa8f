package fat

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// mattribs is what mattrib -/ says of every path: the DOS attributes set, as Stat
// names them.
func mattribs(t *testing.T, img string) map[string]string {
	out := run(t, "mattrib", "-/", "-i", img, "::/")
	words := map[rune]string{'R': "read-only", 'H': "hidden", 'S': "system", 'A': "archive"}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		flags, p, ok := strings.Cut(line, "::")
		if !ok {
			t.Fatalf("mattrib: %q", line)
		}
		var attrs []string
		for _, bit := range "RHSA" { // Stat's order
			if strings.ContainsRune(flags, bit) {
				attrs = append(attrs, words[bit])
			}
		}
		got[p] = strings.Join(attrs, " ")
	}
	return got
}

// mdirTime is the modification time mdir -a prints for file p, to the minute.
func mdirTime(t *testing.T, img, p string) string {
	out := run(t, "mdir", "-a", "-i", img, "::"+p)
	m := regexp.MustCompile(`(\d{4}-\d\d-\d\d) +(\d+):(\d\d)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("mdir %s: no time in\n%s", p, out)
	}
	return fmt.Sprintf("%sT%02s:%s", m[1], m[2], m[3])
}

// Paths, Stat and ReadFile agree with mtools: every path and its attributes with
// mattrib, content (so size) with mtype, modification times with mdir and the
// source file's time; a long name, a deep path and a fragmented file included.
// The times mtools cannot show (creation to 10 ms, access date) are patched into
// the directory entry and read back.
func TestFiles(t *testing.T) {
	need(t)
	t.Setenv("TZ", "UTC") // mtools writes local time
	for _, tc := range []struct {
		typ  string
		size int64
		args []string
	}{
		{"FAT12", 8 << 20, []string{"-F", "12"}},
		{"FAT16", 32 << 20, []string{"-F", "16"}},
		{"FAT32", 64 << 20, []string{"-F", "32"}},
	} {
		t.Run(tc.typ, func(t *testing.T) {
			img := mkfat(t, tc.size, tc.args...)
			deep := "/z/y/x/w/v/u/t/s/r/q"
			for p := ""; p != deep; {
				p = deep[:len(p)+2]
				run(t, "mmd", "-i", img, "::"+p)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 1500) // 24000 B
			src := filepath.Join(t.TempDir(), "motd")
			os.WriteFile(src, []byte("hello\n"), 0o644)
			when := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
			os.Chtimes(src, when, when)
			run(t, "mcopy", "-m", "-i", img, src, "::/A long name, longer than 8.3.txt")
			put(t, img, "::"+deep+"/deep.bin", big[:3000])
			put(t, img, "::/a", big[:5000])
			put(t, img, "::/b", big[:5000])
			put(t, img, "::/a2", big[:5000])
			run(t, "mdel", "-i", img, "::/b")
			forgetNextFree(t, img)
			frag := bytes.Repeat([]byte("fragmented\n"), 3000)
			put(t, img, "::/frag.txt", frag) // fills b's clusters, then goes on after a2's
			put(t, img, "::/empty", nil)
			put(t, img, "::/crtime.txt", []byte("c"))
			run(t, "mattrib", "-i", img, "+r", "+h", "+s", "-a", "::/a2")
			if cs := clusters(t, img, "::/frag.txt"); cs[len(cs)-1]-cs[0] == int64(len(cs)-1) {
				t.Fatalf("/frag.txt is not fragmented: clusters %v", cs)
			}

			// Creation time 2023-07-08 09:10:12 + 1.57 s, access date 2024-02-29.
			b, _ := os.ReadFile(img)
			at := bytes.Index(b, []byte("CRTIME  TXT"))
			if at < 0 {
				t.Fatal("no entry CRTIME  TXT")
			}
			e := b[at : at+32]
			e[13] = 157
			le.PutUint16(e[14:], 9<<11|10<<5|12/2)
			le.PutUint16(e[16:], (2023-1980)<<9|7<<5|8)
			le.PutUint16(e[18:], (2024-1980)<<9|2<<5|29)
			os.WriteFile(img, b, 0o644)
			run(t, "fsck.fat", "-n", img)

			fs, _ := fsmaptest.Open(t, img, Open)
			paths, err := fs.Paths()
			if err != nil {
				t.Fatal(err)
			}
			attrs := mattribs(t, img)
			if diff := cmp.Diff(slices.Sorted(maps.Keys(attrs)), slices.Sorted(maps.Keys(paths))); diff != "" {
				t.Errorf("paths, mattrib -/ (-) and Paths (+):\n%s", diff)
			}
			for p, want := range attrs {
				st, err := fs.Stat(p)
				if err != nil {
					t.Errorf("Stat %s: %v", p, err)
					continue
				}
				if st.Attrs != want {
					t.Errorf("%s: attributes %q, mattrib says %q", p, st.Attrs, want)
				}
				isDir := p == "/" || strings.HasPrefix(deep+"/", p+"/")
				if isDir != (st.Type == "directory") || !isDir && st.Type != "file" {
					t.Errorf("%s: type %s", p, st.Type)
				}
				if isDir {
					continue
				}
				var got bytes.Buffer
				if err := fs.ReadFile(p, &got); err != nil {
					t.Errorf("ReadFile %s: %v", p, err)
				}
				if want := run(t, "mtype", "-i", img, "::"+p); got.String() != want || st.Size != int64(len(want)) {
					t.Errorf("%s: %d bytes (size %d), mtype prints %d", p, got.Len(), st.Size, len(want))
				}
				if m := mdirTime(t, img, p); !strings.HasPrefix(st.Mtime, m+":") {
					t.Errorf("%s: mtime %s, mdir says %s", p, st.Mtime, m)
				}
			}
			st, _ := fs.Stat("/A long name, longer than 8.3.txt")
			if want := "2021-03-04T05:06:06"; st.Mtime != want { // 2 s units
				t.Errorf("mtime %q, want %q", st.Mtime, want)
			}
			st, _ = fs.Stat("/crtime.txt")
			if st.Crtime != "2023-07-08T09:10:13.57" || st.Atime != "2024-02-29" {
				t.Errorf("crtime %q, atime %q; want 2023-07-08T09:10:13.57, 2024-02-29", st.Crtime, st.Atime)
			}

			// Identities: a file's changes with its chain, not with its clusters' bytes.
			b, _ = os.ReadFile(img)
			g := fsckGeometry(t, img)
			a2 := clusters(t, img, "::/a2")[0]
			b[g.data+(a2-2)*g.cluster] ^= 0xff
			fs2, err := Open(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			paths2, _ := fs2.Paths()
			if diff := cmp.Diff(paths, paths2); diff != "" {
				t.Errorf("identities after a content change (-before +after):\n%s", diff)
			}
			run(t, "mdel", "-i", img, "::/a", "::/frag.txt")
			forgetNextFree(t, img)
			put(t, img, "::/frag.txt", frag) // the same bytes, from a's clusters on
			fs3, _ := fsmaptest.Open(t, img, Open)
			paths2, _ = fs3.Paths()
			if paths2["/frag.txt"] == paths["/frag.txt"] || paths2["/a2"] != paths["/a2"] {
				t.Errorf("identities of /frag.txt %x -> %x (want a change), of /a2 %x -> %x (want none)",
					paths["/frag.txt"], paths2["/frag.txt"], paths["/a2"], paths2["/a2"])
			}
		})
	}
}

// A chain that loops back, or ends before the file's size, is an error for
// ReadFile, not a hang.
func TestReadFileBrokenChain(t *testing.T) {
	need(t)
	img := mkfat(t, 32<<20, "-F", "16")
	put(t, img, "::/f", bytes.Repeat([]byte("x"), 8192))
	cs := clusters(t, img, "::/f")
	g := fsckGeometry(t, img)
	b := fsmaptest.ReadImage(t, img)
	for _, tc := range []struct {
		name string
		next uint16 // the second cluster's FAT entry
		want string
	}{
		{"loop", uint16(cs[0]), "loops back"},
		{"free", 0, "ends after 2 of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := slices.Clone(b)
			le.PutUint16(b[g.fat1+2*cs[1]:], tc.next)
			fs, err := Open(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fs.Paths(); err != nil {
				t.Fatal(err)
			}
			err = fs.ReadFile("/f", io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("ReadFile: %v, want an error that says %q", err, tc.want)
			}
		})
	}
}

// A filesystem vmb did not write cannot make Paths, Stat or ReadFile panic or
// loop, and ReadFile writes no more than the size Stat reports.
func FuzzFiles(f *testing.F) {
	need(f)
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
				t.Fatalf("Stat %s of a listed path: %v", p, err)
			}
			if st.Type != "file" {
				continue
			}
			fsmaptest.CheckRead(t, p, st.Size, func(w io.Writer) error { return fs.ReadFile(p, w) })
		}
	})
}
