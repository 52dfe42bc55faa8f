package diff

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/cas"
)

func need(t *testing.T, tools ...string) {
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (dev/setup installs e2fsprogs and fdisk)", tool)
		}
	}
}

func run(t *testing.T, stdin string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s%s", name, args, err, out, stderr.Bytes())
	}
	return strings.TrimSpace(string(out))
}

const partOff = 1 << 20 // where the root partition starts

// gptDisk makes a GPT disk whose partition 1, "root", holds the filesystem image fs
// (a disk of 40 MiB for an image of 32 MiB, larger for a larger one: mkfs.btrfs
// grows its image to what it needs).
func gptDisk(t *testing.T, fs string) string {
	t.Helper()
	fi, err := os.Stat(fs)
	if err != nil {
		t.Fatal(err)
	}
	sectors := (fi.Size() + 511) / 512
	disk := fs + ".disk"
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(max(40<<20, partOff+sectors*512+1<<20))
	f.Close()
	run(t, fmt.Sprintf("label: gpt\nlabel-id: 8F1E5F9A-3C3B-4F43-9E0A-2C4C3A1B5D6E\nstart=2048, size=%d, name=root, uuid=0F7D0C2E-6E55-4A38-9D8C-5D2B7F1A3C4E\n", sectors), "sfdisk", "--quiet", disk)
	run(t, "", "dd", "if="+fs, "of="+disk, "bs=1M", "seek=1", "conv=notrunc", "status=none")
	return disk
}

func TestSnapshots(t *testing.T) {
	need(t, "mkfs.ext4", "debugfs", "sfdisk")
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	for name, content := range map[string]string{"etc/motd": "hello\n", "etc/hostname": "vmb\n", "usr/big": strings.Repeat("x", 100000)} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(name)), 0o755)
		os.WriteFile(filepath.Join(root, name), []byte(content), 0o644)
	}
	os.Symlink("motd", filepath.Join(root, "etc/link"))
	base := filepath.Join(dir, "base.fs")
	run(t, "", "mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "root_owner=0:0", "-U", "6a1b7c2d-0000-4000-8000-000000000001", "-d", root, base, "32M")
	stat := func(fs, p string) (ino int, block int64) {
		s := run(t, "", "debugfs", "-R", "stat "+p, fs)
		fmt.Sscanf(s, "Inode: %d", &ino)
		b, err := strconv.ParseInt(run(t, "", "debugfs", "-R", "bmap "+p+" 0", fs), 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return ino, b
	}
	motd, motdBlock := stat(base, "/etc/motd")
	mtime := "" // of /etc/motd, as mkfs.ext4 -d copied it
	if fi, err := os.Stat(filepath.Join(root, "etc/motd")); err == nil {
		mtime = fi.ModTime().UTC().Truncate(time.Second).Format(time.RFC3339)
	}

	s, variant, ingest := variants(t, dir, base)
	a := ingest(variant("a", func(string) {}))

	type want struct {
		structure string
		inodes    []uint64
		paths     []string
	}
	debugfs := func(reqs ...string) func(fs string) {
		return func(fs string) {
			for _, req := range reqs {
				run(t, "", "debugfs", "-w", "-R", req, fs)
			}
		}
	}
	newFile := filepath.Join(dir, "new.txt")
	os.WriteFile(newFile, []byte("new\n"), 0o644)
	for _, tc := range []struct {
		name   string
		change func(fs string)
		want   []want // the ranges that must be reported
		not    []string
		files  string // level 3, as WriteText writes it
	}{
		{"identical", func(string) {}, nil, nil, ""},
		{"content", func(fs string) {
			f, _ := os.OpenFile(fs, os.O_RDWR, 0)
			f.WriteAt([]byte("HELLO"), motdBlock*4096)
			f.Close()
		}, []want{{"file data", []uint64{uint64(motd)}, []string{"/etc/motd"}}}, nil, `files (root:1 ext4):
  /etc/motd: content (6 B -> 6 B)
    --- a/etc/motd
    +++ b/etc/motd
    @@ -1,1 +1,1 @@
    -hello
    +HELLO
`},
		{"mtime", debugfs("set_inode_field /etc/motd mtime 20200101"),
			[]want{{"inode table", []uint64{uint64(motd)}, []string{"/etc/motd"}}}, []string{"file data"},
			"  /etc/motd: mtime " + mtime + " -> 2020-01-01T00:00:00Z\n"},
		{"added", debugfs("write " + newFile + " /etc/new"), nil, nil,
			"  /etc/new: added (file, 0644, 0:0, 4 B)\n"},
		{"removed", debugfs("rm /etc/hostname"), nil, nil, "  /etc/hostname: removed (file, 0644, 0:0, 4 B)\n"},
		{"mode", debugfs("set_inode_field /etc/motd mode 0100600"), nil, nil, "  /etc/motd: mode 0644 -> 0600\n"},
		{"xattr", debugfs("ea_set /etc/motd user.note hi"), nil, nil, "  /etc/motd: xattr user.note added (\"hi\")\n"},
		{"symlink", debugfs("rm /etc/link", "symlink /etc/link /etc/hostname"), nil, nil, "  /etc/link: target motd -> /etc/hostname, "},
		{"hard link", debugfs("ln /etc/hostname /etc/hostname2", "set_inode_field /etc/hostname links_count 2"), nil, nil,
			"  /etc/hostname: links 1 -> 2\n  /etc/hostname2: added (file, 0644, 0:0, 4 B)\n"},
		{"superblock", debugfs("ssv mtime 20200101"),
			[]want{{"superblock", nil, nil}}, []string{"file data", "inode table"}, "files (root:1 ext4): no file differs\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := ingest(variant(tc.name, tc.change))
			rep, err := Snapshots(t.Context(), s, a, b, Options{})
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			t.Logf("\n%s", text.String())
			if tc.files == "" {
				if !rep.Identical() || len(rep.Ranges) != 0 {
					t.Errorf("identical disks differ:\n%s", text.String())
				}
				return
			}
			if rep.Identical() {
				t.Fatal("the disks are reported identical")
			}
			var files bytes.Buffer
			writeFiles(&files, rep.Filesystems)
			if !strings.Contains(files.String(), tc.files) {
				t.Errorf("level 3:\n%s\nwant it to hold:\n%s", files.String(), tc.files)
			}
			var got []want
			for _, r := range rep.Ranges {
				if r.Partition != "root:1" || r.FS != "ext4" {
					t.Errorf("range %+v: want it in root:1, ext4", r)
				}
				for _, n := range tc.not {
					if r.Structure == n {
						t.Errorf("range %+v reported", r)
					}
				}
				got = append(got, want{r.Structure, r.Inodes, r.Paths})
			}
			for _, w := range tc.want {
				found := false
				for _, g := range got {
					found = found || cmp.Equal(w, g, cmp.AllowUnexported(want{}))
				}
				if !found {
					t.Errorf("no range %+v in\n%s", w, text.String())
				}
			}
		})
	}
}

