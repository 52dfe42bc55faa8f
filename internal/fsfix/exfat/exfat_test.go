package exfat

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"vmb.dev/vmb/internal/fsfix/fstest"
)

// exfatRoot returns the byte offset of the root directory of an exFAT image.
func exfatRoot(t *testing.T, img string) int64 {
	b := make([]byte, 512)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.ReadAt(b, 0)
	le := binary.LittleEndian
	sector := int64(1) << b[108]
	return int64(le.Uint32(b[88:]))*sector + int64(le.Uint32(b[96:])-2)*sector<<b[109]
}

// exfatStamp encodes t as an exFAT timestamp and 10 ms increment.
func exfatStamp(t time.Time) (uint32, byte) {
	return uint32(t.Year()-1980)<<25 | uint32(t.Month())<<21 | uint32(t.Day())<<16 |
		uint32(t.Hour())<<11 | uint32(t.Minute())<<5 | uint32(t.Second()/2), byte(t.Second()%2*100 + t.Nanosecond()/10_000_000)
}

// A file entry set for an empty file named name (ASCII), with all three times t.
func exfatFileSet(name string, t time.Time) []byte {
	le := binary.LittleEndian
	set := make([]byte, 3*32)
	set[0], set[1] = 0x85, 2
	le.PutUint16(set[4:], 0x20) // archive
	stamp, cs := exfatStamp(t)
	for _, at := range []int{8, 12, 16} {
		le.PutUint32(set[at:], stamp)
	}
	set[20], set[21] = cs, cs
	set[22], set[23], set[24] = 0x80, 0x80, 0x80 // UTC
	s := set[32:]
	s[0], s[1], s[3] = 0xc0, 0x01, byte(len(name))
	var hash uint16
	for _, c := range []byte(name) {
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		for _, b := range []byte{c, 0} {
			hash = (hash<<15 | hash>>1) + uint16(b)
		}
	}
	le.PutUint16(s[4:], hash)
	n := set[64:]
	n[0] = 0xc1
	for i, c := range []byte(name) {
		le.PutUint16(n[2+2*i:], uint16(c))
	}
	le.PutUint16(set[2:], exfatSetChecksum(set))
	return set
}

// Times after the epoch in an entry set are clamped, the set's checksum stays
// right (fsck.exfat checks it), and times before the epoch are kept.
func TestClamp(t *testing.T) {
	if _, err := exec.LookPath("mkfs.exfat"); err != nil {
		t.Skip("needs exfatprogs (dev/setup installs it)")
	}
	img := filepath.Join(t.TempDir(), "exfat.img")
	os.WriteFile(img, nil, 0o644)
	os.Truncate(img, 32<<20)
	if out, err := exec.Command("mkfs.exfat", "-L", "t", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.exfat: %v\n%s", err, out)
	}
	const epoch = 1577836800
	late := time.Unix(epoch, 0).UTC().Add(26*time.Hour + 1230*time.Millisecond)
	early := time.Unix(epoch, 0).UTC().Add(-48 * time.Hour)
	root := exfatRoot(t, img)
	f, _ := os.OpenFile(img, os.O_RDWR, 0)
	f.WriteAt(append(exfatFileSet("late", late), exfatFileSet("early", early)...), root+3*32) // after label, bitmap, upcase
	f.Close()
	fsck := func(when string) {
		if out, err := exec.Command("fsck.exfat", "-n", img).CombinedOutput(); err != nil {
			t.Fatalf("fsck.exfat %s: %v\n%s", when, err, out)
		}
	}
	fsck("of the image the test made")

	n, err := Clamp(img, epoch)
	if err != nil || n != 1 {
		t.Fatalf("Clamp = %d, %v; want 1 entry set changed", n, err)
	}
	fsck("after clamping")
	b, _ := os.ReadFile(img)
	le := binary.LittleEndian
	wantLate, _ := exfatStamp(time.Unix(epoch, 0).UTC())
	wantEarly, earlyCS := exfatStamp(early)
	got := b[root+3*32:]
	for _, at := range []int{8, 12, 16} {
		if s := le.Uint32(got[at:]); s != wantLate {
			t.Errorf("late file, time at %d: %#x, want %#x", at, s, wantLate)
		}
		if s := le.Uint32(got[96+at:]); s != wantEarly {
			t.Errorf("early file, time at %d: %#x, want %#x (kept)", at, s, wantEarly)
		}
	}
	if got[20] != 0 || got[21] != 0 || got[96+20] != earlyCS {
		t.Errorf("10 ms increments: %d %d (want 0 0), early %d (want %d)", got[20], got[21], got[96+20], earlyCS)
	}
	if n, err := Clamp(img, epoch); err != nil || n != 0 {
		t.Errorf("second clamp = %d, %v; want nothing to do", n, err)
	}
}

// Clamp reads a filesystem it did not write: whatever the bytes, it returns and
// does not panic. The seed is the boot region and the first clusters of what
// mkfs.exfat makes of 4 MiB, where the host has it.
func FuzzClamp(f *testing.F) {
	fstest.AddImage(f, "mkfs.exfat", 4<<20, 0x204000, func(img string) {
		fstest.Run(f, "mkfs.exfat", "-L", "t", img)
	})
	f.Add(append(append(make([]byte, 3), "EXFAT   "...), make([]byte, 1024)...))
	fstest.FuzzImage(f, func(t *testing.T, img string) {
		Clamp(img, 1577836800)
	})
}
