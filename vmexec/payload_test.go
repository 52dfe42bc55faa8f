package vmexec_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/klauspost/compress/zstd"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/vmtest"
)

// TestPayloadOnJobDisk copies in a file larger than the build VM's /run (a tmpfs
// of half its 512 MiB), which the agent once unpacked every payload into, and
// extracts a gzip tar large enough to stay on the job disk and a zstd one small
// enough not to: tar is told their compression, which it cannot tell itself on
// a pipe. Every byte is checked from the host.
func TestPayloadOnJobDisk(t *testing.T) {
	vmtest.Require(t)
	repo := t.TempDir()
	writeRandom(t, filepath.Join(repo, "in/big"), 3, 300<<20)
	os.WriteFile(filepath.Join(repo, "in/small"), []byte("small\n"), 0o644)
	mid := make([]byte, 2<<20)
	rand.NewChaCha8([32]byte{4}).Read(mid)
	writeTar := func(w io.WriteCloser, files map[string][]byte) {
		tw := tar.NewWriter(w)
		for n, b := range files {
			tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(b))})
			tw.Write(b)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	var gz, zs bytes.Buffer
	writeTar(gzip.NewWriter(&gz), map[string][]byte{"gz/mid": mid})
	zw, _ := zstd.NewWriter(&zs)
	writeTar(zw, map[string][]byte{"zst/c.txt": []byte("from zstd\n")})
	if gz.Len() < 1<<20 || zs.Len() > 1<<20 {
		t.Fatalf("the gzip tar has %d bytes, the zstd one %d: the test needs one left on the job disk, one not", gz.Len(), zs.Len())
	}
	os.WriteFile(filepath.Join(repo, "mid.tar.gz"), gz.Bytes(), 0o644)
	os.WriteFile(filepath.Join(repo, "c.tar.zst"), zs.Bytes(), 0o644)

	c := newChain(t, repo)
	for _, j := range []graph.Job{
		&graph.CreateDisk{Disk: "d", Size: 1 << 30},
		&graph.Format{Place: place("d"), FS: "ext4"},
		&graph.CopyIn{Src: "in", Dest: place("d:/")},
		&graph.TarIn{Src: "mid.tar.gz", Dest: place("d:/")},
		&graph.TarIn{Src: "c.tar.zst", Dest: place("d:/")},
	} {
		c.must(j)
	}
	raw := c.raw("d")
	sum := func(p string) [32]byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	out := t.TempDir()
	for _, f := range []struct{ inDisk, want string }{{"/big", filepath.Join(repo, "in/big")}, {"/small", filepath.Join(repo, "in/small")}} {
		dump := filepath.Join(out, filepath.Base(f.inDisk))
		hostTool(t, "debugfs", "-R", "dump "+f.inDisk+" "+dump, raw)
		if sum(dump) != sum(f.want) {
			t.Errorf("copy-in: %s differs from %s", f.inDisk, f.want)
		}
	}
	hostTool(t, "debugfs", "-R", "dump /gz/mid "+filepath.Join(out, "mid"), raw)
	if b, _ := os.ReadFile(filepath.Join(out, "mid")); !bytes.Equal(b, mid) {
		t.Errorf("tar-in of a gzip tar: /gz/mid has %d bytes, not the %d of the archive's", len(b), len(mid))
	}
	if got, err := exec.Command("debugfs", "-R", "cat /zst/c.txt", raw).Output(); err != nil || string(got) != "from zstd\n" {
		t.Errorf("tar-in of a zstd tar: /zst/c.txt holds %q (%v)", got, err)
	}
}