// Level 2 names the structures of a FAT filesystem: the file whose content
// differs, by its long name, and the FATs, directory and clusters a new file takes.
func TestSnapshotsFAT(t *testing.T) {
	need(t, "mkfs.fat", "mcopy", "mmd", "mshowfat", "sfdisk")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.fs")
	f, err := os.Create(base)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(32 << 20)
	f.Close()
	run(t, "", "mkfs.fat", "-F", "16", "-s", "4", "-i", "01234567", base)
	src := filepath.Join(dir, "src")
	os.WriteFile(src, bytes.Repeat([]byte("grub"), 3000), 0o644)
	run(t, "", "mmd", "-i", base, "::/EFI", "::/EFI/BOOT")
	run(t, "", "mcopy", "-i", base, src, "::/EFI/BOOT/grub long name.efi")
	// Where the file's first cluster lies: mshowfat's cluster, fsck.fat's geometry.
	first, data, cluster := firstCluster(t, base, "::/EFI/BOOT/grub long name.efi")

	s, variant, ingest := variants(t, dir, base)
	a := ingest(variant("a", func(string) {}))
	for _, tc := range []struct {
		name   string
		change func(fs string)
		want   []string // ranges, as "structure [paths] [in A: …]"
	}{
		{"content", func(fs string) {
			f, _ := os.OpenFile(fs, os.O_RDWR, 0)
			f.WriteAt([]byte("GRUB"), data+(first-2)*cluster+cluster+8) // in its second cluster
			f.Close()
		}, []string{"file data [/EFI/BOOT/grub long name.efi] "}},
		{"added", func(fs string) {
			run(t, "", "mcopy", "-i", fs, src, "::/EFI/BOOT/new.efi")
		}, []string{"FAT 1 [] ", "FAT 2 [] ", "directory [/EFI/BOOT] ", "file data [/EFI/BOOT/new.efi] free clusters"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, r := range levelTwoRanges(t, s, a, ingest(variant(tc.name, tc.change)), "vfat") {
				got = append(got, fmt.Sprintf("%s %v %s", r.Structure, r.Paths, r.InA))
			}
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("no range %q in %q", w, got)
				}
			}
			if tc.name == "content" && len(got) != 1 {
				t.Errorf("ranges %q, want the file's data alone", got)
			}
		})
	}
}

