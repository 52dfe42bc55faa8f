package diff

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// mountFill mounts the filesystem image fs with mount (a FUSE mounter's command
// line, the mount point last, and whether it wants a loop device), lets fill write
// to it, and unmounts it.
func mountFill(t *testing.T, fs string, loop bool, mount []string, fill func(root string)) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting an image needs root")
	}
	dev := fs
	if loop {
		dev = run(t, "", "losetup", "-f", "--show", fs)
		defer run(t, "", "losetup", "-d", dev)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	os.Mkdir(mnt, 0o755)
	run(t, "", mount[0], append(mount[1:], dev, mnt)...)
	defer run(t, "", "umount", mnt)
	fill(mnt)
}

// stampedFile is n bytes whose every 4 KiB block starts with a mark, so that the
// test can find the file's clusters in the image.
func stampedFile(n int) []byte {
	b := make([]byte, n)
	for k := 0; k*4096 < n; k++ {
		copy(b[k*4096:], fmt.Sprintf("vmb-block-%d\n", k))
	}
	return b
}

// levelTwo runs level 2 on base's variants and checks the ranges each change
// gives, as "structure [paths] in A", on filesystem typ.
func levelTwo(t *testing.T, dir, base, typ string, cases []struct {
	name   string
	change func(fs string)
	want   []string
	only   bool // the wanted ranges and no others
}) {
	s, variant, ingest := variants(t, dir, base)
	a := ingest(variant("a", func(string) {}))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range levelTwoRanges(t, s, a, ingest(variant(tc.name, tc.change)), typ) {
				got = append(got, fmt.Sprintf("%s %v %s", r.Structure, r.Paths, r.InA))
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("no range %q in %q", w, got)
				}
			}
			if tc.only && len(got) != len(tc.want) {
				t.Errorf("ranges %q, want %q alone", got, tc.want)
			}
		})
	}
}

// overwrite writes b over the second stamped block of the image fs.
func overwrite(t *testing.T, fs string, b []byte) {
	img, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	at := bytes.Index(img, []byte("vmb-block-1\n"))
	if at < 0 {
		t.Fatal("no stamped block in the image")
	}
	f, _ := os.OpenFile(fs, os.O_RDWR, 0)
	f.WriteAt(b, int64(at)+100)
	f.Close()
}

// Level 2 names the structure of a changed file on exFAT: its data; and of an
// added one: its data, its directory, the allocation bitmap.
func TestSnapshotsExFAT(t *testing.T) {
	need(t, "mkfs.exfat", "mount.exfat-fuse", "losetup", "sfdisk")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.fs")
	os.WriteFile(base, nil, 0o644)
	os.Truncate(base, 32<<20)
	run(t, "", "mkfs.exfat", base)
	mount := []string{"mount.exfat-fuse"}
	mountFill(t, base, true, mount, func(root string) {
		os.MkdirAll(filepath.Join(root, "EFI", "BOOT"), 0o755)
		os.WriteFile(filepath.Join(root, "EFI", "BOOT", "grub long name.efi"), stampedFile(12000), 0o644)
	})
	levelTwo(t, dir, base, "exfat", []struct {
		name   string
		change func(fs string)
		want   []string
		only   bool
	}{
		{"content", func(fs string) { overwrite(t, fs, []byte("GRUB")) },
			[]string{"file data [/EFI/BOOT/grub long name.efi] "}, true},
		{"added", func(fs string) {
			mountFill(t, fs, true, mount, func(root string) {
				os.WriteFile(filepath.Join(root, "EFI", "BOOT", "new.efi"), bytes.Repeat([]byte("new"), 5000), 0o644)
			})
		}, []string{"allocation bitmap [] ", "directory [/EFI/BOOT] ", "file data [/EFI/BOOT/new.efi] free clusters"}, false},
	})
}

// Level 2 names the structure of a changed file on NTFS: its data; and of an
// added one: its MFT record (free in A), its data, its directory's index.
func TestSnapshotsNTFS(t *testing.T) {
	need(t, "mkntfs", "ntfs-3g", "sfdisk")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.fs")
	os.WriteFile(base, nil, 0o644)
	os.Truncate(base, 32<<20)
	run(t, "", "mkntfs", "-F", "-Q", "-q", base)
	mount := []string{"ntfs-3g"}
	mountFill(t, base, false, mount, func(root string) {
		os.MkdirAll(filepath.Join(root, "Windows", "System32"), 0o755)
		os.WriteFile(filepath.Join(root, "Windows", "System32", "a long name.dll"), stampedFile(12000), 0o644)
	})
	levelTwo(t, dir, base, "ntfs", []struct {
		name   string
		change func(fs string)
		want   []string
		only   bool
	}{
		{"content", func(fs string) { overwrite(t, fs, []byte("MZ")) },
			[]string{"file data [/Windows/System32/a long name.dll] "}, true},
		{"added", func(fs string) {
			mountFill(t, fs, false, mount, func(root string) {
				os.WriteFile(filepath.Join(root, "Windows", "System32", "new.dll"), bytes.Repeat([]byte("new"), 5000), 0o644)
			})
		}, []string{"MFT record [/Windows/System32/new.dll] free MFT records", "$Bitmap [/$Bitmap] ",
			"file data [/Windows/System32/new.dll] free clusters"}, false},
	})
}
