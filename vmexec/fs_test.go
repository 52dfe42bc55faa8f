package vmexec_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/vmtest"
)

// fsCase is a filesystem vmb formats, with how the host checks it on its own.
type fsCase struct {
	fs    string
	label string
	// check runs the host's own checker on the raw filesystem image and reads
	// the copied files back where a host tool can, returning what it read of
	// /dir/motd; "" leaves the reading to guestfish.
	check func(t *testing.T, raw string) string
	// vfs is guestfish's mount-vfs type and options where it reads the files.
	vfs, vfsOpts string
	// blkid is a line blkid -p -o export must print.
	blkid string
}

var filesystems = []fsCase{
	{fs: "ext2", label: "root", check: e2check},
	{fs: "ext3", label: "root", check: e2check},
	{fs: "ext4", label: "root", check: e2check},
	{fs: "fat32", label: "EFI", check: func(t *testing.T, raw string) string {
		hostTool(t, "fsck.fat", "-n", raw)
		return hostTool(t, "mtype", "-i", raw, "::/dir/motd")
	}},
	{fs: "ntfs", label: "win", check: func(t *testing.T, raw string) string {
		hostTool(t, "ntfsfix", "-n", raw)
		return hostTool(t, "ntfscat", raw, "/dir/motd")
	}},
	{fs: "btrfs", label: "root", check: func(t *testing.T, raw string) string {
		hostTool(t, "btrfs", "check", "--readonly", raw)
		out := t.TempDir()
		hostTool(t, "btrfs", "restore", raw, out)
		b, err := os.ReadFile(filepath.Join(out, "dir/motd"))
		if err != nil {
			t.Error(err)
		}
		return string(b)
	}},
	{fs: "xfs", label: "root", vfs: "xfs", check: func(t *testing.T, raw string) string {
		hostTool(t, "xfs_repair", "-n", "-f", raw)
		return ""
	}},
	{fs: "exfat", label: "data", vfs: "exfat", check: func(t *testing.T, raw string) string {
		hostTool(t, "fsck.exfat", "-n", raw)
		return ""
	}},
	{fs: "udf", label: "disc", vfs: "udf", check: func(t *testing.T, raw string) string {
		hostTool(t, "udfinfo", raw)
		return ""
	}},
	{fs: "ufs", label: "bsd", vfs: "ufs", vfsOpts: "ro,ufstype=44bsd", blkid: "VERSION=1"},
	// Nothing on Linux reads makefs's UFS2 (BUILD.md): blkid checks the superblock,
	// and internal/fsfix/ufs's TestRead vmb's reader against makefs.
	{fs: "ufs2", label: "bsd", blkid: "VERSION=2"},
	{fs: "minix", vfs: "minix", check: func(t *testing.T, raw string) string {
		hostTool(t, "fsck.minix", "-f", raw)
		return ""
	}},
}

func e2check(t *testing.T, raw string) string {
	hostTool(t, "e2fsck", "-fn", raw)
	out, err := exec.Command("debugfs", "-R", "cat /dir/motd", raw).Output() // its banner goes to stderr
	if err != nil {
		t.Errorf("debugfs: %v", err)
	}
	return string(out)
}

