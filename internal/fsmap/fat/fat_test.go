package fat

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap"
	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

func need(t testing.TB) {
	t.Helper()
	fsmaptest.Need(t, "dosfstools and mtools", "mkfs.fat", "fsck.fat", "mcopy", "mmd", "mdel", "mshowfat")
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "MTOOLS_SKIP_CHECK=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// mkfat makes a FAT image of size bytes with mkfs.fat (args select the variant),
// and returns its path.
func mkfat(t testing.TB, size int64, args ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fat.img")
	fsmaptest.Blank(t, img, size)
	run(t, "mkfs.fat", append(append([]string{"-i", "01234567"}, args...), img)...)
	return img
}

// put copies content into the image at path p (mtools syntax: "::/a/b").
func put(t testing.TB, img, p string, content []byte) {
	t.Helper()
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, content, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "mcopy", "-i", img, src, p)
}

// forgetNextFree clears FAT32's hint of where the next free cluster is, so that
// mtools allocates from the first free cluster, as it does on FAT12/16.
func forgetNextFree(t testing.TB, img string) {
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	bs := make([]byte, 512)
	f.ReadAt(bs, 0)
	if bs[22] != 0 || bs[23] != 0 {
		return // FAT12/16: no FSInfo
	}
	fsInfo := int64(bs[48]) | int64(bs[49])<<8
	f.WriteAt(bytes.Repeat([]byte{0xff}, 8), fsInfo*512+488) // free count and next free: unknown
}

// geometry is what fsck.fat -v says of an image's layout, in bytes.
type geometry struct {
	fat1, fatLen, root, data, cluster, clusters, total int64
}

