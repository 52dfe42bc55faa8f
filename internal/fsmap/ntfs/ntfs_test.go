package ntfs

import (
	"bytes"
	"fmt"
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

// mkntfs makes an NTFS image of size bytes with mkntfs, mounts it with ntfs-3g,
// lets fill write to the mounted tree, unmounts it and returns its path.
func mkntfs(t testing.TB, size int64, fill func(root string), args ...string) string {
	t.Helper()
	fsmaptest.Need(t, "ntfs-3g", "mkntfs", "ntfs-3g", "ntfsinfo", "ntfscluster")
	if os.Geteuid() != 0 {
		t.Skip("mounting an image with ntfs-3g needs root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "ntfs.img")
	fsmaptest.Blank(t, img, size)
	fsmaptest.Run(t, "mkntfs", append([]string{"-F", "-Q", "-q"}, append(args, img)...)...)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	fsmaptest.Run(t, "ntfs-3g", img, mnt)
	func() {
		defer fsmaptest.Run(t, "umount", mnt)
		fill(mnt)
	}()
	return img
}

// attr is a non-resident attribute as ntfsinfo -v prints it.
type attr struct {
	typ, name string
	runs      [][2]int64 // LCN and length, in clusters; sparse runs left out
}

// ntfsinfo lists the non-resident attributes of MFT record n.
func ntfsinfo(t testing.TB, img string, n int64) []attr {
	out := fsmaptest.Run(t, "ntfsinfo", "-v", "-i", strconv.FormatInt(n, 10), img)
	var attrs []attr
	inRuns := false
	for _, line := range strings.Split(out, "\n") {
		if m := regexp.MustCompile(`^Dumping attribute (\S+) `).FindStringSubmatch(line); m != nil {
			attrs = append(attrs, attr{typ: m[1]})
			inRuns = false
			continue
		}
		if len(attrs) == 0 {
			continue
		}
		a := &attrs[len(attrs)-1]
		if m := regexp.MustCompile(`^\tAttribute name:\s+'(.*)'`).FindStringSubmatch(line); m != nil {
			a.name = m[1]
		}
		if strings.HasPrefix(line, "\tRunlist:") {
			inRuns = true
			continue
		}
		if m := regexp.MustCompile(`^\t\t\t0x([0-9a-f]+)\t\t(0x[0-9a-f]+|<HOLE>|\S+)\t\t0x([0-9a-f]+)`).FindStringSubmatch(line); inRuns && m != nil {
			lcn, err := strconv.ParseInt(strings.TrimPrefix(m[2], "0x"), 16, 64)
			length, _ := strconv.ParseInt(m[3], 16, 64)
			if err == nil {
				a.runs = append(a.runs, [2]int64{lcn, length})
			}
			continue
		}
		inRuns = false
	}
	return attrs
}

// inode is the MFT record number of the file at p, as ntfsinfo says.
func inode(t testing.TB, img, p string) int64 {
	out := fsmaptest.Run(t, "ntfsinfo", "-F", p, img)
	var n int64
	if _, err := fmt.Sscanf(out, "Dumping Inode %d", &n); err != nil {
		t.Fatalf("ntfsinfo -F %s: %v\n%s", p, err, out)
	}
	return n
}

// Locate agrees with ntfsinfo on where the system files', the directories' index
// blocks' and files' runs lie, on where an MFT record lies and whose it is, with
// ntfscluster on how many clusters are free, and with the bytes ntfs-3g wrote on
// which clusters hold which file.
func TestLocate(t *testing.T) {
	const size = 64 << 20
	files := map[string]int{"/dir/sub/f.bin": 50000, "/Ünïcode ñame.txt": 20000}
	img := mkntfs(t, size, func(root string) {
		for p, n := range files {
			fsmaptest.Write(t, root, p, fsmaptest.Stamped(p, n, 4096))
		}
		for i := range 300 { // enough names for index blocks
			fsmaptest.Write(t, root, fmt.Sprintf("/many/a file with a long name %03d", i), []byte("small"))
		}
		fsmaptest.Write(t, root, "/hole", make([]byte, 3*4096))
		fsmaptest.Write(t, root, "/after", make([]byte, 4096))
		os.Remove(filepath.Join(root, "hole"))
		p := "/frag/mented.bin"
		files[p] = 20 * 4096
		fsmaptest.Write(t, root, p, fsmaptest.Stamped(p, files[p], 4096))
	})
	fs, _ := fsmaptest.Open(t, img, Open)
	cs := fs.ClusterSize()
	b := fsmaptest.ReadImage(t, img)

	// The runs of the system files, a directory's index blocks and a file's data.
	mft := ntfsinfo(t, img, 0)
	many, fbin := inode(t, img, "/many"), inode(t, img, "/dir/sub/f.bin")
	last := inode(t, img, "/many/a file with a long name 299")
	for _, tc := range []struct {
		rec       int64
		typ, name string
		structure string
		path      string
	}{
		{0, "$BITMAP", "", "MFT bitmap", "/$MFT"},
		{1, "$DATA", "", "MFT mirror", "/$MFTMirr"},
		{2, "$DATA", "", "$LogFile", "/$LogFile"},
		{4, "$DATA", "", "$AttrDef", "/$AttrDef"},
		{6, "$DATA", "", "$Bitmap", "/$Bitmap"},
		{9, "$DATA", "$SDS", "$Secure", "/$Secure:$SDS"},
		{10, "$DATA", "", "$UpCase", "/$UpCase"},
		{5, "$INDEX_ALLOCATION", "$I30", "index blocks", "/"},
		{many, "$INDEX_ALLOCATION", "$I30", "index blocks", "/many"},
		{fbin, "$DATA", "", "file data", "/dir/sub/f.bin"},
	} {
		attrs := mft
		if tc.rec != 0 {
			attrs = ntfsinfo(t, img, tc.rec)
		}
		found := false
		for _, a := range attrs {
			if a.typ != tc.typ || a.name != tc.name {
				continue
			}
			found = true
			for _, r := range a.runs {
				want := []fsmap.Span{{Off: r[0] * cs, Len: r[1] * cs, Structure: tc.structure, Paths: []string{tc.path}}}
				if tc.rec == 7 && r[0] == 0 {
					continue
				}
				if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, r[0]*cs, r[1]*cs)); diff != "" {
					t.Errorf("record %d's %s %s, clusters %d+%d (-want +got):\n%s", tc.rec, tc.typ, tc.name, r[0], r[1], diff)
				}
			}
			if len(a.runs) == 0 {
				t.Errorf("record %d's %s %s: no runs", tc.rec, tc.typ, tc.name)
			}
		}
		if !found {
			t.Errorf("record %d: ntfsinfo lists no %s %s", tc.rec, tc.typ, tc.name)
		}
	}

	// MFT records: /dir/sub/f.bin's, and the first, from the MFT's first run.
	var mftAt int64 = -1
	for _, a := range mft {
		if a.typ == "$DATA" && len(a.runs) > 0 {
			mftAt = a.runs[0][0] * cs
		}
	}
	for _, tc := range []struct {
		n    int64
		path string
	}{{0, "/$MFT"}, {2, "/$LogFile"}, {5, "/"}, {fbin, "/dir/sub/f.bin"}, {many, "/many"}, {last, "/many/a file with a long name 299"}} {
		want := []fsmap.Span{{Off: mftAt + tc.n*1024, Len: 1024, Structure: "MFT record", Inodes: []uint64{uint64(tc.n)}, Paths: []string{tc.path}}}
		if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, want[0].Off, 1024)); diff != "" {
			t.Errorf("MFT record %d (-want +got):\n%s", tc.n, diff)
		}
	}

	// The boot sector, and its backup in the device's last sector.
	if got := fsmaptest.Locate(t, fs, 0, 512); len(got) != 1 || got[0].Structure != "boot sector" {
		t.Errorf("sector 0: %+v", got)
	}
	if !bytes.Equal(b[:512], b[size-512:]) {
		t.Fatalf("the last sector is not the boot sector's backup")
	}
	if got := fsmaptest.Locate(t, fs, size-512, 512); len(got) != 1 || got[0].Structure != "backup boot sector" {
		t.Errorf("the last sector: %+v", got)
	}

	// Every cluster that holds a stamped block: the file the stamp names.
	found := map[string]int{}
	for c := int64(0); c*cs < size; c++ {
		m := fsmaptest.StampRE.FindSubmatch(b[c*cs:])
		if m == nil {
			continue
		}
		p := string(m[1])
		found[p]++
		want := []fsmap.Span{{Off: c*cs + 7, Len: cs - 9, Structure: "file data", Paths: []string{p}}}
		if diff := cmp.Diff(want, fsmaptest.Locate(t, fs, want[0].Off, want[0].Len)); diff != "" {
			t.Errorf("cluster %d, block %s of %s (-want +got):\n%s", c, m[2], p, diff)
		}
	}
	for p, n := range files {
		if want := (n + 4095) / 4096; found[p] != want {
			t.Errorf("%s: %d stamped clusters, want %d", p, found[p], want)
		}
	}

	// The whole volume: spans tile it, no two neighbours could merge, and the
	// free clusters are those ntfscluster counts.
	all := fsmaptest.Locate(t, fs, 0, size)
	pos, free := int64(0), int64(0)
	for i, s := range all {
		if s.Off != pos || s.Len <= 0 {
			t.Fatalf("span %d %+v: want it at %d", i, s, pos)
		}
		pos += s.Len
		if i > 0 && all[i-1].Structure == s.Structure && cmp.Equal(all[i-1].Paths, s.Paths) && cmp.Equal(all[i-1].Inodes, s.Inodes) {
			t.Errorf("spans %+v and %+v not merged", all[i-1], s)
		}
		switch s.Structure {
		case "free clusters":
			free += s.Len / cs
		case "allocated, owner unknown", "clusters, allocation unknown":
			t.Errorf("span %+v", s)
		}
	}
	if pos != size {
		t.Errorf("spans end at %d, want %d", pos, size)
	}
	m := regexp.MustCompile(`clusters of free space\s*:\s*(\d+)`).FindStringSubmatch(fsmaptest.Run(t, "ntfscluster", "-i", img))
	if m == nil {
		t.Fatal("ntfscluster -i: no free clusters")
	}
	if want, _ := strconv.ParseInt(m[1], 10, 64); free != want {
		t.Errorf("%d free clusters, ntfscluster says %d", free, want)
	}
}

