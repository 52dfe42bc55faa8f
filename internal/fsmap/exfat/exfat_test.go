package exfat

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap"
	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// mkexfat makes an exFAT image of size bytes with mkfs.exfat (and args), mounts it with
// exfat-fuse (on a loop device: it wants a block device), lets fill write to the
// mounted tree, unmounts it, checks it with fsck.exfat and returns its path.
func mkexfat(t testing.TB, size int64, fill func(root string), args ...string) string {
	t.Helper()
	fsmaptest.Need(t, "exfatprogs, exfat-fuse and util-linux", "mkfs.exfat", "fsck.exfat", "dump.exfat", "mount.exfat-fuse", "losetup")
	if os.Geteuid() != 0 {
		t.Skip("mounting an image on a loop device needs root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "exfat.img")
	fsmaptest.Blank(t, img, size)
	fsmaptest.Run(t, "mkfs.exfat", append(args, img)...)
	loop := strings.TrimSpace(fsmaptest.Run(t, "losetup", "-f", "--show", img))
	defer fsmaptest.Run(t, "losetup", "-d", loop)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	fsmaptest.Run(t, "mount.exfat-fuse", loop, mnt)
	func() {
		defer fsmaptest.Run(t, "umount", mnt)
		fill(mnt)
	}()
	fsmaptest.Run(t, "fsck.exfat", "-n", img)
	return img
}

// geometry is what dump.exfat says of an image's layout.
type geometry struct {
	fatOff, fatLen, heap, clusters, root, sectorBits, clusterBits int64
	bitmap, bitmapLen, upcase, upcaseLen, free                    int64
}

func dump(t testing.TB, img string) geometry {
	out := fsmaptest.Run(t, "dump.exfat", img)
	num := func(label string) int64 {
		m := regexp.MustCompile(regexp.QuoteMeta(label) + `:\s*(\d+)`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("dump.exfat: no %q in\n%s", label, out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	return geometry{
		fatOff: num("FAT Offset(sector offset)"), fatLen: num("FAT Length(sectors)"),
		heap: num("Cluster Heap Offset (sector offset)"), clusters: num("Cluster Count"),
		root: num("Root Cluster (cluster offset)"), sectorBits: num("Sector Size Bits"),
		clusterBits: num("Sector per Cluster bits"),
		bitmap:      num("Bitmap start cluster"), bitmapLen: num("Bitmap size"),
		upcase: num("Upcase table start cluster"), upcaseLen: num("Upcase table size"),
		free: num("Free Clusters"),
	}
}

// Locate agrees with dump.exfat on the layout and on where the bitmap, the up-case
// table and the root directory lie, and with the bytes exfat-fuse wrote on which
// clusters hold which file: a fragmented file and a deep path included.
func TestLocate(t *testing.T) {
	const size = 64<<20 + 3*512
	files := map[string]int{"/a/b/c/deep.bin": 40000, "/x": 9000, "/Ünïcode ñame with a long name, longer than fifteen.txt": 20000}
	img := mkexfat(t, size, func(root string) {
		for p, n := range files {
			fsmaptest.Write(t, root, p, fsmaptest.Stamped(p, n, 4096))
		}
		fsmaptest.Write(t, root, "/hole", make([]byte, 3*4096))
		fsmaptest.Write(t, root, "/after", make([]byte, 4096))
		os.Remove(filepath.Join(root, "hole"))
		p := "/frag/mented.bin" // fills the hole, then goes on after /after
		files[p] = 10 * 4096
		fsmaptest.Write(t, root, p, fsmaptest.Stamped(p, files[p], 4096))
	})
	g := dump(t, img)
	fs, _ := fsmaptest.Open(t, img, Open)
	sector := int64(1) << g.sectorBits
	cs := sector << g.clusterBits
	if fs.ClusterSize() != cs {
		t.Errorf("cluster size %d, dump.exfat says %d", fs.ClusterSize(), cs)
	}
	clusterOff := func(c int64) int64 { return g.heap*sector + (c-2)*cs }

	want := []fsmap.Span{
		{Off: 0, Len: sector, Structure: "boot sector"},
		{Off: sector, Len: 8 * sector, Structure: "extended boot sectors"},
		{Off: 9 * sector, Len: sector, Structure: "OEM parameters"},
		{Off: 10 * sector, Len: sector, Structure: "reserved boot sector"},
		{Off: 11 * sector, Len: sector, Structure: "boot checksum sector"},
		{Off: 12 * sector, Len: sector, Structure: "backup boot sector"},
		{Off: 13 * sector, Len: 8 * sector, Structure: "backup extended boot sectors"},
		{Off: 21 * sector, Len: sector, Structure: "backup OEM parameters"},
		{Off: 22 * sector, Len: sector, Structure: "backup reserved boot sector"},
		{Off: 23 * sector, Len: sector, Structure: "backup boot checksum sector"},
		{Off: 24 * sector, Len: (g.fatOff - 24) * sector, Structure: "reserved sectors"},
		{Off: g.fatOff * sector, Len: g.fatLen * sector, Structure: "FAT 1"},
		{Off: (g.fatOff + g.fatLen) * sector, Len: (g.heap - g.fatOff - g.fatLen) * sector, Structure: "reserved sectors"},
	}
	if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, 0, g.heap*sector)); diff != "" {
		t.Errorf("up to the cluster heap (-want +got):\n%s", diff)
	}
	for _, tc := range []struct {
		first, n  int64
		structure string
		paths     []string
	}{
		{g.bitmap, g.bitmapLen, "allocation bitmap", nil},
		{g.upcase, g.upcaseLen, "up-case table", nil},
		{g.root, cs, "root directory", []string{"/"}},
	} {
		want := []fsmap.Span{{Off: clusterOff(tc.first), Len: (tc.n + cs - 1) / cs * cs, Structure: tc.structure, Paths: tc.paths}}
		if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, want[0].Off, want[0].Len)); diff != "" {
			t.Errorf("%s (-want +got):\n%s", tc.structure, diff)
		}
	}

	// Every cluster that holds a stamped block: the file the stamp names.
	b := fsmaptest.ReadImage(t, img)
	found := map[string]int{}
	var fragRuns int
	for c := int64(2); c < g.clusters+2; c++ {
		m := fsmaptest.StampRE.FindSubmatch(b[clusterOff(c):])
		if m == nil {
			continue
		}
		p := string(m[1])
		found[p]++
		want := []fsmap.Span{{Off: clusterOff(c) + 7, Len: cs - 9, Structure: "file data", Paths: []string{p}}}
		if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, want[0].Off, want[0].Len)); diff != "" {
			t.Errorf("cluster %d, block %s of %s (-want +got):\n%s", c, m[2], p, diff)
		}
		if p == "/frag/mented.bin" && (c == 2 || !bytes.HasPrefix(b[clusterOff(c-1):], m[0][:len(m[0])-len(m[2])-1])) {
			fragRuns++
		}
	}
	for p, n := range files {
		if want := (n + 4095) / 4096; found[p] != want {
			t.Errorf("%s: %d stamped clusters, want %d", p, found[p], want)
		}
	}
	if fragRuns < 2 {
		t.Errorf("/frag/mented.bin lies in %d runs of clusters, want it fragmented", fragRuns)
	}

	// The whole filesystem: spans tile it, no two neighbours could merge, the
	// directories are named, and the free clusters are those dump.exfat counts.
	all := fsmaptest.Locate(t, fs, 0, size)
	fsmaptest.Tile(t, all, size)
	free := int64(0)
	dirs := map[string]bool{}
	for _, s := range all {
		switch s.Structure {
		case "free clusters":
			free += s.Len / cs
		case "directory":
			dirs[s.Paths[0]] = true
		case "allocated, owner unknown", "clusters, allocation unknown":
			t.Errorf("span %+v", s)
		}
	}
	if free != g.free {
		t.Errorf("%d free clusters, dump.exfat says %d", free, g.free)
	}
	if want := map[string]bool{"/a": true, "/a/b": true, "/a/b/c": true, "/frag": true}; !cmp.Equal(dirs, want) {
		t.Errorf("directories %v, want %v", dirs, want)
	}
	if last := all[len(all)-1]; last.Structure != "past the cluster heap" || last.Off != clusterOff(g.clusters+2) {
		t.Errorf("the end: %+v, want what follows cluster %d", last, g.clusters+1)
	}
}

