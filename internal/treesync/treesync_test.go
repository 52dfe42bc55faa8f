package treesync

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// listing describes every entry of a tree but the ones skip leaves: what Sync
// must make the same.
func listing(t *testing.T, root string, skip func(string) bool) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r := rel(root, p)
		if skip != nil && skip(r) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		line := fmt.Sprintf("%s mode=%o uid=%d gid=%d", r, st.Mode, st.Uid, st.Gid)
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			line += fmt.Sprintf(" size=%d sha=%x links=%d mtime=%d", len(b), sha256.Sum256(b), st.Nlink, st.Mtim.Nano())
		case unix.S_IFLNK:
			target, _ := os.Readlink(p)
			line += " -> " + target
		case unix.S_IFCHR, unix.S_IFBLK:
			line += fmt.Sprintf(" rdev=%d", st.Rdev)
		case unix.S_IFDIR:
			line += fmt.Sprintf(" mtime=%d", st.Mtim.Nano())
		}
		x, err := xattrs(p)
		if err != nil {
			return err
		}
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range x {
				if !yield(k) {
					return
				}
			}
		}) {
			line += fmt.Sprintf(" %s=%q", k, x[k])
		}
		out = append(out, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func write(t *testing.T, p, content string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func TestSync(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("owners and device nodes need root")
	}
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "src"), filepath.Join(dir, "dst")
	// The tree before: dst is a copy of it.
	write(t, src+"/etc/hostname", "before\n")
	write(t, src+"/etc/same", "unchanged\n")
	write(t, src+"/etc/samesize", "aaaa\n")
	write(t, src+"/etc/gone", "removed later\n")
	write(t, src+"/var/log/journal/x/system.journal", "boot 1\n")
	write(t, src+"/usr/bin/tool", "#!/bin/sh\n")
	write(t, src+"/becomes-dir", "a file first\n")
	os.MkdirAll(src+"/olddir/sub", 0o755)
	write(t, src+"/olddir/sub/f", "in a removed directory\n")
	os.Symlink("hostname", src+"/etc/link")
	if b, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, b)
	}
	sameIno, sameSizeIno := ino(t, dst+"/etc/same"), ino(t, dst+"/etc/samesize")

	// What the boot changed.
	write(t, src+"/etc/hostname", "after, and longer\n")
	write(t, src+"/etc/samesize", "bbbb\n")
	os.Remove(src + "/etc/gone")
	os.RemoveAll(src + "/olddir")
	os.Remove(src + "/etc/link")
	os.Symlink("/elsewhere", src+"/etc/link")
	os.Remove(src + "/becomes-dir")
	write(t, src+"/becomes-dir/inside", "now a directory\n")
	write(t, src+"/var/log/journal/x/system.journal", "boot 2, not carried over\n")
	write(t, src+"/home/u/new", "a new file\n")
	os.Chown(src+"/home/u/new", 1000, 1000)
	os.Chown(src+"/home/u", 1000, 1000)
	os.Chmod(src+"/usr/bin/tool", 0o4755)
	os.Link(src+"/home/u/new", src+"/home/u/hardlink")
	if err := unix.Mknod(src+"/dev-null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(src+"/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(src+"/usr/bin/tool", "user.vmb", []byte("x"), 0); err != nil {
		t.Logf("no user xattrs here: %v", err)
	}
	old := time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)
	os.Chtimes(src+"/etc/hostname", old, old)

	skip := func(r string) bool { ok, _ := filepath.Match("/var/log/journal", r); return ok }
	st, err := Sync(src, dst, skip)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(listing(t, src, skip), listing(t, dst, skip)); diff != "" {
		t.Errorf("after Sync (-src +dst):\n%s", diff)
	}
	if b, _ := os.ReadFile(dst + "/var/log/journal/x/system.journal"); string(b) != "boot 1\n" {
		t.Errorf("a skipped path was changed: %q", b)
	}
	if ino(t, dst+"/etc/same") != sameIno || ino(t, dst+"/etc/samesize") != sameSizeIno {
		t.Error("an unchanged file, or one changed in place, has a new inode")
	}
	if ino(t, dst+"/home/u/new") != ino(t, dst+"/home/u/hardlink") {
		t.Error("a hard link was carried over as a copy")
	}
	if st.Removed != 2 || st.Created == 0 || st.Updated == 0 {
		t.Errorf("stats %+v: want 2 removed (etc/gone, olddir), some created and updated", st)
	}

	// Again: nothing left to do.
	st, err = Sync(src, dst, skip)
	if err != nil || st.Created != 0 || st.Removed != 0 {
		t.Errorf("second Sync: %+v, %v", st, err)
	}
	if !strings.Contains(strings.Join(listing(t, dst, nil), "\n"), "/var/log/journal/x/system.journal") {
		t.Error("the skipped tree was removed")
	}
}