// Level 3 compares the files of a FAT32 filesystem on a GPT disk: a content
// change with its text diff, a creation time alone (no content read as changed),
// a file added and one removed.
func TestFilesFAT(t *testing.T) {
	need(t, "mkfs.fat", "mcopy", "mmd", "mdel", "mshowfat", "fsck.fat", "sfdisk")
	t.Setenv("TZ", "UTC") // mtools writes local time
	t.Setenv("MTOOLS_SKIP_CHECK", "1")
	dir := t.TempDir()
	base := filepath.Join(dir, "base.fs")
	f, err := os.Create(base)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	run(t, "", "mkfs.fat", "-F", "32", "-i", "01234567", base)
	when := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	for name, content := range map[string]string{"grub.cfg": "set timeout=5\nset default=0\n", "old.txt": "old", "new.txt": "new!"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o644)
		os.Chtimes(p, when, when)
	}
	run(t, "", "mmd", "-i", base, "::/EFI", "::/EFI/BOOT")
	run(t, "", "mcopy", "-m", "-i", base, filepath.Join(dir, "grub.cfg"), "::/EFI/BOOT/grub.cfg")
	run(t, "", "mcopy", "-m", "-i", base, filepath.Join(dir, "old.txt"), "::/EFI/old.txt")
	first, data, cluster := firstCluster(t, base, "::/EFI/BOOT/grub.cfg")
	patch := func(fs string, at func(b []byte) int, with []byte) {
		b, err := os.ReadFile(fs)
		if err != nil {
			t.Fatal(err)
		}
		copy(b[at(b):], with)
		os.WriteFile(fs, b, 0o644)
	}
	entry := func(b []byte) int { // grub.cfg's directory entry (its short name)
		i := bytes.Index(b, []byte("GRUB    CFG"))
		if i < 0 {
			t.Fatal("no directory entry GRUB    CFG")
		}
		return i
	}

	s, variant, ingest := variants(t, dir, base)
	a := ingest(variant("a", func(string) {}))
	for _, tc := range []struct {
		name   string
		change func(fs string)
		files  string   // level 3, as WriteText writes it
		fields []string // the JSON fields of the one file that differs, if one does
	}{
		{"content", func(fs string) {
			patch(fs, func([]byte) int { return int(data + (first-2)*cluster + 12) }, []byte("9"))
		}, `files (root:1 vfat):
  /EFI/BOOT/grub.cfg: content (28 B -> 28 B)
    --- a/EFI/BOOT/grub.cfg
    +++ b/EFI/BOOT/grub.cfg
    @@ -1,2 +1,2 @@
    -set timeout=5
    +set timeout=9
     set default=0
`, []string{"content"}},
		{"crtime", func(fs string) {
			patch(fs, func(b []byte) int { return entry(b) + 13 }, []byte{157}) // 10 ms units
		}, "files (root:1 vfat):\n  /EFI/BOOT/grub.cfg: crtime 2021-03-04T05:06:06.00 -> 2021-03-04T05:06:07.57\n", []string{"crtime"}},
		{"attributes", func(fs string) {
			patch(fs, func(b []byte) int { return entry(b) + 11 }, []byte{0x21})
		}, "  /EFI/BOOT/grub.cfg: attributes archive -> read-only archive\n", []string{"attributes"}},
		{"added and removed", func(fs string) {
			run(t, "", "mcopy", "-m", "-i", fs, filepath.Join(dir, "new.txt"), "::/EFI/BOOT/new.txt")
			run(t, "", "mdel", "-i", fs, "::/EFI/old.txt")
		}, "files (root:1 vfat):\n  /EFI/BOOT/new.txt: added (file, archive, 4 B)\n  /EFI/old.txt: removed (file, archive, 3 B)\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Snapshots(t.Context(), s, a, ingest(variant(tc.name, tc.change)), Options{})
			if err != nil {
				t.Fatal(err)
			}
			var text bytes.Buffer
			rep.WriteText(&text)
			t.Logf("\n%s", text.String())
			var files bytes.Buffer
			writeFiles(&files, rep.Filesystems)
			if !strings.Contains(files.String(), tc.files) {
				t.Errorf("level 3:\n%s\nwant it to hold:\n%s", files.String(), tc.files)
			}
			if tc.fields == nil {
				return
			}
			if len(rep.Filesystems) != 1 || len(rep.Filesystems[0].Files) != 1 {
				t.Fatalf("filesystems %+v, want one file that differs", rep.Filesystems)
			}
			js, err := json.Marshal(rep.Filesystems[0].Files[0].Fields)
			if err != nil {
				t.Fatal(err)
			}
			var fields map[string]any
			json.Unmarshal(js, &fields)
			if got := slices.Sorted(maps.Keys(fields)); !cmp.Equal(got, tc.fields) {
				t.Errorf("--json fields %s, want %q alone", js, tc.fields)
			}
		})
	}
}

