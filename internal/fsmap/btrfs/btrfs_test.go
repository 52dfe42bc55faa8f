package btrfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// mkfs makes a btrfs image of size bytes holding files (path: content) with
// mkfs.btrfs --rootdir, and returns its path.
func mkfs(t testing.TB, size int64, files map[string]string, args ...string) string {
	t.Helper()
	fsmaptest.Need(t, "btrfs-progs", "mkfs.btrfs", "btrfs")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	fsmaptest.WriteFiles(t, root, files)
	img := filepath.Join(dir, "fs.img")
	fsmaptest.Blank(t, img, size)
	args = append([]string{"-q", "-f", "--rootdir", root}, args...)
	if out, err := exec.Command("mkfs.btrfs", append(args, img)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.btrfs %v: %v\n%s", args, err, out)
	}
	return img
}

// mirrors says where the copies of logical address l lie, by the chunk items
// btrfs inspect-internal dump-tree lists. (btrfs-map-logical would, but it wants
// an extent item at l, which skinny metadata does not have.)
func mirrors(t testing.TB, img string, l int64) []int64 {
	dump := fsmaptest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "chunk", img)
	var out []int64
	for _, c := range regexp.MustCompile(`CHUNK_ITEM (\d+)\) itemoff \d+ itemsize \d+\n\s+length (\d+).*((?:\n\t\t.*)*)`).FindAllStringSubmatch(dump, -1) {
		start, _ := strconv.ParseInt(c[1], 10, 64)
		n, _ := strconv.ParseInt(c[2], 10, 64)
		if l < start || l >= start+n {
			continue
		}
		for _, m := range regexp.MustCompile(`stripe \d+ devid 1 offset (\d+)`).FindAllStringSubmatch(c[3], -1) {
			p, _ := strconv.ParseInt(m[1], 10, 64)
			out = append(out, p+l-start)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no chunk maps logical %d:\n%s", l, dump)
	}
	return out
}

