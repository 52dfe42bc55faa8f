package ext

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"

	"vmb.dev/vmb/internal/fsmap/fsmaptest"
)

// Tree, Inode, Content and Xattrs read back what mkfs.ext4 -d and debugfs wrote,
// with extents and with block maps.
func TestFiles(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 20000) // past the indirect blocks of 1 KiB
	for _, opts := range [][]string{nil, {"-b", "1024", "-O", "^extent,^64bit,^flex_bg"}} {
		t.Run(strings.Join(opts, " "), func(t *testing.T) {
			img := mkfs(t, 32<<20, map[string]string{"etc/motd": "hello\n", "usr/share/big": big}, opts...)
			for _, req := range []string{"symlink /etc/link /usr/share/big", "ea_set /etc/motd user.note hi",
				"ea_set /etc/motd security.x " + strings.Repeat("v", 300), "set_inode_field /etc/motd mode 0100600",
				"set_inode_field /etc/motd uid 1000", "set_inode_field /etc/motd mtime 20200101"} {
				debugfsW(t, img, req)
			}
			fs, _ := fsmaptest.Open(t, img, Open)
			tree, err := fs.Tree()
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []string{"/", "/etc", "/etc/motd", "/etc/link", "/usr/share/big", "/lost+found"} {
				if tree[p] == 0 {
					t.Errorf("Tree has no %s: %v", p, tree)
				}
			}
			read := func(p string) (*Inode, string) {
				in, err := fs.Inode(tree[p])
				if err != nil {
					t.Fatal(err)
				}
				var b bytes.Buffer
				if err := fs.Content(in, &b); err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				return in, b.String()
			}
			if _, got := read("/usr/share/big"); got != big {
				t.Errorf("/usr/share/big: %d bytes, want %d", len(got), len(big))
			}
			in, got := read("/etc/motd")
			if got != "hello\n" || in.Mode != 0o100600 || in.UID != 1000 || in.Mtime.Year() != 2020 || in.Type() != "file" {
				t.Errorf("/etc/motd: %q %+v", got, in)
			}
			xs, err := fs.Xattrs(in)
			if err != nil {
				t.Fatal(err)
			}
			names := ""
			for _, x := range xs {
				names += x.Name + "=" + string(x.Value[:min(len(x.Value), 2)]) + " "
			}
			if !strings.Contains(names, "user.note=hi ") || !strings.Contains(names, "security.x=vv ") {
				t.Errorf("xattrs: %s", names)
			}
			if in, got := read("/etc/link"); got != "/usr/share/big" || in.Type() != "symlink" {
				t.Errorf("/etc/link: %q %s", got, in.Type())
			}
		})
	}
}

// debugfsW runs a debugfs request that writes to img.
func debugfsW(t testing.TB, img, req string) {
	t.Helper()
	if out, err := exec.Command("debugfs", "-w", "-R", req, img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs -w -R %q: %v\n%s", req, err, out)
	}
}
