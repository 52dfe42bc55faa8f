package xfs

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// mkfs makes an XFS image of size bytes holding files (path: content; a path
// ending in "/" is a directory) with mkfs.xfs -p, and returns its path.
func mkfs(t testing.TB, size int64, files map[string]string, args ...string) string {
	t.Helper()
	fsmaptest.Need(t, "xfsprogs", "mkfs.xfs", "xfs_db")
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	fsmaptest.Blank(t, img, size)
	proto := filepath.Join(dir, "proto")
	if err := os.WriteFile(proto, []byte(protofile(t, dir, files)), 0o644); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"-q", "-f", "-p", proto}, args...)
	cmd := exec.Command("mkfs.xfs", append(args, img)...)
	// mkfs.xfs refuses filesystems under 300 MB unless run by fstests.
	cmd.Env = append(os.Environ(), "TEST_DIR="+dir, "TEST_DEV="+img, "QA_CHECK_FS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mkfs.xfs %v: %v\n%s", args, err, out)
	}
	return img
}

// protofile writes mkfs.xfs's prototype for files, their contents under dir.
func protofile(t testing.TB, dir string, files map[string]string) string {
	type node struct {
		kids    map[string]*node
		content *string
	}
	root := &node{kids: map[string]*node{}}
	for p, content := range files {
		n := root
		parts := strings.Split(strings.Trim(p, "/"), "/")
		for i, part := range parts {
			if n.kids[part] == nil {
				n.kids[part] = &node{kids: map[string]*node{}}
			}
			n = n.kids[part]
			if i == len(parts)-1 && !strings.HasSuffix(p, "/") {
				n.content = &content
			}
		}
	}
	var b strings.Builder
	b.WriteString("/dev/null\n0 0\nd--755 0 0\n")
	k := 0
	var write func(n *node)
	write = func(n *node) {
		names := make([]string, 0, len(n.kids))
		for name := range n.kids {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			c := n.kids[name]
			if c.content == nil {
				fmt.Fprintf(&b, "%s d--755 0 0\n", name)
				write(c)
				continue
			}
			k++
			src := filepath.Join(dir, fmt.Sprintf("src%d", k))
			if err := os.WriteFile(src, []byte(*c.content), 0o644); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "%s ---644 0 0 %s\n", name, src)
		}
		b.WriteString("$\n")
	}
	write(root)
	return b.String()
}

// xfsDB runs xfs_db's commands on img, read-only, and returns its output.
func xfsDB(t testing.TB, img string, cmds ...string) string {
	t.Helper()
	args := []string{"-r"}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.Command("xfs_db", append(args, img)...).CombinedOutput()
	if err != nil {
		t.Fatalf("xfs_db %v: %v\n%s", cmds, err, out)
	}
	return string(out)
}