// Locate agrees with btrfs inspect-internal dump-tree and btrfs-map-logical on
// where every tree's nodes, files' data, the superblocks and chunks lie.
func TestLocate(t *testing.T) {
	files := map[string]string{"etc/motd": "hello\n", "usr/share/big": strings.Repeat("0123456789abcdef", 20000)}
	for i := range 400 { // enough items for an fs tree of two levels
		files[fmt.Sprintf("many/entry-with-a-long-name-%04d", i)] = strings.Repeat("x", 5000)
	}
	for _, opts := range [][]string{nil, {"-m", "single", "--nodesize", "4096"}} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			img := mkfs(t, 128<<20, files, opts...)
			fs, _ := fsmaptest.Open(t, img, Open)

			// Every node of every tree, each copy.
			for _, tree := range []struct{ arg, want string }{
				{"root", "root tree"}, {"chunk", "chunk tree"}, {"extent", "extent tree"}, {"dev", "device tree"},
				{"fs", "fs tree"}, {"csum", "checksum tree"}, {"10", "free space tree"}, {"9", "UUID tree"},
			} {
				dump := fsmaptest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", tree.arg, img)
				nodes := regexp.MustCompile(`(?m)^(?:leaf|node) (\d+) (?:items|level)`).FindAllStringSubmatch(dump, -1)
				if len(nodes) == 0 {
					t.Fatalf("dump-tree -t %s: no node in\n%s", tree.arg, dump)
				}
				if tree.arg == "fs" && len(nodes) < 3 {
					t.Errorf("the fs tree has %d nodes: want a tree of two levels", len(nodes))
				}
				for _, m := range nodes {
					l, _ := strconv.ParseInt(m[1], 10, 64)
					for _, p := range mirrors(t, img, l) {
						if got := fsmaptest.Locate1(t, fs, p+50, 4000); got.Structure != tree.want {
							t.Errorf("%s node %d at %d: %+v", tree.arg, l, p, got)
						}
					}
				}
			}

			// /usr/share/big's data, and the fs tree leaf with its inode item.
			dump := fsmaptest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "fs", img)
			m := regexp.MustCompile(`key \((\d+) INODE_REF \d+\) itemoff \d+ itemsize \d+\n\s+index \d+ namelen 3 name: big\n`).FindStringSubmatch(dump)
			if m == nil {
				t.Fatalf("no inode named big in\n%s", dump)
			}
			if e := regexp.MustCompile(`key \(` + m[1] + ` EXTENT_DATA 0\) itemoff \d+ itemsize \d+\n.*\n\s+extent data disk byte (\d+)`).FindStringSubmatch(dump); e != nil {
				m = append(m, e[1])
			} else {
				t.Fatalf("no extent of /usr/share/big in\n%s", dump)
			}
			ino, _ := strconv.ParseUint(m[1], 10, 32)
			l, _ := strconv.ParseInt(m[2], 10, 64)
			for _, p := range mirrors(t, img, l+8192) {
				got := fsmaptest.Locate1(t, fs, p+10, 100)
				if got.Structure != "file data" || !slices.Equal(got.Inodes, []uint64{uint64(ino)}) || !slices.Equal(got.Paths, []string{"/usr/share/big"}) {
					t.Errorf("data of /usr/share/big at %d: %+v", p, got)
				}
			}
			var ll int64 // the leaf that holds big's inode item
			for _, part := range strings.Split(dump, "\nleaf ")[1:] {
				if strings.Contains(part, fmt.Sprintf("key (%d INODE_ITEM 0)", ino)) {
					fmt.Sscanf(part, "%d", &ll)
				}
			}
			if ll == 0 {
				t.Fatalf("no leaf holds inode %d", ino)
			}
			got := fsmaptest.Locate1(t, fs, mirrors(t, img, ll)[0], 200)
			if got.Structure != "fs tree" || !slices.Contains(got.Inodes, uint64(ino)) || !slices.Contains(got.Paths, "/usr/share/big") {
				t.Errorf("leaf %d holding inode %d: %+v", ll, ino, got)
			}

			// The superblocks, the chunks' unused ends, and the space outside them.
			for _, c := range []struct {
				off  int64
				want string
			}{{65536 + 0x48, "superblock"}, {64<<20 + 0x48, "superblock mirror 1"}, {128<<20 - 1, "outside every chunk"}} {
				if got := fsmaptest.Locate1(t, fs, c.off, 1); got.Structure != c.want {
					t.Errorf("byte %d: %+v, want %q", c.off, got, c.want)
				}
			}
			chunks := regexp.MustCompile(`length (\d+) owner \d+ stripe_len \d+ type (\w+)\|\w+\n(?:.*\n){2}(?:\s+stripe \d+ devid 1 offset (\d+)\n.*\n)`).FindAllStringSubmatch(fsmaptest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "chunk", img), -1)
			if len(chunks) < 3 {
				t.Fatalf("%d chunks: want data, system and metadata", len(chunks))
			}
			for _, c := range chunks {
				n, _ := strconv.ParseInt(c[1], 10, 64)
				at, _ := strconv.ParseInt(c[3], 10, 64)
				want := map[string]string{"DATA": "data block group (unused)", "METADATA": "metadata block group (unused)", "SYSTEM": "system chunk (unused)"}[c[2]]
				if got := fsmaptest.Locate1(t, fs, at+n-1, 1); got.Structure != want {
					t.Errorf("the last byte of a %s chunk, at %d: %+v", c[2], at+n-1, got)
				}
			}
		})
	}
}

// FuzzLocate: a filesystem vmb did not write cannot make the mapper panic or loop.
// A btrfs spreads its few blocks over megabytes, too many for a fuzzer to mutate:
// the input is a sparse image (see sparse), made from a small real one.
func FuzzLocate(f *testing.F) {
	img := mkfs(f, 16<<20, map[string]string{"a/b": "x", "c": strings.Repeat("y", 5000)}, "-m", "single", "--nodesize", "4096")
	b := fsmaptest.ReadImage(f, img)
	packed := pack(b)
	f.Logf("seed: %d bytes", len(packed))
	f.Add(packed, int64(0), int64(len(b)))
	f.Fuzz(func(t *testing.T, packed []byte, off, n int64) {
		disk := unpack(packed)
		fs, err := Open(disk, disk.size)
		if err != nil {
			return
		}
		spans, _ := fs.Locate(off, n%(1<<20))
		for i, s := range spans {
			if s.Off < 0 || s.Len <= 0 || s.Off+s.Len > disk.size || i > 0 && s.Off != spans[i-1].Off+spans[i-1].Len {
				t.Errorf("span %+v off a filesystem of %d bytes", s, disk.size)
			}
		}
	})
}

// sparse is an image as its size (8 bytes) and the blocks that are not zero, each
// a 4-byte block number and 4096 bytes.
type sparse struct {
	size   int64
	blocks map[int64][]byte
}

func pack(img []byte) []byte {
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(img)))
	for at := 0; at+4096 <= len(img); at += 4096 {
		if blk := img[at : at+4096]; len(bytes.Trim(blk, "\x00")) > 0 {
			out = binary.LittleEndian.AppendUint32(out, uint32(at/4096))
			out = append(out, blk...)
		}
	}
	return out
}