// A record whose parent is itself, and one whose runs point past the volume, end
// the walk, not the program.
func TestCorrupt(t *testing.T) {
	img := mkntfs(t, 8<<20, func(root string) {
		fsmaptest.Write(t, root, "/d/f", fsmaptest.Stamped("/d/f", 3*4096, 4096))
	})
	fs, _ := fsmaptest.Open(t, img, Open)
	d := inode(t, img, "/d")
	b := fsmaptest.ReadImage(t, img)
	// /d's $FILE_NAME parent: d itself, in the record as unfix sees it (the
	// parent reference lies in the record's first 510 bytes).
	var mftAt int64
	for _, a := range ntfsinfo(t, img, 0) {
		if a.typ == "$DATA" {
			mftAt = a.runs[0][0] * fs.ClusterSize()
		}
	}
	rec := b[mftAt+d*1024:][:1024]
	for _, a := range attributes(rec) {
		if a.typ == attrFileName {
			copy(a.value[:6], []byte{byte(d), byte(d >> 8), 0, 0, 0, 0})
		}
	}
	fs, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	got := fsmaptest.Locate(t, fs, mftAt+d*1024, 1024)
	if len(got) != 1 || got[0].Structure != "MFT record" || !strings.HasPrefix(got[0].Paths[0], "/?") {
		t.Errorf("a directory that is its own parent: %+v", got)
	}
}

// seedImage is a small NTFS image with a directory and a file.
func seedImage(t testing.TB) []byte {
	img := mkntfs(t, 1<<20+4096, func(root string) {
		fsmaptest.Write(t, root, "/d/A long name.txt", bytes.Repeat([]byte("y"), 5000))
	}, "-c", "512", "-s", "512")
	b := fsmaptest.ReadImage(t, img)
	return b
}

// A volume vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	fsmaptest.FuzzLocate(f, seedImage(f), Open, "volume")
}

// Open and a Locate of the whole volume (which reads every MFT record) on a 256
// MiB image holding 3000 files in 30 directories.
func BenchmarkLocate(b *testing.B) {
	img := mkntfs(b, 256<<20, func(root string) { fsmaptest.BenchTree(b, root) })
	fsmaptest.BenchLocateAll(b, img, Open)
}
