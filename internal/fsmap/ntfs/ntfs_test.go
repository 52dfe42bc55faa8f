package ntfs

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
)

func command(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// mkntfs makes an NTFS image of size bytes with mkntfs, mounts it with ntfs-3g,
// lets fill write to the mounted tree, unmounts it and returns its path.
func mkntfs(t testing.TB, size int64, fill func(root string), args ...string) string {
	t.Helper()
	for _, tool := range []string{"mkntfs", "ntfs-3g", "ntfsinfo", "ntfscluster"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (dev/setup installs ntfs-3g)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting an image with ntfs-3g needs root")
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "ntfs.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, size)
	command(t, "mkntfs", append([]string{"-F", "-Q", "-q"}, append(args, img)...)...)
	mnt := filepath.Join(dir, "mnt")
	os.Mkdir(mnt, 0o755)
	command(t, "ntfs-3g", img, mnt)
	func() {
		defer command(t, "umount", mnt)
		fill(mnt)
	}()
	return img
}

// stamped is content of n bytes whose every 4 KiB block starts with its path and
// index, so that a cluster's bytes say which file and which block they are.
func stamped(p string, n int) []byte {
	b := make([]byte, n)
	for k := 0; k*4096 < n; k++ {
		copy(b[k*4096:], fmt.Sprintf("vmb:%s#%d\n", p, k))
	}
	return b
}

var stampRE = regexp.MustCompile(`^vmb:([^#]+)#(\d+)\n`)

func write(t testing.TB, root, p string, content []byte) {
	t.Helper()
	full := filepath.Join(root, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(full, content, 0o644); err != nil {
		t.Fatal(err)
	}
}

// attr is a non-resident attribute as ntfsinfo -v prints it.
type attr struct {
	typ, name string
	runs      [][2]int64 // LCN and length, in clusters; sparse runs left out
}

// ntfsinfo lists the non-resident attributes of MFT record n.
func ntfsinfo(t testing.TB, img string, n int64) []attr {
	out := command(t, "ntfsinfo", "-v", "-i", strconv.FormatInt(n, 10), img)
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
	out := command(t, "ntfsinfo", "-F", p, img)
	var n int64
	if _, err := fmt.Sscanf(out, "Dumping Inode %d", &n); err != nil {
		t.Fatalf("ntfsinfo -F %s: %v\n%s", p, err, out)
	}
	return n
}

func open(t testing.TB, img string) (*FS, int64) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fi, _ := f.Stat()
	fs, err := Open(f, fi.Size())
	if err != nil {
		t.Fatal(err)
	}
	return fs, fi.Size()
}

func locate(t *testing.T, fs *FS, off, n int64) []fsmap.Span {
	t.Helper()
	got, err := fs.Locate(off, n)
	if err != nil {
		t.Fatal(err)
	}
	return got
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
			write(t, root, p, stamped(p, n))
		}
		for i := range 300 { // enough names for index blocks
			write(t, root, fmt.Sprintf("/many/a file with a long name %03d", i), []byte("small"))
		}
		write(t, root, "/hole", make([]byte, 3*4096))
		write(t, root, "/after", make([]byte, 4096))
		os.Remove(filepath.Join(root, "hole"))
		p := "/frag/mented.bin"
		files[p] = 20 * 4096
		write(t, root, p, stamped(p, files[p]))
	})
	fs, _ := open(t, img)
	cs := fs.ClusterSize()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}

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
				if diff := cmp.Diff(want, locate(t, fs, r[0]*cs, r[1]*cs)); diff != "" {
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
		if diff := cmp.Diff(want, locate(t, fs, want[0].Off, 1024)); diff != "" {
			t.Errorf("MFT record %d (-want +got):\n%s", tc.n, diff)
		}
	}

	// The boot sector, and its backup in the device's last sector.
	if got := locate(t, fs, 0, 512); len(got) != 1 || got[0].Structure != "boot sector" {
		t.Errorf("sector 0: %+v", got)
	}
	if !bytes.Equal(b[:512], b[size-512:]) {
		t.Fatalf("the last sector is not the boot sector's backup")
	}
	if got := locate(t, fs, size-512, 512); len(got) != 1 || got[0].Structure != "backup boot sector" {
		t.Errorf("the last sector: %+v", got)
	}

	// Every cluster that holds a stamped block: the file the stamp names.
	found := map[string]int{}
	for c := int64(0); c*cs < size; c++ {
		m := stampRE.FindSubmatch(b[c*cs:])
		if m == nil {
			continue
		}
		p := string(m[1])
		found[p]++
		want := []fsmap.Span{{Off: c*cs + 7, Len: cs - 9, Structure: "file data", Paths: []string{p}}}
		if diff := cmp.Diff(want, locate(t, fs, want[0].Off, want[0].Len)); diff != "" {
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
	all := locate(t, fs, 0, size)
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
	m := regexp.MustCompile(`clusters of free space\s*:\s*(\d+)`).FindStringSubmatch(command(t, "ntfscluster", "-i", img))
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
		write(t, root, "/d/f", stamped("/d/f", 3*4096))
	})
	fs, _ := open(t, img)
	d := inode(t, img, "/d")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
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
	fs, err = Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	got := locate(t, fs, mftAt+d*1024, 1024)
	if len(got) != 1 || got[0].Structure != "MFT record" || !strings.HasPrefix(got[0].Paths[0], "/?") {
		t.Errorf("a directory that is its own parent: %+v", got)
	}
}

// seedImage is a small NTFS image with a directory and a file.
func seedImage(t testing.TB) []byte {
	img := mkntfs(t, 1<<20+4096, func(root string) {
		write(t, root, "/d/A long name.txt", bytes.Repeat([]byte("y"), 5000))
	}, "-c", "512", "-s", "512")
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A volume vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	b := seedImage(f)
	f.Add(b, int64(0), int64(len(b)))
	f.Fuzz(func(t *testing.T, disk []byte, off, n int64) {
		fs, err := Open(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		spans, _ := fs.Locate(off, n%(1<<20))
		for _, s := range spans {
			if s.Off < 0 || s.Len <= 0 || s.Off+s.Len > int64(len(disk)) {
				t.Errorf("span %+v off a volume of %d bytes", s, len(disk))
			}
		}
	})
}

// Open and a Locate of the whole volume (which reads every MFT record) on a 256
// MiB image holding 3000 files in 30 directories.
func BenchmarkLocate(b *testing.B) {
	img := mkntfs(b, 256<<20, func(root string) {
		for d := range 30 {
			for i := range 100 {
				write(b, root, fmt.Sprintf("/directory %02d/a file with a long name %03d.txt", d, i), bytes.Repeat([]byte{byte(i)}, 1000+i*37))
			}
		}
	})
	f, err := os.Open(img)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.ResetTimer()
	for b.Loop() {
		fs, err := Open(f, 256<<20)
		if err != nil {
			b.Fatal(err)
		}
		spans, err := fs.Locate(0, 256<<20)
		if err != nil || len(spans) < 3000 {
			b.Fatalf("%d spans, %v", len(spans), err)
		}
	}
}