// TestFilesystems formats each of the twelve filesystems, copies a tree in,
// removes a file and copies one out, twice in two empty caches, the first time a
// VM for each job, the second time the four in one VM (RunChain): both builds give
// the same snapshot after every job, and the host's own tools (fsck, readers,
// guestfish) find the filesystem sound, labelled and holding the files.
func TestFilesystems(t *testing.T) {
	vmtest.Require(t)
	repo := t.TempDir()
	os.MkdirAll(filepath.Join(repo, "tree/dir/sub"), 0o755)
	os.WriteFile(filepath.Join(repo, "tree/dir/motd"), []byte("hello from vmb\n"), 0o644)
	os.WriteFile(filepath.Join(repo, "tree/dir/sub/gone"), []byte("removed by the next job\n"), 0o644)
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i * 7 >> 3)
	}
	os.WriteFile(filepath.Join(repo, "tree/dir/sub/big"), big, 0o600)

	var guestfish []fsCase
	outer := t.TempDir()
	var raws []string
	for _, fc := range filesystems {
		ok := t.Run(fc.fs, func(t *testing.T) {
			jobs := []graph.Job{
				// xfsprogs refuses a filesystem under 300 MB; the disk is sparse.
				&graph.CreateDisk{Disk: "d", Size: 320 << 20},
				&graph.Format{Place: place("d"), FS: fc.fs, Label: fc.label},
				&graph.CopyIn{Src: "tree", Dest: place("d:/")},
				&graph.Remove{Path: place("d:/dir/sub/gone")},
				&graph.CopyOut{Src: place("d:/dir/motd"), Dest: "motd"},
			}
			var first []cas.Digest
			var c, c0 *chain
			for build := range 2 {
				c = newChain(t, repo)
				if build == 0 {
					c0 = c
				}
				c.must(jobs[0])
				// The second build runs the jobs after create-disk in one VM.
				boots := c.x.Boots()
				disks, files := c.all(jobs[1:], build == 1)
				if n := c.x.Boots() - boots; build == 1 && n != 1 {
					t.Errorf("the chain of %d jobs booted %d VMs; want 1", len(jobs)-1, n)
				}
				for k, j := range jobs[1:] {
					if _, ok := j.(*graph.CopyOut); ok {
						// vmb reads it back as the host tools do, and reading
						// changes nothing on the disk.
						if b, err := c.x.Store.Get(files[k]["motd"]); err != nil || string(b) != "hello from vmb\n" {
							t.Errorf("copy-out of /dir/motd: %q, %v", b, err)
						}
						if disks[k] != disks[k-1] {
							t.Errorf("copy-out changed the disk: %s, was %s", disks[k].Short(), disks[k-1].Short())
						}
					}
					c.steps = append(c.steps, disks[k])
					if build == 0 {
						first = append(first, disks[k])
					} else if disks[k] != first[k] {
						t.Fatalf("%s: a job in a VM of its own and in a chain differ: %s and %s\n%s", j.Describe(), first[k].Short(), disks[k].Short(),
							differ(t, c0.x.Store, first[k], c, fc.fs))
					}
				}
			}
			raw := filepath.Join(outer, fc.fs+".raw") // read by guestfish after the subtest
			if err := c.x.Store.Materialize(t.Context(), c.disks["d"], raw); err != nil {
				t.Fatal(err)
			}
			blkid := hostTool(t, "blkid", "-p", "-o", "export", raw)
			if fc.blkid != "" && !strings.Contains(blkid, fc.blkid+"\n") {
				t.Errorf("blkid does not say %s:\n%s", fc.blkid, blkid)
			}
			// blkid reads no label from UFS1.
			if fc.label != "" && fc.fs != "ufs" && !strings.Contains(blkid, "LABEL="+fc.label+"\n") {
				t.Errorf("blkid finds no label %q:\n%s", fc.label, blkid)
			}
			if fc.check != nil {
				if got := fc.check(t, raw); fc.vfs == "" && got != "hello from vmb\n" {
					t.Errorf("/dir/motd as the host reads it: %q", got)
				}
			}
			if fc.vfs != "" {
				guestfish = append(guestfish, fc)
				raws = append(raws, raw)
			}
		})
		if !ok && testing.Short() {
			break
		}
	}
	if len(guestfish) == 0 {
		return
	}
	// The filesystems the host has no reader for: one guestfish session, one disk
	// for each, mounted in turn.
	var script strings.Builder
	args := []string{"--ro"}
	for i, fc := range guestfish {
		args = append(args, "-a", raws[i])
		dev := fmt.Sprintf("/dev/sd%c", 'a'+i)
		opts := fc.vfsOpts
		if opts == "" {
			opts = "ro"
		}
		fmt.Fprintf(&script, "mount-vfs %s %s %s /\necho %s\ncat /dir/motd\nls /dir/sub\nfilesize /dir/sub/big\numount /\n", opts, fc.vfs, dev, fc.fs)
	}
	cmd := exec.Command("guestfish", args...)
	cmd.Env = append(os.Environ(), vmtest.GuestfishEnv()...)
	cmd.Stdin = strings.NewReader("run\n" + script.String())
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("guestfish: %v\n%s", err, out)
	}
	got := string(out)
	for _, fc := range guestfish {
		// guestfish ends what cat prints with a newline of its own.
		want := fmt.Sprintf("%s\nhello from vmb\n\nbig\n%d\n", fc.fs, 3<<20)
		if !strings.Contains(got, want) {
			t.Errorf("%s: guestfish did not read the files back (want %q):\n%s", fc.fs, want, got)
		}
	}
}

// differ says where two snapshots of a disk differ, and copies both to
// $VMB_TEST_DUMP when it is set.
func differ(t *testing.T, store *cas.Store, other cas.Digest, c *chain, name string) string {
	a, b := filepath.Join(t.TempDir(), "a.raw"), c.raw("d")
	if err := store.Materialize(t.Context(), other, a); err != nil {
		return err.Error()
	}
	if dump := os.Getenv("VMB_TEST_DUMP"); dump != "" {
		exec.Command("cp", "--sparse=always", a, filepath.Join(dump, name+"-a.raw")).Run()
		exec.Command("cp", "--sparse=always", b, filepath.Join(dump, name+"-b.raw")).Run()
	}
	out, _ := exec.Command("cmp", "-l", a, b).Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return fmt.Sprintf("%d bytes differ; the first (offset, octal):\n%s", len(lines), strings.Join(lines[:min(len(lines), 16)], "\n"))
}

// TestChainReformat runs, in one boot, a copy-in onto ext4, then a format of the
// same disk as fat32 and a copy-in onto that: the agent remembers a device's
// filesystem type only across jobs that cannot change it, so the second copy-in
// mounts vfat (mounting it as ext4 fails), and the file lands there.
func TestChainReformat(t *testing.T) {
	vmtest.Require(t)
	repo := t.TempDir()
	os.WriteFile(filepath.Join(repo, "f"), []byte("on vfat\n"), 0o644)
	c := newChain(t, repo)
	c.must(&graph.CreateDisk{Disk: "d", Size: 64 << 20})
	boots := c.x.Boots()
	c.all([]graph.Job{
		&graph.Format{Place: place("d"), FS: "ext4"},
		&graph.CopyIn{Src: "f", Dest: place("d:/f")},
		&graph.Format{Place: place("d"), FS: "fat32"},
		&graph.CopyIn{Src: "f", Dest: place("d:/f")},
	}, true)
	if n := c.x.Boots() - boots; n != 1 {
		t.Errorf("the chain booted %d VMs; want 1", n)
	}
	if got := hostTool(t, "mtype", "-i", c.raw("d"), "::/f"); got != "on vfat\n" {
		t.Errorf("/f on the vfat disk: %q", got)
	}
}
