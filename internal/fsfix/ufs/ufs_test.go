package ufs

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// ufsTree makes a tree with what a UFS reader must get right: nesting, a file that
// needs indirect blocks, an empty file, short and long symlinks, a hard link, a
// fifo, a device, a setuid file, owners and times.
func ufsTree(t *testing.T) string {
	src := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(src, "a/b/c"), 0o750))
	big := make([]byte, 3<<20+12345)
	for i := range big {
		big[i] = byte(i*31 + i>>9)
	}
	must(os.WriteFile(filepath.Join(src, "a/big"), big, 0o644))
	must(os.WriteFile(filepath.Join(src, "a/b/c/empty"), nil, 0o600))
	must(os.WriteFile(filepath.Join(src, "suid"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Chmod(filepath.Join(src, "suid"), 0o4755))
	must(os.Symlink("a/big", filepath.Join(src, "short")))
	must(os.Symlink(strings.Repeat("long/", 40)+"target", filepath.Join(src, "long")))
	must(os.Link(filepath.Join(src, "a/big"), filepath.Join(src, "a/b/hard")))
	must(unix.Mkfifo(filepath.Join(src, "fifo"), 0o640))
	must(unix.Mknod(filepath.Join(src, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(os.Lchown(filepath.Join(src, "a/b"), 1234, 5678))
	must(os.Lchown(filepath.Join(src, "short"), 42, 43))
	for i, p := range []string{"a/big", "a/b/c/empty", "suid", "fifo", "a/b/c", "a/b", "a", "."} {
		tm := unix.Timespec{Sec: int64(1_500_000_000 + i*1000)}
		must(unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(src, p), []unix.Timespec{tm, tm}, 0))
	}
	return src
}

// describe lists a tree: one line an entry, with what UFS keeps of it.
func describe(t *testing.T, root string) string {
	var out strings.Builder
	inodes := map[uint64]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(&out, "%s mode=%o uid=%d gid=%d size=%d mtime=%d", rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, _ := os.ReadFile(p)
			fmt.Fprintf(&out, " sum=%x", hashOf(b))
			if st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					fmt.Fprintf(&out, " link=%s", first)
				} else {
					inodes[st.Ino] = rel
				}
			}
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			fmt.Fprintf(&out, " -> %s", target)
		case unix.S_IFCHR, unix.S_IFBLK:
			fmt.Fprintf(&out, " rdev=%d,%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
		}
		if d.IsDir() && rel == "." {
			// The root's times are makefs's to choose.
			s := out.String()
			out.Reset()
			out.WriteString(s[:strings.LastIndex(s, " mtime=")])
		}
		out.WriteString("\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func hashOf(b []byte) uint64 {
	var h uint64 = 14695981039346656037
	for _, c := range b {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return h
}

func makefs(t *testing.T, version int, src string, args ...string) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "ufs.img")
	args = append([]string{"-t", "ffs", "-o", fmt.Sprintf("version=%d", version), "-s", "32m"}, args...)
	out, err := exec.Command("makefs", append(args, img, src)...).CombinedOutput()
	if err != nil {
		t.Fatalf("makefs: %v\n%s", err, out)
	}
	return img
}

// What makefs writes, Read reads back: for UFS1 and UFS2.
func TestRead(t *testing.T) {
	if _, err := exec.LookPath("makefs"); err != nil || os.Getuid() != 0 {
		t.Skip("needs makefs (dev/setup installs it) and root (owners, device nodes)")
	}
	src := ufsTree(t)
	want := describe(t, src)
	for _, version := range []int{1, 2} {
		img := makefs(t, version, src)
		dst := t.TempDir()
		if err := Read(img, dst); err != nil {
			t.Fatalf("UFS%d: %v", version, err)
		}
		if got := describe(t, dst); got != want {
			t.Errorf("UFS%d: the tree read back differs:\n--- read back\n%s--- written\n%s", version, got, want)
		}
		p, err := ReadParams(img)
		if err != nil || p.Version != version || p.BSize == 0 || p.FSize == 0 {
			t.Errorf("UFS%d: params %+v, %v", version, p, err)
		}
	}
	if err := Read(filepath.Join(src, "a/big"), t.TempDir()); err == nil || !strings.Contains(err.Error(), "no UFS1 or UFS2 superblock") {
		t.Errorf("Read of a file that is no filesystem: %v", err)
	}
}

// Two makefs runs of the same tree, times clamped, differ in pointers makefs leaks
// from its memory;
// Fix makes them the same, and sets the label and ID blkid shows.
func TestFix(t *testing.T) {
	if _, err := exec.LookPath("makefs"); err != nil {
		t.Skip("needs makefs (dev/setup installs it)")
	}
	src := t.TempDir()
	os.WriteFile(filepath.Join(src, "f"), []byte("x\n"), 0o644)
	for _, version := range []int{1, 2} {
		var imgs [2][]byte
		for i := range imgs {
			img := makefs(t, version, src, "-T", "1577836800") // as the agent runs it
			if err := Fix(img, "vmbdisk", 0xdeadbeef); err != nil {
				t.Fatal(err)
			}
			imgs[i], _ = os.ReadFile(img)
			if i == 0 && version == 2 {
				out, _ := exec.Command("blkid", "-p", "-o", "export", img).Output()
				if !strings.Contains(string(out), "LABEL=vmbdisk\n") || !strings.Contains(string(out), "deadbeef") {
					t.Errorf("UFS2: blkid does not show the label and ID:\n%s", out)
				}
			}
			p, err := ReadParams(img)
			if err != nil || p.Label != "vmbdisk" || p.ID != 0xdeadbeef {
				t.Errorf("UFS%d: params after Fix: %+v, %v", version, p, err)
			}
		}
		if !bytes.Equal(imgs[0], imgs[1]) {
			t.Errorf("UFS%d: two makefs runs of the same tree differ after Fix", version)
		}
	}
	if err := Fix(filepath.Join(src, "f"), "", 0); err == nil {
		t.Error("Fix of a file that is no filesystem: no error")
	}
}

// Read, ReadParams and Fix read a filesystem they did not write: whatever the
// bytes, they return and do not panic. The seed is what makefs makes of a tree
// of one file in 1 MiB, for UFS1 and UFS2, where the host has makefs.
func FuzzRead(f *testing.F) {
	src := f.TempDir()
	if err := os.WriteFile(filepath.Join(src, "f"), []byte("x\n"), 0o644); err != nil {
		f.Fatal(err)
	}
	for _, version := range []string{"1", "2"} {
		fstest.AddImage(f, "makefs", 0, 0xb000, func(img string) {
			fstest.Run(f, "makefs", "-t", "ffs", "-o", "version="+version, "-s", "1m", "-T", "1577836800", img, src)
		})
	}
	f.Add(make([]byte, 2048))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		ReadParams(img)
		dst := t.TempDir()
		Read(img, dst)
		Fix(img, "vmb", 1)
	})
}