// firstCluster says where the file at p (mtools syntax) in the FAT image base
// starts: its first cluster as mshowfat says, and fsck.fat's geometry, the byte
// where the data area starts and the bytes of a cluster.
func firstCluster(t *testing.T, base, p string) (first, data, cluster int64) {
	t.Helper()
	fmt.Sscanf(run(t, "", "mshowfat", "-i", base, p), p+" <%d", &first)
	geo := run(t, "", "fsck.fat", "-n", "-v", base)
	if m := regexp.MustCompile(`Data area starts at byte (\d+)`).FindStringSubmatch(geo); m != nil {
		data, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := regexp.MustCompile(`(\d+) bytes per cluster`).FindStringSubmatch(geo); m != nil {
		cluster, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if first < 2 || data <= 0 || cluster <= 0 {
		t.Fatalf("cluster %d, data at %d, %d bytes a cluster:\n%s", first, data, cluster, geo)
	}
	return first, data, cluster
}

// levelTwoRanges runs level 2 between the snapshots a and b in s, logs its text,
// checks that every range lies in root:1 on filesystem typ and returns the ranges.
func levelTwoRanges(t *testing.T, s *cas.Store, a, b cas.Digest, typ string) []Range {
	t.Helper()
	rep, err := Snapshots(t.Context(), s, a, b, Options{Level: 2})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	t.Logf("\n%s", text.String())
	for _, r := range rep.Ranges {
		if r.Partition != "root:1" || r.FS != typ {
			t.Errorf("range %+v: want it in root:1, %s", r, typ)
		}
	}
	return rep.Ranges
}

// variants makes disks from the filesystem image base, each a copy that change
// alters, in a GPT disk; ingest puts one in the store s.
func variants(t *testing.T, dir, base string) (s *cas.Store, variant func(name string, change func(fs string)) string, ingest func(disk string) cas.Digest) {
	s, err := cas.Open(filepath.Join(dir, "cache"))
	if err != nil {
		t.Fatal(err)
	}
	variant = func(name string, change func(fs string)) string {
		b, err := os.ReadFile(base)
		if err != nil {
			t.Fatal(err)
		}
		fs := filepath.Join(dir, name+".fs")
		os.WriteFile(fs, b, 0o644)
		change(fs)
		return gptDisk(t, fs)
	}
	ingest = func(disk string) cas.Digest {
		d, _, err := s.IngestDisk(t.Context(), disk, cas.IngestOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	return s, variant, ingest
}

// Level 2 names the structures of XFS and btrfs filesystems: the file whose
// content differs, with its inode and path, and (XFS) the inode chunk holding an
// inode whose mtime changed, (btrfs) the superblock.
func TestSnapshotsXFSBtrfs(t *testing.T) {
	need(t, "sfdisk")
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "usr"), 0o755)
	os.WriteFile(filepath.Join(src, "usr/big"), bytes.Repeat([]byte("data"), 30000), 0o644)
	type change struct {
		name string
		at   func(fs string) int64 // where to write
		want string                // a range, as "structure [inodes] [paths]"
	}
	for _, fsType := range []string{"xfs", "btrfs"} {
		t.Run(fsType, func(t *testing.T) {
			base := filepath.Join(dir, fsType+".fs")
			f, err := os.Create(base)
			if err != nil {
				t.Fatal(err)
			}
			f.Truncate(32 << 20)
			f.Close()
			var changes []change
			var ino string
			switch fsType {
			case "xfs":
				need(t, "mkfs.xfs", "xfs_db")
				proto := filepath.Join(dir, "proto")
				os.WriteFile(proto, []byte("/dev/null\n0 0\nd--755 0 0\nusr d--755 0 0\nbig ---644 0 0 "+filepath.Join(src, "usr/big")+"\n$\n$\n"), 0o644)
				cmd := exec.Command("mkfs.xfs", "-q", "-f", "-m", "uuid=6a1b7c2d-0000-4000-8000-000000000001", "-p", proto, base)
				cmd.Env = append(os.Environ(), "TEST_DIR="+dir, "TEST_DEV="+base, "QA_CHECK_FS=1") // under 300 MB
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("mkfs.xfs: %v\n%s", err, out)
				}
				db := run(t, "", "xfs_db", "-r", "-c", "sb", "-c", "p agblocks blocksize", "-c", "path /usr/big", "-c", "inode", "-c", "bmap", base)
				var agblocks, bs, ag, agbno int64
				fmt.Sscanf(db[strings.Index(db, "agblocks"):], "agblocks = %d\nblocksize = %d", &agblocks, &bs)
				ino = regexp.MustCompile(`current inode number is (\d+)`).FindStringSubmatch(db)[1]
				m := regexp.MustCompile(`startblock \d+ \((\d+)/(\d+)\)`).FindStringSubmatch(db)
				if m == nil || agblocks == 0 {
					t.Fatalf("xfs_db:\n%s", db)
				}
				ag, _ = strconv.ParseInt(m[1], 10, 64)
				agbno, _ = strconv.ParseInt(m[2], 10, 64)
				inoAt, _ := strconv.ParseInt(regexp.MustCompile(`\((\d+)\)`).FindStringSubmatch(run(t, "", "xfs_db", "-r", "-c", "convert ino "+ino+" byte", base))[1], 10, 64)
				changes = []change{
					{"content", func(string) int64 { return (ag*agblocks+agbno)*bs + bs + 8 }, "file data [" + ino + "] [/usr/big]"},
					{"mtime", func(string) int64 { return inoAt + 40 }, "inode chunk [" + ino + "] [/usr/big]"},
				}
			case "btrfs":
				need(t, "mkfs.btrfs", "btrfs", "btrfs-map-logical")
				run(t, "", "mkfs.btrfs", "-q", "-f", "-U", "6a1b7c2d-0000-4000-8000-000000000001", "--rootdir", src, base)
				dump := run(t, "", "btrfs", "inspect-internal", "dump-tree", "-t", "fs", base)
				m := regexp.MustCompile(`key \((\d+) EXTENT_DATA 0\) itemoff \d+ itemsize 53\n.*\n\s+extent data disk byte (\d+)`).FindStringSubmatch(dump)
				if m == nil {
					t.Fatalf("no extent in\n%s", dump)
				}
				ino = m[1]
				phys := regexp.MustCompile(`physical (\d+)`).FindStringSubmatch(run(t, "", "btrfs-map-logical", "-l", m[2], base))
				at, _ := strconv.ParseInt(phys[1], 10, 64)
				changes = []change{
					{"content", func(string) int64 { return at + 4096 + 8 }, "file data [" + ino + "] [/usr/big]"},
					{"superblock", func(string) int64 { return 65536 + 0x48 }, "superblock [] []"},
				}
			}
			s, variant, ingest := variants(t, dir, base)
			a := ingest(variant(fsType+"-a", func(string) {}))
			for _, c := range changes {
				t.Run(c.name, func(t *testing.T) {
					b := ingest(variant(fsType+"-"+c.name, func(fs string) {
						f, _ := os.OpenFile(fs, os.O_RDWR, 0)
						f.WriteAt([]byte{0xde, 0xad, 0xbe, 0xef}, c.at(fs))
						f.Close()
					}))
					var got []string
					for _, r := range levelTwoRanges(t, s, a, b, fsType) {
						got = append(got, fmt.Sprintf("%s %v %v", r.Structure, r.Inodes, r.Paths))
					}
					if len(got) != 1 || got[0] != c.want {
						t.Errorf("ranges %q, want [%q]", got, c.want)
					}
				})
			}
		})
	}
}