func unpack(b []byte) *sparse {
	s := &sparse{blocks: map[int64][]byte{}}
	if len(b) < 8 {
		return s
	}
	s.size = int64(binary.LittleEndian.Uint64(b) % (1 << 40))
	for b = b[8:]; len(b) >= 4100; b = b[4100:] {
		s.blocks[int64(binary.LittleEndian.Uint32(b))] = b[4:4100]
	}
	return s
}

func (s *sparse) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off >= s.size {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && off+int64(n) < s.size {
		at := off + int64(n)
		blk, in := s.blocks[at/4096], at%4096
		k := min(int64(len(p)-n), 4096-in, s.size-at)
		if blk != nil {
			copy(p[n:n+int(k)], blk[in:in+k])
		} else {
			clear(p[n : n+int(k)])
		}
		n += int(k)
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// BenchmarkLocate opens and walks a filesystem of a few thousand files.
func BenchmarkLocate(b *testing.B) {
	fsmaptest.BenchOpen(b, mkfs(b, 256<<20, fsmaptest.BenchFiles()), Open)
}

// A subvolume's files are named by the subvolume's path, and its tree by its id;
// filefrag (FIEMAP) and btrfs-map-logical say where the file's data lies. The
// subvolume is made on a loop mount, as root.
func TestLocateSubvolume(t *testing.T) {
	img := mkfs(t, 256<<20, map[string]string{"etc/motd": "hi\n"})
	fsmaptest.Need(t, "e2fsprogs and btrfs-progs", "filefrag", "btrfs-map-logical")
	if os.Geteuid() != 0 {
		t.Skip("mounting a loop device needs root")
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("mount -o loop: %v\n%s", err, out)
	}
	mounted := true
	umount := func() {
		if mounted {
			mounted = false
			if err := exec.Command("umount", mnt).Run(); err != nil {
				t.Fatalf("umount: %v", err)
			}
		}
	}
	defer umount()
	fsmaptest.Run(t, "btrfs", "subvolume", "create", filepath.Join(mnt, "sv"))
	os.MkdirAll(filepath.Join(mnt, "sv/d"), 0o755)
	if err := os.WriteFile(filepath.Join(mnt, "sv/d/f"), bytes.Repeat([]byte("subvolume data "), 20000), 0o644); err != nil {
		t.Fatal(err)
	}
	fsmaptest.Run(t, "sync")
	fi, err := os.Stat(filepath.Join(mnt, "sv/d/f"))
	if err != nil {
		t.Fatal(err)
	}
	frag := fsmaptest.Run(t, "filefrag", "-v", "-b4096", filepath.Join(mnt, "sv/d/f"))
	umount()
	m := regexp.MustCompile(`(?m)^\s+0:\s+0\.\.\s+\d+:\s+(\d+)\.\.`).FindStringSubmatch(frag)
	if m == nil {
		t.Fatalf("filefrag:\n%s", frag)
	}
	l, _ := strconv.ParseInt(m[1], 10, 64)
	fs, _ := fsmaptest.Open(t, img, Open)
	phys := regexp.MustCompile(`physical (\d+)`).FindAllStringSubmatch(fsmaptest.Run(t, "btrfs-map-logical", "-l", fmt.Sprint(l*4096), img), -1)
	if len(phys) == 0 {
		t.Fatal("btrfs-map-logical: no physical address")
	}
	for _, p := range phys {
		at, _ := strconv.ParseInt(p[1], 10, 64)
		got := fsmaptest.Locate1(t, fs, at, 4096)
		if got.Structure != "file data" || !slices.Equal(got.Inodes, []uint64{fi.Sys().(*syscall.Stat_t).Ino}) || !slices.Equal(got.Paths, []string{"/sv/d/f"}) {
			t.Errorf("data of /sv/d/f at %d: %+v", at, got)
		}
	}
	dump := fsmaptest.Run(t, "btrfs", "inspect-internal", "dump-tree", "-t", "256", img)
	nodes := regexp.MustCompile(`(?m)^(?:leaf|node) (\d+) (?:items|level)`).FindAllStringSubmatch(dump, -1)
	if len(nodes) == 0 {
		t.Fatalf("dump-tree -t 256: no node in\n%s", dump)
	}
	for _, n := range nodes {
		l, _ := strconv.ParseInt(n[1], 10, 64)
		for _, p := range mirrors(t, img, l) {
			if got := fsmaptest.Locate1(t, fs, p, 4096); got.Structure != "subvolume tree 256" {
				t.Errorf("subvolume node %d at %d: %+v", l, p, got)
			}
		}
	}
}
