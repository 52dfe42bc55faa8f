package udf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Two mkudffs runs with the same UUID differ in their descriptors' times, to the
// microsecond; Clamp makes them the same, zeroes free blocks, and udfinfo
// still reads them.
func TestClamp(t *testing.T) {
	if _, err := exec.LookPath("mkudffs"); err != nil {
		t.Skip("needs mkudffs (dev/setup installs udftools)")
	}
	epoch := time.Now().Add(-time.Hour).Unix()
	for _, bs := range []string{"512", "2048"} {
		var imgs [2][]byte
		for i := range imgs {
			img := filepath.Join(t.TempDir(), "udf.img")
			if err := os.WriteFile(img, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 64<<20); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mkudffs", "--blocksize="+bs, "--bootarea=erase", "--uuid=0123456789abcdef", "--label=vmb", img).CombinedOutput(); err != nil {
				t.Fatalf("mkudffs: %v\n%s", err, out)
			}
			// A deleted file's entry left in a free block: zeroed.
			stale := int64(40 << 20)
			f, err := os.OpenFile(img, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteAt([]byte("stale entry"), stale)
			f.Close()
			before, _ := os.ReadFile(img)
			n, err := Clamp(img, epoch)
			if err != nil {
				t.Fatal(err)
			}
			// mkudffs's PVD (in both sequences), LVID, FSD and root entry, at least.
			if n < 5 {
				t.Errorf("block size %s: %d descriptors clamped, want 5 or more", bs, n)
			}
			imgs[i], _ = os.ReadFile(img)
			if !bytes.Equal(imgs[i][stale:stale+11], make([]byte, 11)) {
				t.Errorf("block size %s: a free block keeps %q", bs, imgs[i][stale:stale+11])
			}
			if bytes.Equal(before, imgs[i]) {
				t.Errorf("block size %s: nothing changed", bs)
			}
			if n, err := Clamp(img, epoch); n != 0 || err != nil {
				t.Errorf("block size %s: a second clamp changed %d descriptors, %v", bs, n, err)
			}
			if out, err := exec.Command("udfinfo", img).CombinedOutput(); err != nil || !bytes.Contains(out, []byte("label=vmb\n")) {
				t.Errorf("block size %s: udfinfo after the clamp: %v\n%s", bs, err, out)
			}
			if i == 0 {
				time.Sleep(10 * time.Millisecond) // the second image, made at another time
			}
		}
		if !bytes.Equal(imgs[0], imgs[1]) {
			t.Errorf("block size %s: two mkudffs runs differ after Clamp", bs)
		}
	}
	if _, err := Clamp(os.Args[0], epoch); err == nil {
		t.Error("Clamp of a file that is no UDF volume: no error")
	}
}

func TestUDFTime(t *testing.T) {
	for _, c := range []struct {
		stamp []byte
		want  time.Time
		ok    bool
	}{
		{stamp: []byte{0x00, 0x10, 0xe4, 0x07, 1, 1, 0, 0, 0, 5, 0x21, 0x22}, want: time.Date(2020, 1, 1, 0, 0, 0, 53_334_000, time.UTC), ok: true},
		// Local time at UTC+1 (60 minutes), and at UTC-1 (-60, 0xfc4 in 12 bits).
		{stamp: []byte{0x3c, 0x10, 0xe4, 0x07, 1, 1, 1, 0, 0, 0, 0, 0}, want: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), ok: true},
		{stamp: []byte{0xc4, 0x1f, 0xe3, 0x07, 12, 31, 23, 0, 0, 0, 0, 0}, want: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC), ok: true},
		{stamp: make([]byte, 12), ok: false},
	} {
		got, ok := udfTime(c.stamp)
		if ok != c.ok || ok && !got.Equal(c.want) {
			t.Errorf("udfTime(% x) = %v, %v; want %v, %v", c.stamp, got, ok, c.want, c.ok)
		}
	}
	if got, _ := udfTime(func() []byte { s := udfStamp(1577836800); return s[:] }()); !got.Equal(time.Unix(1577836800, 0)) {
		t.Errorf("udfStamp(1577836800) reads back as %v", got)
	}
}

// Clamp reads a volume it did not write: whatever the bytes, it returns
// (an error, or what it did) and does not panic or read without bound. The seed is
// the smallest volume mkudffs makes (300 blocks of 512 bytes), where the host has
// mkudffs.
func FuzzClampUDFTimes(f *testing.F) {
	if _, err := exec.LookPath("mkudffs"); err == nil {
		img := filepath.Join(f.TempDir(), "udf.img")
		if err := os.WriteFile(img, make([]byte, 300*512), 0o644); err != nil {
			f.Fatal(err)
		}
		if out, err := exec.Command("mkudffs", "--blocksize=512", "--bootarea=erase", "--uuid=0123456789abcdef", img).CombinedOutput(); err != nil {
			f.Fatalf("mkudffs: %v\n%s", err, out)
		}
		b, err := os.ReadFile(img)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(make([]byte, 300*512))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		img := filepath.Join(dir, "fuzz.img")
		if err := os.WriteFile(img, b, 0o644); err != nil {
			t.Fatal(err)
		}
		Clamp(img, 1577836800)
	})
}