func fsckGeometry(t testing.TB, img string) geometry {
	out := run(t, "fsck.fat", "-n", "-v", img)
	num := func(re string) int64 {
		m := regexp.MustCompile(re).FindStringSubmatch(out)
		if m == nil {
			return -1
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	g := geometry{
		fat1:     num(`First FAT starts at byte (\d+)`),
		fatLen:   num(`(\d+) bytes per FAT`),
		root:     num(`Root directory starts at byte (\d+)`),
		data:     num(`Data area starts at byte (\d+)`),
		cluster:  num(`(\d+) bytes per cluster`),
		clusters: num(`(\d+) data clusters`),
		total:    num(`(\d+) sectors total`) * num(`(\d+) bytes per logical sector`),
	}
	if g.fat1 < 0 || g.fatLen < 0 || g.data < 0 || g.cluster <= 0 || g.clusters <= 0 {
		t.Fatalf("fsck.fat -v: no geometry in\n%s", out)
	}
	return g
}

// clusters lists the clusters of a file, as mshowfat prints them: "<4-13> <20>".
func clusters(t testing.TB, img, p string) []int64 {
	out := run(t, "mshowfat", "-i", img, p)
	var cs []int64
	for _, m := range regexp.MustCompile(`<(\d+)(?:-(\d+))?>`).FindAllStringSubmatch(out, -1) {
		a, _ := strconv.ParseInt(m[1], 10, 64)
		b := a
		if m[2] != "" {
			b, _ = strconv.ParseInt(m[2], 10, 64)
		}
		for c := a; c <= b; c++ {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		t.Fatalf("mshowfat %s: no clusters in %q", p, out)
	}
	return cs
}

// Locate agrees with fsck.fat on where the FATs, the root directory and the data
// lie, and with mshowfat on which clusters hold a file: long names, a directory's
// path and a fragmented file included.
func TestLocate(t *testing.T) {
	need(t)
	for _, tc := range []struct {
		typ  string
		size int64
		args []string
	}{
		{"FAT12", 8 << 20, []string{"-F", "12"}},
		{"FAT16", 32 << 20, []string{"-F", "16"}},
		{"FAT32", 64 << 20, []string{"-F", "32"}},
		{"FAT32", 300<<20 + 3*512, []string{"-F", "32", "-s", "8"}}, // 4 KiB clusters, sectors after the last
	} {
		t.Run(tc.typ+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			img := mkfat(t, tc.size, tc.args...)
			run(t, "mmd", "-i", img, "::/EFI", "::/EFI/BOOT")
			big := bytes.Repeat([]byte("0123456789abcdef"), 1500) // 24000 B
			put(t, img, "::/EFI/BOOT/A long name.bin", big)
			put(t, img, "::/a", big[:5000])
			put(t, img, "::/b", big[:5000])
			put(t, img, "::/a2", big[:5000])
			run(t, "mdel", "-i", img, "::/b")
			forgetNextFree(t, img)
			put(t, img, "::/Ünïcode ñame.txt", big) // fills b's clusters, then goes on after a2's
			run(t, "fsck.fat", "-n", img)
			g := fsckGeometry(t, img)
			fs, _ := fsmaptest.Open(t, img, Open)
			if fs.Type() != tc.typ {
				t.Errorf("type %s, want %s", fs.Type(), tc.typ)
			}
			cs := g.cluster
			clusterOff := func(c int64) int64 { return g.data + (c-2)*cs }

			if got := fsmaptest.Locate(t, fs, 0, 1); len(got) != 1 || got[0].Structure != "boot sector" {
				t.Errorf("byte 0: %+v", got)
			}
			want := []fsmap.Span{
				{Off: g.fat1 - 1, Len: 1, Structure: "reserved sectors"},
				{Off: g.fat1, Len: g.fatLen, Structure: "FAT 1"},
				{Off: g.fat1 + g.fatLen, Len: g.fatLen, Structure: "FAT 2"},
			}
			if tc.typ != "FAT32" {
				want = append(want, fsmap.Span{Off: g.root, Len: g.data - g.root, Structure: "root directory", Paths: []string{"/"}})
			}
			want = append(want, fsmap.Span{Off: g.data, Len: 1, Structure: "directory", Paths: []string{"/"}})
			if tc.typ != "FAT32" { // cluster 2 is /EFI's, not the root's
				want[len(want)-1].Paths = []string{"/EFI"}
			}
			if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, g.fat1-1, g.data+1-(g.fat1-1))); diff != "" {
				t.Errorf("reserved sectors to the first cluster (-want +got):\n%s", diff)
			}

			// A file with a long name, in a directory: every cluster mshowfat lists.
			for _, c := range clusters(t, img, "::/EFI/BOOT/A long name.bin") {
				want := []fsmap.Span{{Off: clusterOff(c) + 1, Len: cs - 2, Structure: "file data", Paths: []string{"/EFI/BOOT/A long name.bin"}}}
				if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, clusterOff(c)+1, cs-2)); diff != "" {
					t.Errorf("cluster %d (-want +got):\n%s", c, diff)
				}
			}
			boot := clusters(t, img, "::/EFI/BOOT")
			if got := fsmaptest.Locate(t, fs, clusterOff(boot[0]), cs); len(got) != 1 || got[0].Structure != "directory" || !cmp.Equal(got[0].Paths, []string{"/EFI/BOOT"}) {
				t.Errorf("directory /EFI/BOOT at cluster %d: %+v", boot[0], got)
			}

			// A fragmented file: its clusters around a2's, one span each run.
			uni, a2 := clusters(t, img, "::/Ünïcode ñame.txt"), clusters(t, img, "::/a2")
			first, last := min(uni[0], a2[0]), max(uni[len(uni)-1], a2[len(a2)-1])
			got := fsmaptest.Locate(t, fs, clusterOff(first), (last-first+1)*cs)
			var runs []string
			for _, s := range got {
				runs = append(runs, fmt.Sprintf("%d+%d %s %v", (s.Off-g.data)/cs+2, s.Len/cs, s.Structure, s.Paths))
			}
			var wantRuns []string
			for i := 0; i < len(uni); {
				j := i + 1
				for j < len(uni) && uni[j] == uni[j-1]+1 {
					j++
				}
				wantRuns = append(wantRuns, fmt.Sprintf("%d+%d file data [/Ünïcode ñame.txt]", uni[i], j-i))
				i = j
			}
			if len(wantRuns) < 2 {
				t.Fatalf("/Ünïcode ñame.txt is not fragmented: clusters %v", uni)
			}
			wantRuns = []string{wantRuns[0], fmt.Sprintf("%d+%d file data [/a2]", a2[0], len(a2)), wantRuns[1]}
			if diff := cmp.Diff(wantRuns, runs); diff != "" {
				t.Errorf("clusters %d-%d (-want +got):\n%s", first, last, diff)
			}

			// The last cluster is free; what follows it belongs to no cluster.
			lastCluster := g.clusters + 1
			end := clusterOff(lastCluster + 1)
			want = []fsmap.Span{{Off: clusterOff(lastCluster), Len: cs, Structure: "free clusters"}}
			if end < tc.size {
				want = append(want, fsmap.Span{Off: end, Len: tc.size - end, Structure: "past the last cluster"})
			}
			if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, clusterOff(lastCluster), tc.size)); diff != "" {
				t.Errorf("the end (-want +got):\n%s", diff)
			}

			if tc.typ == "FAT32" {
				// The boot sector's own word for where FSInfo and the backup lie.
				bs := make([]byte, 512)
				f, _ := os.Open(img)
				f.ReadAt(bs, 0)
				f.Close()
				fsInfo, backup := int64(bs[48])|int64(bs[49])<<8, int64(bs[50])|int64(bs[51])<<8
				for sec, name := range map[int64]string{fsInfo: "FSInfo sector", backup: "backup boot sector", backup + fsInfo: "backup FSInfo sector", backup + 2: "reserved sectors"} {
					if got := fsmaptest.Locate(t, fs, sec*512+10, 4); len(got) != 1 || got[0].Structure != name {
						t.Errorf("sector %d: %+v, want %s", sec, got, name)
					}
				}
			}

			// The whole filesystem: spans tile it, and no two neighbours could merge.
			fsmaptest.Tile(t, fsmaptest.Locate(t, fs, 0, tc.size), tc.size)
		})
	}
}

