package xfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/internal/fsfix"
	"vmb.dev/vmb/internal/fsfix/fstest"
)

// Two XFS filesystems made the same way at different times, mkfs.xfs and a
// session of the kernel's writing (where the host can mount them), differ in
// inode times and generations, LSNs and the log; after Fix they are the same,
// xfs_repair finds them sound, and the kernel mounts them again.
func TestFixXFS(t *testing.T) {
	for _, tool := range []string{"mkfs.xfs", "xfs_db", "xfs_repair"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs xfsprogs)", tool)
		}
	}
	epoch := time.Now().Add(-time.Hour).Unix()
	mounts := true
	build := func(i int) []byte {
		img := filepath.Join(t.TempDir(), "xfs.img")
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 320<<20); err != nil { // mkfs.xfs's least
			t.Fatal(err)
		}
		fstest.Run(t, "mkfs.xfs", "-f", "-q", "-m", "uuid=5b9b05c4-10e5-4a41-8d1e-000000000001", "-L", "vmb", img)
		mnt := t.TempDir()
		if mounts {
			if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
				t.Logf("the host cannot mount XFS (%v: %s): mkfs.xfs's output only", err, out)
				mounts = false
			}
		}
		if mounts {
			os.MkdirAll(filepath.Join(mnt, "dir/sub"), 0o755)
			// Enough names for a directory of leaf and node blocks.
			for j := range 600 {
				os.WriteFile(filepath.Join(mnt, "dir", fmt.Sprintf("%s-%04d", strings.Repeat("n", 40), j)), nil, 0o644)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
			os.WriteFile(filepath.Join(mnt, "dir/sub/big"), big, 0o644)
			os.Symlink(strings.Repeat("long/", 200), filepath.Join(mnt, "dir/link"))
			// A file of 200 extents (an extent btree) and a remote attribute value.
			frag, err := os.Create(filepath.Join(mnt, "dir/frag"))
			if err != nil {
				t.Fatal(err)
			}
			for j := range 200 {
				frag.WriteAt(big[:4096], int64(j)*8192)
			}
			frag.Close()
			if err := unix.Setxattr(filepath.Join(mnt, "dir/sub"), "user.big", big[:6000], 0); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(mnt, "dir/sub/motd"), []byte("hello\n"), 0o644)
			os.Remove(filepath.Join(mnt, "dir", strings.Repeat("n", 40)+"-0007"))
			fstest.Run(t, "umount", mnt)
		}
		if i == 0 {
			time.Sleep(10 * time.Millisecond) // the second one made at another time
		}
		n, err := Fix(img, epoch, "xfs_db")
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Error("Fix changed nothing")
		}
		if out, err := exec.Command("xfs_repair", "-n", "-f", img).CombinedOutput(); err != nil || bytes.Contains(out, []byte("ahead of log")) {
			t.Errorf("xfs_repair -n after Fix: %v\n%s", err, out)
		}
		if lsn := fstest.Run(t, "xfs_db", "-r", "-c", "agf 0", "-c", "p lsn", img); lsn != "lsn = 0\n" {
			t.Errorf("AGF 0 after Fix: %s", lsn)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		if mounts {
			fstest.Run(t, "mount", "-o", "loop,ro", img, mnt)
			got, err := os.ReadFile(filepath.Join(mnt, "dir/sub/motd"))
			fstest.Run(t, "umount", mnt)
			if string(got) != "hello\n" {
				t.Errorf("/dir/sub/motd after Fix: %q, %v", got, err)
			}
		}
		return b
	}
	a, b := build(0), build(1)
	if !bytes.Equal(a, b) {
		n := 0
		for i := range a {
			if a[i] != b[i] {
				if n < 10 {
					t.Logf("differ at byte %d (block %d + %d)", i, i/4096, i%4096)
				}
				n++
			}
		}
		t.Errorf("two XFS filesystems made the same way differ in %d bytes after Fix", n)
	}
	if _, err := Fix(os.Args[0], epoch, ""); err == nil || errors.Is(err, fsfix.ErrUnsupported) {
		t.Errorf("Fix of a file that is no XFS: %v", err)
	}
	// A version 4 filesystem is left as it is, which the job says.
	v4 := filepath.Join(t.TempDir(), "v4.img")
	os.WriteFile(v4, nil, 0o644)
	os.Truncate(v4, 320<<20)
	fstest.Run(t, "mkfs.xfs", "-f", "-q", "-m", "crc=0", v4)
	if _, err := Fix(v4, epoch, ""); !errors.Is(err, fsfix.ErrUnsupported) {
		t.Errorf("Fix of a version 4 XFS: %v, want fsfix.ErrUnsupported", err)
	}
}

// Fix reads a filesystem it did not write: whatever the bytes, it returns and
// does not panic. The seed is allocation group 0 of what mkfs.xfs makes, where the
// host has it.
func FuzzFix(f *testing.F) {
	fstest.AddImage(f, "mkfs.xfs", 320<<20, 0x18000, func(img string) {
		fstest.Run(f, "mkfs.xfs", "-f", "-q", "-m", "uuid=5b9b05c4-10e5-4a41-8d1e-000000000001", img)
	})
	f.Add(append([]byte("XFSB"), make([]byte, 4096)...))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		Fix(img, 1577836800, "")
	})
}

// What a free-space btree block holds past its last record, left there by the
// kernel's earlier updates, Fix zeroes; the records, and the checksum, stay good.
func TestFixXFSBtreeTail(t *testing.T) {
	for _, tool := range []string{"mkfs.xfs", "xfs_db", "xfs_repair"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs xfsprogs)", tool)
		}
	}
	img := filepath.Join(t.TempDir(), "xfs.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 320<<20)
	fstest.Run(t, "mkfs.xfs", "-f", "-q", "-m", "uuid=5b9b05c4-10e5-4a41-8d1e-000000000001", img)
	var root int64
	fmt.Sscanf(fstest.Run(t, "xfs_db", "-r", "-c", "agf 0", "-c", "p bnoroot", img), "bnoroot = %d", &root)
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	blk := make([]byte, 4096)
	f.ReadAt(blk, root*4096)
	if string(blk[:4]) != "AB3B" {
		t.Fatalf("block %d: %q, no bnobt block", root, blk[:4])
	}
	n := int(blk[6])<<8 | int(blk[7])
	end := 56 + 8*n
	want := bytes.Clone(blk)
	copy(blk[end:], bytes.Repeat([]byte{0xa5}, 24)) // a stale record
	xfsCRC(blk, 52)
	f.WriteAt(blk, root*4096)
	if _, err := Fix(img, 1577836800, ""); err != nil {
		t.Fatal(err)
	}
	f.ReadAt(blk, root*4096)
	if !bytes.Equal(blk, want) {
		t.Errorf("bnobt block after Fix: %x, want %x", blk[end-8:end+32], want[end-8:end+32])
	}
	if out, err := exec.Command("xfs_repair", "-n", "-f", img).CombinedOutput(); err != nil {
		t.Errorf("xfs_repair -n after Fix: %v\n%s", err, out)
	}
}
