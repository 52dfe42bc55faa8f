package ext

import (
	"bytes"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// mkfs makes an ext4 image of size bytes populated from a tree of files, as
// mkfs.ext4 -d does, and returns its path.
func mkfs(t testing.TB, size int64, files map[string]string, args ...string) string {
	t.Helper()
	fsmaptest.Need(t, "e2fsprogs", "mkfs.ext4")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	fsmaptest.WriteFiles(t, root, files)
	img := filepath.Join(dir, "fs.img")
	args = append([]string{"-q", "-F", "-E", "root_owner=0:0", "-d", root}, args...)
	args = append(args, img, strconv.FormatInt(size/1024, 10)+"k")
	if out, err := exec.Command("mkfs.ext4", args...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 %v: %v\n%s", args, err, out)
	}
	return img
}

// debugfs runs a debugfs request on img and returns its output.
func debugfs(t testing.TB, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", req, err)
	}
	return strings.TrimSpace(string(out))
}

// Locate agrees with debugfs on where files, inodes and the filesystem's own
// structures lie.
func TestLocate(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 4096) // 64 KiB: more than one block
	for _, opts := range [][]string{nil, {"-b", "1024", "-O", "^extent,^64bit,^flex_bg"}, {"-O", "^has_journal"}} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			img := mkfs(t, 32<<20, map[string]string{"etc/motd": "hello\n", "usr/share/big": big, "etc/hostname": "vmb\n"}, opts...)
			fs, _ := fsmaptest.Open(t, img, Open)
			bs := fs.BlockSize()
			inum := func(p string) uint32 {
				s := debugfs(t, img, "stat "+p)
				var n uint32
				fmt.Sscanf(s, "Inode: %d", &n)
				return n
			}
			bmap := func(p string, i int) int64 {
				n, err := strconv.ParseInt(debugfs(t, img, fmt.Sprintf("bmap %s %d", p, i)), 10, 64)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			big1 := bmap("/usr/share/big", 1)
			got, err := fs.Locate(big1*bs+10, 100)
			if err != nil {
				t.Fatal(err)
			}
			bigIno := inum("/usr/share/big")
			if diff := cmp.Diff([]Span{{Off: big1*bs + 10, Len: 100, Structure: "file data", Inodes: []uint64{uint64(bigIno)}, Paths: []string{"/usr/share/big"}}}, got); diff != "" {
				t.Errorf("data of /usr/share/big (-want +got):\n%s", diff)
			}
			motd := inum("/etc/motd")
			// The inode table slot of /etc/motd: debugfs's imap says where.
			var blk, off int64
			imap := debugfs(t, img, "imap /etc/motd")
			if _, err := fmt.Sscanf(imap[strings.Index(imap, "located at block"):], "located at block %d, offset 0x%x", &blk, &off); err != nil {
				t.Fatalf("imap: %v: %s", err, imap)
			}
			got, _ = fs.Locate(blk*bs+off+0x10, 4) // i_mtime
			if diff := cmp.Diff([]Span{{Off: blk*bs + off + 0x10, Len: 4, Structure: "inode table", Inodes: []uint64{uint64(motd)}, Paths: []string{"/etc/motd"}}}, got); diff != "" {
				t.Errorf("inode of /etc/motd (-want +got):\n%s", diff)
			}
			got, _ = fs.Locate(1024+0x2c, 4) // s_mtime
			if len(got) != 1 || got[0].Structure != "superblock" {
				t.Errorf("superblock: %+v", got)
			}
			// The directory /etc.
			etc := bmap("/etc", 0)
			got, _ = fs.Locate(etc*bs, bs)
			if len(got) != 1 || got[0].Structure != "directory" || !cmp.Equal(got[0].Paths, []string{"/etc"}) {
				t.Errorf("directory /etc at block %d: %+v", etc, got)
			}
			// The last block is free.
			got, _ = fs.Locate(fs.blocks*bs-bs, bs)
			if len(got) != 1 || got[0].Structure != "free blocks" {
				t.Errorf("last block: %+v", got)
			}
			// The journal, where there is one.
			if jb, err := strconv.ParseInt(debugfs(t, img, "bmap <8> 3"), 10, 64); err == nil && jb > 0 {
				got, _ = fs.Locate(jb*bs, 1)
				if len(got) != 1 || got[0].Structure != "journal" {
					t.Errorf("journal block %d: %+v", jb, got)
				}
			}
			// Backup superblock of group 1.
			g1 := fs.firstData + fs.blocksPerGroup
			got, _ = fs.Locate(g1*bs, 1)
			if len(got) != 1 || got[0].Structure != "backup superblock (group 1)" {
				t.Errorf("group 1's first block %d: %+v", g1, got)
			}
		})
	}
}

// A filesystem vmb did not write cannot make the mapper panic or loop.
func FuzzLocate(f *testing.F) {
	img := mkfs(f, 128<<10, map[string]string{"a/b": "x", "c": strings.Repeat("y", 5000)}, "-b", "1024", "-N", "16", "-O", "^has_journal,^resize_inode")
	b := fsmaptest.ReadImage(f, img)
	f.Add(b, int64(0), int64(len(b)))
	f.Fuzz(func(t *testing.T, disk []byte, off, n int64) {
		fs, err := Open(bytes.NewReader(disk), int64(len(disk)))
		if err != nil {
			return
		}
		spans, _ := fs.Locate(off, n%(1<<20))
		fsmaptest.InBounds(t, spans, int64(len(disk)), "filesystem")
		tree, _ := fs.Tree()
		for _, ino := range tree {
			if in, err := fs.Inode(ino); err == nil {
				fs.Xattrs(in)
				fs.Content(in, io.Discard)
			}
		}
	})
}