// num reads the number re's group matches in s (decimal, or hex with 0x).
func num(t testing.TB, s, re string) int64 {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(s)
	if m == nil {
		t.Fatalf("no %s in\n%s", re, s)
	}
	n, err := strconv.ParseInt(m[1], 0, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// geometry is what xfs_db says of the superblock.
type geometry struct{ bs, ss, agBlocks, agCount, logStart, logBlocks int64 }

func sbGeometry(t testing.TB, img string) geometry {
	sb := xfsDB(t, img, "sb", "p")
	return geometry{num(t, sb, `(?m)^blocksize = (\d+)`), num(t, sb, `(?m)^sectsize = (\d+)`),
		num(t, sb, `(?m)^agblocks = (\d+)`), num(t, sb, `(?m)^agcount = (\d+)`),
		num(t, sb, `(?m)^logstart = (\d+)`), num(t, sb, `(?m)^logblocks = (\d+)`)}
}

// where says, as xfs_db does, which inode a path has and where the first block
// of its data fork lies (byte offset; -1 for a fork in the inode).
func where(t testing.TB, img string, g geometry, p string) (ino uint32, off int64) {
	out := xfsDB(t, img, "path "+p, "inode", "bmap")
	ino = uint32(num(t, out, `current inode number is (\d+)`))
	m := regexp.MustCompile(`startblock \d+ \((\d+)/(\d+)\)`).FindStringSubmatch(out)
	if m == nil {
		return ino, -1
	}
	ag, _ := strconv.ParseInt(m[1], 10, 64)
	agbno, _ := strconv.ParseInt(m[2], 10, 64)
	return ino, (ag*g.agBlocks + agbno) * g.bs
}

// Locate agrees with xfs_db on where files, inodes, directories, the headers of
// each AG, the btrees, the log and free space lie.
func TestLocate(t *testing.T) {
	files := map[string]string{"etc/motd": "hello\n", "etc/hostname": "vmb\n", "usr/share/big": strings.Repeat("0123456789abcdef", 20000)}
	for i := range 300 { // a directory too big for its inode: data, leaf and free blocks
		files[fmt.Sprintf("many/entry-with-a-long-name-%04d", i)] = "x"
	}
	for _, opts := range [][]string{nil, {"-m", "rmapbt=1,reflink=1", "-b", "size=1024"}, {"-m", "crc=0", "-i", "size=512"}} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			img := mkfs(t, 48<<20, files, append(opts, "-d", "agcount=3")...)
			fs, _ := fsmaptest.Open(t, img, Open)
			g := sbGeometry(t, img)

			bigIno, big := where(t, img, g, "/usr/share/big")
			want := Span{Off: big + g.bs + 10, Len: 100, Structure: "file data", Inodes: []uint64{uint64(bigIno)}, Paths: []string{"/usr/share/big"}}
			if diff := cmp.Diff(want, fsmaptest.Locate1(t, fs, big+g.bs+10, 100)); diff != "" {
				t.Errorf("data of /usr/share/big (-want +got):\n%s", diff)
			}
			motd, _ := where(t, img, g, "/etc/motd")
			at := num(t, xfsDB(t, img, fmt.Sprintf("convert ino %d byte", motd)), `\((\d+)\)`)
			want = Span{Off: at + 32, Len: 8, Structure: "inode chunk", Inodes: []uint64{uint64(motd)}, Paths: []string{"/etc/motd"}}
			if diff := cmp.Diff(want, fsmaptest.Locate1(t, fs, at+32, 8)); diff != "" { // di_atime
				t.Errorf("inode of /etc/motd (-want +got):\n%s", diff)
			}
			manyIno, many := where(t, img, g, "/many")
			want = Span{Off: many, Len: 64, Structure: "directory", Inodes: []uint64{uint64(manyIno)}, Paths: []string{"/many"}}
			if diff := cmp.Diff(want, fsmaptest.Locate1(t, fs, many, 64)); diff != "" {
				t.Errorf("directory /many (-want +got):\n%s", diff)
			}
			// A file named in /many's data blocks; /many's leaf blocks, from 32 GiB on.
			lastIno, last := where(t, img, g, "/many/entry-with-a-long-name-0299")
			want = Span{Off: last, Len: 1, Structure: "file data", Inodes: []uint64{uint64(lastIno)}, Paths: []string{"/many/entry-with-a-long-name-0299"}}
			if diff := cmp.Diff(want, fsmaptest.Locate1(t, fs, last, 1)); diff != "" {
				t.Errorf("a file in /many (-want +got):\n%s", diff)
			}
			m := regexp.MustCompile(`offset (\d+) startblock \d+ \((\d+)/(\d+)\)`).FindAllStringSubmatch(xfsDB(t, img, "path /many", "inode", "bmap"), -1)
			leaves := 0
			for _, m := range m {
				off, _ := strconv.ParseInt(m[1], 10, 64)
				ag, _ := strconv.ParseInt(m[2], 10, 64)
				agbno, _ := strconv.ParseInt(m[3], 10, 64)
				if off*g.bs >= 32<<30 && off*g.bs < 64<<30 {
					leaves++
					if got := fsmaptest.Locate1(t, fs, (ag*g.agBlocks+agbno)*g.bs, 1); got.Structure != "directory leaf" || !cmp.Equal(got.Paths, []string{"/many"}) {
						t.Errorf("leaf block of /many at offset %d: %+v", off, got)
					}
				}
			}
			if leaves == 0 {
				t.Errorf("/many has no leaf block")
			}
			for _, c := range []struct {
				off  int64
				want string
			}{
				{0, "superblock"},
				{g.ss + 4, "AGF (AG 0)"},
				{2*g.ss + 4, "AGI (AG 0)"},
				{3*g.ss + 4, "AGFL (AG 0)"},
				{g.agBlocks * g.bs, "secondary superblock (AG 1)"},
				{2*g.agBlocks*g.bs + g.ss, "AGF (AG 2)"},
				{g.logStart*g.bs + 100, "log"},
				{(g.logStart+g.logBlocks-1)*g.bs + 100, "log"},
			} {
				if g.logStart >= g.agBlocks && c.want == "log" {
					// logstart is an AG-encoded block number: convert it.
					c.off = num(t, xfsDB(t, img, fmt.Sprintf("convert fsblock %d byte", (c.off-100)/g.bs)), `\((\d+)\)`) + 100
				}
				if got := fsmaptest.Locate1(t, fs, c.off, 1); got.Structure != c.want {
					t.Errorf("byte %d: %q, want %q", c.off, got.Structure, c.want)
				}
			}
			// The roots of AG 0's btrees.
			agf, agi := xfsDB(t, img, "agf 0", "p"), xfsDB(t, img, "agi 0", "p")
			roots := []struct {
				root int64
				want string
			}{
				{num(t, agf, `(?m)^bnoroot = (\d+)`), "free-space btree by block (bnobt)"},
				{num(t, agf, `(?m)^cntroot = (\d+)`), "free-space btree by size (cntbt)"},
				{num(t, agi, `(?m)^root = (\d+)`), "inode btree (inobt)"},
			}
			if m := regexp.MustCompile(`(?m)^free_root = (\d+)`).FindStringSubmatch(agi); m != nil {
				r, _ := strconv.ParseInt(m[1], 10, 64)
				roots = append(roots, struct {
					root int64
					want string
				}{r, "free inode btree (finobt)"})
			}
			if m := regexp.MustCompile(`(?m)^rmaproot = (\d+)`).FindStringSubmatch(agf); m != nil {
				r, _ := strconv.ParseInt(m[1], 10, 64)
				roots = append(roots, struct {
					root int64
					want string
				}{r, "reverse-mapping btree (rmapbt)"})
			}
			if m := regexp.MustCompile(`(?m)^refcntroot = (\d+)`).FindStringSubmatch(agf); m != nil {
				r, _ := strconv.ParseInt(m[1], 10, 64)
				roots = append(roots, struct {
					root int64
					want string
				}{r, "reference count btree (refcountbt)"})
			}
			for _, r := range roots {
				if r.root == 0 {
					continue // no such btree
				}
				if got := fsmaptest.Locate1(t, fs, r.root*g.bs, g.bs); got.Structure != r.want {
					t.Errorf("block %d: %q, want %q", r.root, got.Structure, r.want)
				}
			}
			// Every free extent xfs_db's freesp lists (the AGFL's blocks with them) is free.
			free := regexp.MustCompile(`(?m)^\s+(\d+)\s+(\d+)\s+(\d+)$`).FindAllStringSubmatch(xfsDB(t, img, "freesp -d"), -1)
			if len(free) == 0 {
				t.Fatal("freesp -d lists no free extent")
			}
			for _, m := range free {
				ag, _ := strconv.ParseInt(m[1], 10, 64)
				agbno, _ := strconv.ParseInt(m[2], 10, 64)
				n, _ := strconv.ParseInt(m[3], 10, 64)
				spans, _ := fs.Locate((ag*g.agBlocks+agbno)*g.bs, n*g.bs)
				if len(spans) != 1 || spans[0].Structure != "free space" && spans[0].Structure != "AGFL block (free, kept for btrees)" {
					t.Errorf("free extent %d/%d+%d: %+v", ag, agbno, n, spans)
				}
			}
		})
	}
}