// A corrupt FAT whose chain loops back on itself ends the walk, not the program.
func TestChainLoop(t *testing.T) {
	need(t)
	img := mkfat(t, 8<<20, "-F", "12")
	put(t, img, "::/f", bytes.Repeat([]byte("x"), 8192))
	cs := clusters(t, img, "::/f")
	g := fsckGeometry(t, img)
	b := fsmaptest.ReadImage(t, img)
	// Point the last cluster's entry back at the first, in FAT 1.
	last, at := cs[len(cs)-1], g.fat1+cs[len(cs)-1]*3/2
	v := int64(b[at]) | int64(b[at+1])<<8
	if last%2 == 1 {
		v = v&0xf | cs[0]<<4
	} else {
		v = v&0xf000 | cs[0]
	}
	b[at], b[at+1] = byte(v), byte(v>>8)
	fs, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	got := fsmaptest.Locate(t, fs, g.data+(cs[0]-2)*g.cluster, int64(len(cs))*g.cluster)
	if len(got) != 1 || got[0].Structure != "file data" || !cmp.Equal(got[0].Paths, []string{"/f"}) {
		t.Errorf("the looping chain of /f: %+v", got)
	}
}

// seedImage is a small FAT12 image with a directory, a long name and a file.
func seedImage(t testing.TB) []byte {
	img := mkfat(t, 48<<10, "-F", "12", "-r", "16", "-s", "1")
	run(t, "mmd", "-i", img, "::/EFI")
	put(t, img, "::/EFI/A long name.txt", bytes.Repeat([]byte("y"), 1500))
	put(t, img, "::/x", []byte("x"))
	b := fsmaptest.ReadImage(t, img)
	return b
}

// A filesystem vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	need(f)
	fsmaptest.FuzzLocate(f, seedImage(f), Open, "filesystem")
}

// Open and a Locate of the whole filesystem (which walks every directory) on a
// 256 MiB FAT32 image holding 3000 files in 30 directories: the cost of naming an
// EFI system partition's ranges in vmb diff.
func BenchmarkLocate(b *testing.B) {
	need(b)
	img := mkfat(b, 256<<20, "-F", "32")
	src := filepath.Join(b.TempDir(), "src")
	fsmaptest.BenchTree(b, src)
	run(b, "mcopy", "-s", "-i", img, src, "::/")
	fsmaptest.BenchLocateAll(b, img, Open)
}
