package imagefmt

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The same disk exported twice gives the same image, in every format, and the image
// is sound to qemu-img.
func TestExportReproducible(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (dev/setup installs it)")
	}
	raw := filepath.Join(t.TempDir(), "disk.raw")
	f, _ := os.Create(raw)
	f.Truncate(64 << 20)
	f.WriteAt([]byte("a disk with something on it"), 3<<20)
	f.Close()
	convert := func(format, seed string) (string, []byte) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "export."+format)
		if err := Convert(t.Context(), raw, out, format, seed, io.Discard); err != nil {
			t.Fatalf("%s: %v", format, err)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return out, b
	}
	for _, format := range Formats[1:] {
		var got [2][]byte
		for i := range got {
			var out string
			out, got[i] = convert(format, "key1")
			work := filepath.Dir(out)
			if b, err := exec.Command("qemu-img", "check", "-f", format, out).CombinedOutput(); err != nil || strings.Contains(string(b), "ERROR") {
				t.Errorf("qemu-img check of the %s export: %v\n%s", format, err, b)
			}
			// The image still holds the disk.
			back := filepath.Join(work, "back.raw")
			if b, err := exec.Command("qemu-img", "convert", "-f", format, "-O", "raw", out, back).CombinedOutput(); err != nil {
				t.Fatalf("read the %s export back: %v\n%s", format, err, b)
			}
			if b, _ := exec.Command("cmp", raw, back).CombinedOutput(); len(b) > 0 {
				t.Errorf("the %s export does not hold the disk: %s", format, b)
			}
		}
		if !bytes.Equal(got[0], got[1]) {
			t.Errorf("%s: two exports of the same disk differ", format)
		}
		if _, other := convert(format, "key2"); format != "qcow2" && bytes.Equal(other, got[0]) {
			t.Errorf("%s: the identifiers do not depend on the key", format)
		}
	}
}

// qemu-img prints the random CID without leading zeros; whatever its length, the
// fixed image is the same.
func TestFixVMDKShortCID(t *testing.T) {
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Skip("qemu-img is not installed (dev/setup installs it)")
	}
	dir := t.TempDir()
	orig := filepath.Join(dir, "orig.vmdk")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "vmdk", orig, "1M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v\n%s", err, b)
	}
	img, err := os.ReadFile(orig)
	if err != nil {
		t.Fatal(err)
	}
	off := int(binary.LittleEndian.Uint64(img[28:])) * 512
	size := int(binary.LittleEndian.Uint64(img[36:])) * 512
	loc := vmdkCID.FindIndex(img[off : off+size])
	if loc == nil {
		t.Fatal("qemu-img wrote no CID line")
	}
	var fixed [][]byte
	for _, cid := range []string{"CID=1a2b3c4d", "CID=abc", "CID=0"} {
		// The same image with a CID of another length, as qemu-img could write it:
		// the descriptor's text moves within its zero-padded sectors.
		desc := slices.Concat(img[off:off+loc[0]], []byte(cid), img[off+loc[1]:off+size])
		desc = append(desc, make([]byte, size)...)[:size]
		b := slices.Concat(img[:off], desc, img[off+size:])
		p := filepath.Join(dir, "t.vmdk")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := fixVMDK(p, "key1"); err != nil {
			t.Fatalf("%s: %v", cid, err)
		}
		if out, err := exec.Command("qemu-img", "check", "-f", "vmdk", p).CombinedOutput(); err != nil {
			t.Errorf("%s: qemu-img check: %v\n%s", cid, err, out)
		}
		got, _ := os.ReadFile(p)
		fixed = append(fixed, got)
	}
	for i := 1; i < len(fixed); i++ {
		if !bytes.Equal(fixed[0], fixed[i]) {
			t.Errorf("fixed images differ with the original CID's length (case %d)", i)
		}
	}
}