// FuzzLocate: a filesystem vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	img := mkfs(f, 20<<20, map[string]string{"a/b": "x", "c": strings.Repeat("y", 5000)}, "-b", "size=1024", "-d", "agcount=1")
	b := fsmaptest.ReadImage(f, img)
	// Keep the corpus small: the headers, btrees, inodes and files of AG 0
	// lie in its first blocks; the rest is a truncated filesystem's.
	b = b[:128<<10]
	f.Add(b, int64(0), int64(len(b)))
	f.Fuzz(func(t *testing.T, disk []byte, off, n int64) {
		fs, err := Open(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		spans, _ := fs.Locate(off, n%(1<<20))
		for i, s := range spans {
			if s.Off < 0 || s.Len <= 0 || s.Off+s.Len > int64(len(disk)) || i > 0 && s.Off != spans[i-1].Off+spans[i-1].Len {
				t.Errorf("span %+v off a filesystem of %d bytes", s, len(disk))
			}
		}
	})
}

// BenchmarkLocate opens and walks a filesystem of a few thousand files.
func BenchmarkLocate(b *testing.B) {
	fsmaptest.BenchOpen(b, mkfs(b, 256<<20, fsmaptest.BenchFiles()), Open)
}

// A file of hundreds of extents keeps them in an extent btree: its blocks, and
// the data they lead to, are the file's. mkfs.xfs -p writes files in one extent,
// so this test writes the file on a loop mount, as root.
func TestLocateExtentBtree(t *testing.T) {
	img := mkfs(t, 64<<20, map[string]string{"etc/": ""})
	if os.Geteuid() != 0 {
		t.Skip("mounting a loop device needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop: %v\n%s", err, out)
	}
	args := []string{"-f"}
	for i := range 300 { // holes between the writes: one extent each
		args = append(args, "-c", fmt.Sprintf("pwrite -q %d 4096", i*8192))
	}
	out, err := exec.Command("xfs_io", append(args, filepath.Join(mnt, "etc/frag"))...).CombinedOutput()
	if uerr := exec.Command("umount", mnt).Run(); uerr != nil {
		t.Fatalf("umount: %v", uerr)
	}
	if err != nil {
		t.Fatalf("xfs_io: %v\n%s", err, out)
	}
	fs, _ := fsmaptest.Open(t, img, Open)
	g := sbGeometry(t, img)
	db := xfsDB(t, img, "path /etc/frag", "inode", "p core.format u3.bmbt.ptrs", "bmap")
	if !strings.Contains(db, "core.format = 3 (btree)") {
		t.Fatalf("/etc/frag is not in btree format:\n%s", db)
	}
	ino := uint32(num(t, db, `current inode number is (\d+)`))
	ptrs := regexp.MustCompile(`\d+:(\d+)`).FindAllStringSubmatch(db[strings.Index(db, "u3.bmbt.ptrs"):strings.Index(db, "data offset")], -1)
	if len(ptrs) == 0 {
		t.Fatalf("no bmbt pointer in\n%s", db)
	}
	for _, m := range ptrs {
		at := num(t, xfsDB(t, img, "convert fsblock "+m[1]+" byte"), `\((\d+)\)`)
		want := Span{Off: at, Len: g.bs, Structure: "extent btree (bmbt)", Inodes: []uint64{uint64(ino)}, Paths: []string{"/etc/frag"}}
		if diff := cmp.Diff(want, fsmaptest.Locate1(t, fs, at, g.bs)); diff != "" {
			t.Errorf("bmbt block %s (-want +got):\n%s", m[1], diff)
		}
	}
	exts := regexp.MustCompile(`startblock \d+ \((\d+)/(\d+)\) count (\d+)`).FindAllStringSubmatch(db, -1)
	if len(exts) < 300 {
		t.Fatalf("%d extents, want 300", len(exts))
	}
	for _, m := range exts {
		ag, _ := strconv.ParseInt(m[1], 10, 64)
		agbno, _ := strconv.ParseInt(m[2], 10, 64)
		n, _ := strconv.ParseInt(m[3], 10, 64)
		at := (ag*g.agBlocks + agbno) * g.bs
		want := Span{Off: at, Len: n * g.bs, Structure: "file data", Inodes: []uint64{uint64(ino)}, Paths: []string{"/etc/frag"}}
		if diff := cmp.Diff(want, fsmaptest.Locate1(t, fs, at, n*g.bs)); diff != "" {
			t.Fatalf("extent %s/%s (-want +got):\n%s", m[1], m[2], diff)
		}
	}
}