// A corrupt FAT whose chain loops back on itself ends the walk, not the program.
func TestChainLoop(t *testing.T) {
	img := mkexfat(t, 8<<20, func(root string) {
		fsmaptest.Write(t, root, "/one", make([]byte, 4096))
		fsmaptest.Write(t, root, "/f", fsmaptest.Stamped("/f", 5*4096, 4096)) // after /one: a FAT chain
		os.Remove(filepath.Join(root, "one"))
	})
	g := dump(t, img)
	b := fsmaptest.ReadImage(t, img)
	sector := int64(1) << g.sectorBits
	cs := sector << g.clusterBits
	var cl []int64
	for c := int64(2); c < g.clusters+2; c++ {
		if fsmaptest.StampRE.Match(b[g.heap*sector+(c-2)*cs:]) {
			cl = append(cl, c)
		}
	}
	if len(cl) != 5 {
		t.Fatalf("/f in clusters %v", cl)
	}
	// Point the last cluster's entry back at the first, in FAT 1, and make the file
	// chained rather than contiguous, should exfat-fuse have written it so.
	at := g.fatOff*sector + 4*cl[4]
	b[at], b[at+1], b[at+2], b[at+3] = byte(cl[0]), byte(cl[0]>>8), 0, 0
	fs, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	got := fsmaptest.Locate(t, fs, g.heap*sector+(cl[0]-2)*cs, cs)
	if len(got) != 1 || got[0].Structure != "file data" || !cmp.Equal(got[0].Paths, []string{"/f"}) {
		t.Errorf("the first cluster of /f: %+v", got)
	}
}

// seedImage is a small exFAT image with a directory, a long name and a file.
func seedImage(t testing.TB) []byte {
	img := mkexfat(t, 48<<10, func(root string) {
		fsmaptest.Write(t, root, "/d/A long name.txt", bytes.Repeat([]byte("y"), 1500))
		fsmaptest.Write(t, root, "/x", []byte("x"))
	}, "-c", "512", "-b", "512")
	b := fsmaptest.ReadImage(t, img)
	return b
}

// A filesystem vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	fsmaptest.FuzzLocate(f, seedImage(f), Open, "filesystem")
}

// Open and a Locate of the whole filesystem (which walks every directory) on a
// 256 MiB image holding 3000 files in 30 directories.
func BenchmarkLocate(b *testing.B) {
	img := mkexfat(b, 256<<20, func(root string) { fsmaptest.BenchTree(b, root) })
	fsmaptest.BenchLocateAll(b, img, Open)
}
