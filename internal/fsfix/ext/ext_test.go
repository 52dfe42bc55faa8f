package ext

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// StampSuperblock leaves a superblock e2fsck accepts (its checksum is right) with
// the epoch as its times.
func TestStampSuperblock(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("e2fsprogs is not installed")
	}
	img := filepath.Join(t.TempDir(), "ext4.img")
	f, _ := os.Create(img)
	f.Truncate(32 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	if err := StampSuperblock(img, 1577836800); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn after StampSuperblock: %v\n%s", err, out)
	}
	dump := exec.Command("dumpe2fs", "-h", img)
	dump.Env = append(os.Environ(), "TZ=UTC")
	out, _ := dump.CombinedOutput()
	for _, want := range []string{"Last write time:          Wed Jan  1 00:00:00 2020", "Last checked:             Wed Jan  1 00:00:00 2020", "Mount count:              0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("dumpe2fs -h lacks %q:\n%s", want, out)
		}
	}
}

// ScrubInodes, StampSuperblock and ZeroFree read a filesystem they did not write: whatever
// the bytes, they return and do not panic. The seed is what mkfs.ext4 makes of
// 2 MiB, up to its inode table's end, where the host has it.
func FuzzScrubInodes(f *testing.F) {
	fstest.AddImage(f, "mkfs.ext4", 2<<20, 0x1d000, func(img string) {
		fstest.Run(f, "mkfs.ext4", "-q", "-F", "-U", "5b9b05c4-10e5-4a41-8d1e-000000000003", "-E", "hash_seed=5b9b05c4-10e5-4a41-8d1e-000000000003", img)
	})
	f.Add(make([]byte, 2048))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		ScrubInodes(img, 1577836800)
		StampSuperblock(img, 1577836800)
		ZeroFree(img)
	})
}

// ZeroFree leaves no byte of a removed file or directory in the free blocks, and
// every block in use, data and metadata, as it was: e2fsck accepts the result and
// the files left read back whole.
func TestZeroFree(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("e2fsprogs is not installed")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "gone-dir"), 0o755)
	kept := bytes.Repeat([]byte("KEPT-CONTENT "), 40000)
	os.WriteFile(filepath.Join(tree, "kept"), kept, 0o644)
	os.WriteFile(filepath.Join(tree, "gone"), bytes.Repeat([]byte("GONE-CONTENT "), 40000), 0o644)
	for i := range 200 { // a directory of several blocks
		os.WriteFile(filepath.Join(tree, "gone-dir", "entry-named-"+strings.Repeat("x", 40)+string(rune('a'+i%26))+string(rune('a'+i/26))), nil, 0o644)
	}
	img := filepath.Join(dir, "ext4.img")
	f, _ := os.Create(img)
	f.Truncate(64 << 20)
	f.Close()
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-d", tree, img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	// debugfs frees the blocks and leaves their bytes, as the kernel does.
	script := "rm /gone\n"
	for i := range 200 {
		script += "rm /gone-dir/entry-named-" + strings.Repeat("x", 40) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + "\n"
	}
	script += "rmdir /gone-dir\n"
	cmd := exec.Command("debugfs", "-w", "-f", "-", img)
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v\n%s", err, out)
	}
	count := func(what string) int {
		b, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Count(b, []byte(what))
	}
	if count("GONE-CONTENT") == 0 || count("entry-named-") == 0 {
		t.Fatal("debugfs left no bytes of the removed file and directory: the test proves nothing")
	}
	n, err := ZeroFree(img)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 || count("GONE-CONTENT") != 0 || count("entry-named-") != 0 {
		t.Errorf("after ZeroFree (%d bytes zeroed): %d pieces of the removed file, %d names of the removed directory's entries",
			n, count("GONE-CONTENT"), count("entry-named-"))
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn after ZeroFree: %v\n%s", err, out)
	}
	got, err := exec.Command("debugfs", "-R", "cat /kept", img).Output()
	if err != nil || !bytes.Equal(got, kept) {
		t.Errorf("/kept after ZeroFree: %d bytes, want %d (%v)", len(got), len(kept), err)
	}
}

// ScrubInodes sets the creation time and generation the kernel gave a new file
// or directory (here set with debugfs, and e2fsck made every checksum agree with
// them, as the kernel leaves them) to the epoch and 0. For a file whose extents
// fit in its inode, that is all: e2fsck accepts the result as it is. For a
// directory, whose blocks' checksums are seeded with the generation, it says so
// (Reseed): e2fsck finds them wrong until it writes them again.
func TestScrubInodesGenerations(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (dev/setup installs e2fsprogs)", tool)
		}
	}
	const epoch = 1577836800
	tree := filepath.Join(t.TempDir(), "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "f"), bytes.Repeat([]byte("f"), 5000), 0o644)
	os.WriteFile(filepath.Join(tree, "sub", "g"), []byte("g"), 0o644)
	debugfs := func(img string, w bool, script string) string {
		args := []string{"-f", "-", img}
		if w {
			args = append([]string{"-w"}, args...)
		}
		cmd := exec.Command("debugfs", args...)
		cmd.Stdin = strings.NewReader(script)
		cmd.Env = append(os.Environ(), "TZ=UTC")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs: %v\n%s", err, out)
		}
		return string(out)
	}
	for _, c := range []struct {
		path   string
		reseed bool
	}{{"/f", false}, {"/sub", true}} {
		t.Run(c.path, func(t *testing.T) {
			img := fstest.Image(t, "ext4.img", 32<<20)
			mkfs := exec.Command("mkfs.ext4", "-q", "-F", "-U", "5b9b05c4-10e5-4a41-8d1e-000000000003", "-d", tree, img)
			mkfs.Env = append(os.Environ(), fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", epoch-1000))
			if out, err := mkfs.CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v\n%s", err, out)
			}
			debugfs(img, true, fmt.Sprintf("sif %s generation 4660\nsif %s crtime @%d\n", c.path, c.path, epoch+100))
			exec.Command("e2fsck", "-fy", img).Run() // checksums seeded with the generation
			if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
				t.Fatalf("e2fsck -fn before: %v\n%s", err, out)
			}
			stat := func() string { return debugfs(img, false, "stat "+c.path+"\n") }
			if before := stat(); !strings.Contains(before, "Generation: 4660 ") {
				t.Fatalf("debugfs set no generation: the test proves nothing:\n%s", before)
			}
			s, err := ScrubInodes(img, epoch)
			if err != nil {
				t.Fatal(err)
			}
			after := stat()
			if s.Created != 1 || s.Reseed != c.reseed || !strings.Contains(after, "Generation: 0 ") ||
				!strings.Contains(after, "crtime: 0x5e0be100:00000000") {
				t.Errorf("ScrubInodes: %+v, want 1 created and reseed %v; stat:\n%s", s, c.reseed, after)
			}
			out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
			if c.reseed != (err != nil) {
				t.Errorf("e2fsck -fn after ScrubInodes: %v, but reseed is %v\n%s", err, c.reseed, out)
			}
			if c.reseed {
				exec.Command("e2fsck", "-fy", img).Run()
				if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
					t.Errorf("e2fsck -fn after e2fsck -fy: %v\n%s", err, out)
				}
			}
		})
	}
}
