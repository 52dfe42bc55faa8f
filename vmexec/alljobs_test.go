package vmexec_test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/registrytest"
)

// TestEveryJobKind runs every job kind in one image on the real appliance and checks
// each result from the host with tools that are not vmb's (sfdisk, e2fsck, debugfs,
// xfs_repair, tar, sha256sum, qemu-img, blkid). A job kind added to graph.Kinds
// without a check here fails the test.
func TestEveryJobKind(t *testing.T) {
	bb := hostBusybox(t)
	fetched := []byte("downloaded by the fetch job\n")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(fetched) }))
	defer srv.Close()
	fsum := sha256.Sum256(fetched)

	repo := t.TempDir()
	write := func(name string, b []byte, mode os.FileMode) {
		os.MkdirAll(filepath.Join(repo, filepath.Dir(name)), 0o755)
		if err := os.WriteFile(filepath.Join(repo, name), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	write("tree/a.txt", []byte("file a\n"), 0o644)
	write("tree/sub/b.txt", []byte("file b\n"), 0o644)
	os.Symlink("/tree/sub/b.txt", filepath.Join(repo, "tree/alink")) // absolute, as the target sees it
	write("bin/busybox", bb, 0o755)
	write("boot.bin", []byte("VMB-DD-BYTES-16!"), 0o644)
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	tw.WriteHeader(&tar.Header{Name: "untarred/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "untarred/c.txt", Typeflag: tar.TypeReg, Mode: 0o600, Size: 7, Uid: 1000, Gid: 1000})
	tw.Write([]byte("file c\n"))
	tw.Close()
	write("in.tar", tb.Bytes(), 0o644)

	c := newChain(t, repo)
	checked := map[string]bool{}
	check := func(j graph.Job, fn func(files map[string]cas.Digest)) {
		t.Helper()
		files := c.must(j)
		fn(files)
		checked[j.Kind()] = true
	}
	// p1 is the ext4 partition of the disk as it is now, for e2fsprogs.
	p1 := func() string {
		raw := c.raw("d")
		start, size := partition(t, raw, 1)
		p := filepath.Join(t.TempDir(), "p1")
		hostTool(t, "dd", "if="+raw, "of="+p, "bs=512", "skip="+start, "count="+size, "status=none")
		return p
	}
	debugfs := func(part, req string) string { // stdout only: the banner goes to stderr
		t.Helper()
		out, err := exec.Command("debugfs", "-R", req, part).Output()
		if err != nil {
			t.Fatalf("debugfs -R %q: %v", req, err)
		}
		return string(out)
	}
	output := func(files map[string]cas.Digest, name string) []byte {
		t.Helper()
		b, err := c.x.Store.Get(files[name])
		if err != nil {
			t.Fatalf("output %s: %v", name, err)
		}
		return b
	}

	check(&graph.CreateDisk{Disk: "d", Size: 64 << 20}, func(map[string]cas.Digest) {
		if got := hostTool(t, "qemu-img", "info", "--output=json", c.raw("d")); !strings.Contains(got, `"virtual-size": 67108864`) {
			t.Errorf("create-disk: qemu-img info: %s", got)
		}
	})
	check(&graph.ResizeDisk{Disk: "d", Size: 96 << 20}, func(map[string]cas.Digest) {
		if got := hostTool(t, "qemu-img", "info", "--output=json", c.raw("d")); !strings.Contains(got, `"virtual-size": 100663296`) {
			t.Errorf("resize-disk: qemu-img info: %s", got)
		}
	})
	check(&graph.Label{Disk: "d", Type: "gpt"}, func(map[string]cas.Digest) {
		if got := hostTool(t, "sfdisk", "--dump", c.raw("d")); !strings.Contains(got, "label: gpt") {
			t.Errorf("label: sfdisk --dump: %s", got)
		}
	})
	check(&graph.Partition{Disk: "d", Partitions: []graph.PartitionSpec{
		{Type: "primary", Size: 48 << 20, GUID: graph.GUIDAliases["linux"], Name: "data"},
		{Type: "primary", GUID: graph.GUIDAliases["bios"], Name: "rest"},
	}}, func(map[string]cas.Digest) {
		got := hostTool(t, "sfdisk", "--dump", c.raw("d"))
		for _, want := range []string{"size=       98304, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4", "type=21686148-6449-6E6F-744E-656564454649", `name="rest"`} {
			if !strings.Contains(got, want) {
				t.Errorf("partition: sfdisk --dump lacks %q:\n%s", want, got)
			}
		}
	})
	check(&graph.Format{Place: place("d:1"), FS: "ext4", Label: "data"}, func(map[string]cas.Digest) {
		p := p1()
		hostTool(t, "e2fsck", "-fn", p)
		if got := hostTool(t, "blkid", "-o", "export", p); !strings.Contains(got, "LABEL=data") || !strings.Contains(got, "TYPE=ext4") {
			t.Errorf("format: blkid: %s", got)
		}
	})
	// A second filesystem on a disk of its own, checked by its own tool.
	c.must(&graph.CreateDisk{Disk: "x", Size: 320 << 20})
	c.must(&graph.Format{Place: place("x"), FS: "xfs"})
	hostTool(t, "xfs_repair", "-n", c.raw("x"))

	check(&graph.CopyIn{Src: "tree", Dest: place("d:1:/tree")}, func(map[string]cas.Digest) {
		if got := debugfs(p1(), "cat /tree/sub/b.txt"); got != "file b\n" {
			t.Errorf("copy-in: /tree/sub/b.txt holds %q", got)
		}
	})
	check(&graph.Fetch{URL: srv.URL + "/f", Digest: "sha256:" + hex.EncodeToString(fsum[:]), Dest: place("d:1:/fetched"), Mode: "0600"}, func(map[string]cas.Digest) {
		p := p1()
		if got := debugfs(p, "cat /fetched"); got != string(fetched) {
			t.Errorf("fetch: /fetched holds %q", got)
		}
		if got := debugfs(p, "stat /fetched"); !strings.Contains(got, "Mode:  0600") {
			t.Errorf("fetch: mode: %s", got)
		}
	})
	check(&graph.TarIn{Src: "in.tar", Dest: place("d:1:/")}, func(map[string]cas.Digest) {
		p := p1()
		if got := debugfs(p, "cat /untarred/c.txt"); got != "file c\n" {
			t.Errorf("tar-in: /untarred/c.txt holds %q", got)
		}
		if got := debugfs(p, "stat /untarred/c.txt"); !strings.Contains(got, "User:  1000   Group:  1000") || !strings.Contains(got, "Mode:  0600") {
			t.Errorf("tar-in: owner and mode: %s", got)
		}
	})
	check(&graph.ImageIn{Ref: pushTestImage(t), Platform: "linux/amd64", Dest: place("d:1:/img")}, func(map[string]cas.Digest) {
		p := p1()
		hostTool(t, "e2fsck", "-fn", p)
		for file, want := range map[string]string{"/img/etc/hello": "hello\n", "/img/etc/arch": "amd64\n", "/img/old": "new\n", "/img/oldlink": "old\n", "/img/opq/upper": "upper\n"} {
			if got := debugfs(p, "cat "+file); got != want {
				t.Errorf("image-in: %s holds %q, want %q", file, got, want)
			}
		}
		if got := debugfs(p, "stat /img/etc/hello"); !strings.Contains(got, "User:  1000   Group:  1000") || !strings.Contains(got, "Links: 2") {
			t.Errorf("image-in: /img/etc/hello: want owner 1000:1000 and 2 links:\n%s", got)
		}
		inode := func(file string) string {
			return strings.Fields(strings.SplitN(debugfs(p, "stat "+file), "Inode: ", 2)[1])[0]
		}
		if a, b := inode("/img/etc/hello"), inode("/img/etc/hard"); a != b {
			t.Errorf("image-in: /img/etc/hard is inode %s, /img/etc/hello %s: want one", b, a)
		}
		if got := debugfs(p, "stat /img/etc/link"); !strings.Contains(got, "Type: symlink") || !strings.Contains(got, `"hello"`) {
			t.Errorf("image-in: /img/etc/link: want a symlink to hello:\n%s", got)
		}
		if got := debugfs(p, "stat /img/dev/null"); !strings.Contains(got, "Type: character special") || !strings.Contains(got, "01:03") {
			t.Errorf("image-in: /img/dev/null: want char 1:3:\n%s", got)
		}
		if got := debugfs(p, "ea_list /img/etc/xattr"); !strings.Contains(got, "user.vmb") || !strings.Contains(got, "1") {
			t.Errorf("image-in: /img/etc/xattr: want the xattr user.vmb=1:\n%s", got)
		}
		if got := debugfs(p, "ls /img"); strings.Contains(got, "gone") || !strings.Contains(got, "oldlink") {
			t.Errorf("image-in: /img holds (want no gone):\n%s", got)
		}
		if got := debugfs(p, "ls /img/opq"); strings.Contains(got, "lower") || !strings.Contains(got, "upper") {
			t.Errorf("image-in: /img/opq holds (want upper, not lower):\n%s", got)
		}
	})
	check(&graph.TarOut{Src: place("d:1:/tree"), Dest: "tree.tar"}, func(files map[string]cas.Digest) {
		p := filepath.Join(t.TempDir(), "tree.tar")
		os.WriteFile(p, output(files, "tree.tar"), 0o644)
		got := hostTool(t, "tar", "-tf", p)
		for _, want := range []string{"a.txt", "sub/b.txt"} {
			if !strings.Contains(got, want) {
				t.Errorf("tar-out: tar -tf lacks %s:\n%s", want, got)
			}
		}
		if got := hostTool(t, "tar", "-xOf", p, "./sub/b.txt"); got != "file b\n" {
			t.Errorf("tar-out: sub/b.txt holds %q", got)
		}
	})
	check(&graph.CopyOut{Src: place("d:1:/fetched"), Dest: "fetched"}, func(files map[string]cas.Digest) {
		if got := output(files, "fetched"); !bytes.Equal(got, fetched) {
			t.Errorf("copy-out: %q", got)
		}
	})
	// A link is followed inside the target, as the kernel out of /vmlinuz is.
	check(&graph.CopyOut{Src: place("d:1:/tree/alink"), Dest: "linked"}, func(files map[string]cas.Digest) {
		if got := string(output(files, "linked")); got != "file b\n" {
			t.Errorf("copy-out of a link: %q", got)
		}
	})
	// Into the gap between the GPT and the first partition, as a boot loader goes.
	check(&graph.DD{Src: "boot.bin", Disk: "d", Offset: 40 * 512}, func(map[string]cas.Digest) {
		got := hostTool(t, "dd", "if="+c.raw("d"), "bs=512", "skip=40", "count=1", "status=none")
		if !strings.HasPrefix(got, "VMB-DD-BYTES-16!") {
			t.Errorf("dd: sector 40 holds %q", got[:16])
		}
		hostTool(t, "sfdisk", "--verify", c.raw("d"))
	})
	c.must(&graph.CopyIn{Src: "bin", Dest: place("d:1:/bin")})
	check(&graph.Run{Root: place("d:1"), Mode: "chroot", Workdir: "/tree", Env: map[string]string{"GREETING": "hi"},
		Command: graph.Command{"/bin/busybox", "sh", "-c", "echo $GREETING from $(pwd) > /ran; echo $VMB_ROOT_DISK $VMB_DISK_D $VMB_DISK_X > /disks; /bin/busybox ls /dev/disk/by-uuid > /uuids"}}, func(map[string]cas.Digest) {
		p := p1()
		if got := debugfs(p, "cat /ran"); got != "hi from /tree\n" {
			t.Errorf("run: /ran holds %q", got)
		}
		// Disks are attached in name order after the job disk: d is vdb, x is vdc.
		if got := debugfs(p, "cat /disks"); got != "/dev/vdb /dev/vdb /dev/vdc\n" {
			t.Errorf("run: the disks' devices were %q", got)
		}
		uuid := strings.TrimSpace(hostTool(t, "blkid", "-s", "UUID", "-o", "value", p))
		if got := debugfs(p, "cat /uuids"); !strings.Contains(got, uuid) {
			t.Errorf("run: /dev/disk/by-uuid lacks the root's UUID %s:\n%s", uuid, got)
		}
	})
	check(&graph.Hash{Disk: "d", Algorithm: "sha256", Dest: "d.sha256"}, func(files map[string]cas.Digest) {
		sum := strings.Fields(hostTool(t, "sha256sum", c.raw("d")))[0]
		if got := string(output(files, "d.sha256")); got != "sha256:"+sum+"  d\n" {
			t.Errorf("hash: %q, sha256sum says %s", got, sum)
		}
	})
	check(&graph.Diff{Place: place("d:1"), Dest: "listing"}, func(files map[string]cas.Digest) {
		got := string(output(files, "listing"))
		for _, want := range []string{
			"/tree/sub/b.txt 0:0 7 ", fmt.Sprintf("%x", sha256.Sum256([]byte("file b\n"))),
			"-rw------- /untarred/c.txt 1000:1000 7 ",
		} {
			if !strings.Contains(got, want) {
				t.Errorf("diff: the listing lacks %q:\n%s", want, got)
			}
		}
	})
	check(&graph.Remove{Path: place("d:1:/tree/sub")}, func(map[string]cas.Digest) {
		p := p1()
		hostTool(t, "e2fsck", "-fn", p)
		if got := debugfs(p, "ls -l /tree"); strings.Contains(got, "sub") || !strings.Contains(got, "a.txt") {
			t.Errorf("remove: /tree holds:\n%s", got)
		}
	})
	check(&graph.Export{Disk: "d", Format: "qcow2", Dest: "d.qcow2"}, func(files map[string]cas.Digest) {
		p := filepath.Join(t.TempDir(), "d.qcow2")
		os.WriteFile(p, output(files, "d.qcow2"), 0o644)
		hostTool(t, "qemu-img", "check", p)
		hostTool(t, "qemu-img", "compare", "-f", "qcow2", "-F", "raw", p, c.raw("d"))
	})
	// One partition, as a filesystem image (for direct kernel boot): what the host
	// cuts out of the whole disk with dd, and a filesystem e2fsck finds sound.
	check(&graph.Export{Disk: "d", Partition: 1, Format: "raw", Dest: "p1.img"}, func(files map[string]cas.Digest) {
		p := filepath.Join(t.TempDir(), "p1.img")
		os.WriteFile(p, output(files, "p1.img"), 0o644)
		hostTool(t, "cmp", p, p1())
		hostTool(t, "e2fsck", "-fn", p)
	})

	for _, k := range graph.Kinds {
		if !checked[k] {
			t.Errorf("job kind %q is not run and checked by this test", k)
		}
	}
}

// pushTestImage pushes registrytest's index (linux/amd64 and linux/arm64) to the
// test process's registry and returns its ref, pinned.
func pushTestImage(t *testing.T) string {
	t.Helper()
	reg := registrytest.Shared(t)
	idx, err := registrytest.Index()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(reg.Addr + "/vmb/alljobs:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.String() + "@" + d.String()
}
