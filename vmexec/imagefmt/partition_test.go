package imagefmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// PartitionExtent agrees with sfdisk, on gpt and on msdos with logical partitions.
func TestPartitionExtent(t *testing.T) {
	if _, err := exec.LookPath("sfdisk"); err != nil {
		t.Skip("sfdisk is not installed (dev/setup installs fdisk)")
	}
	for _, script := range []string{
		"label: gpt\nsize=4MiB\nsize=8MiB\n\nsize=2MiB\n",
		"label: dos\nsize=4MiB\ntype=5\n",
	} {
		img := filepath.Join(t.TempDir(), "disk")
		f, _ := os.Create(img)
		f.Truncate(64 << 20)
		f.Close()
		run := func(stdin string, args ...string) []byte {
			cmd := exec.Command("sfdisk", args...)
			cmd.Stdin = strings.NewReader(stdin)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("sfdisk %v: %v", args, err)
			}
			return out
		}
		run(script, "--quiet", img)
		if strings.Contains(script, "dos") { // three logical partitions in the extended one
			run("size=4MiB\nsize=4MiB\nsize=4MiB\n", "--quiet", "--append", img)
		}
		var table struct {
			PartitionTable struct {
				Partitions []struct {
					Node        string
					Start, Size int64
					Type        string
				}
			}
		}
		if err := json.Unmarshal(run("", "--json", img), &table); err != nil {
			t.Fatal(err)
		}
		f, _ = os.Open(img)
		defer f.Close()
		checked := 0
		all, err := Partitions(f, 64<<20)
		if err != nil {
			t.Fatalf("%s: Partitions: %v", script[:10], err)
		}
		byNumber := map[int]Extent{}
		for _, p := range all.Partitions {
			byNumber[p.Number] = p.Extent
		}
		for _, p := range table.PartitionTable.Partitions {
			var n int
			if _, err := fmt.Sscanf(strings.TrimPrefix(p.Node, img), "%d", &n); err != nil {
				t.Fatal(err)
			}
			if p.Type == "5" {
				continue
			}
			e, err := PartitionExtent(f, 64<<20, n)
			if err != nil {
				t.Errorf("%s partition %d: %v", script[:10], n, err)
				continue
			}
			if e.Off != p.Start*512 || e.Len != p.Size*512 {
				t.Errorf("%s partition %d: %+v, sfdisk says start %d size %d", script[:10], n, e, p.Start, p.Size)
			}
			if byNumber[n] != e {
				t.Errorf("%s partition %d: Partitions says %+v, PartitionExtent %+v", script[:10], n, byNumber[n], e)
			}
			delete(byNumber, n)
			checked++
		}
		if len(byNumber) != 0 {
			t.Errorf("%s: Partitions found more: %v", script[:10], byNumber)
		}
		if checked < 3 {
			t.Errorf("%s: only %d partitions checked", script[:10], checked)
		}
		if _, err := PartitionExtent(f, 64<<20, 9); err == nil {
			t.Errorf("%s: partition 9 found", script[:10])
		}
	}
}

// A partition table vmb did not write cannot make the reader panic, loop or read
// off the disk.
func FuzzPartitionExtent(f *testing.F) {
	mbr := make([]byte, 1024)
	mbr[510], mbr[511] = 0x55, 0xaa
	mbr[446+4] = 0x05
	f.Add(mbr, 5)
	gpt := make([]byte, 2048)
	gpt[510], gpt[511] = 0x55, 0xaa
	gpt[446+4] = 0xee
	copy(gpt[512:], "EFI PART")
	f.Add(gpt, 1)
	f.Fuzz(func(t *testing.T, disk []byte, n int) {
		r := bytes.NewReader(disk)
		if e, err := PartitionExtent(r, int64(len(disk)), n); err == nil && (e.Off < 0 || e.Len <= 0 || e.Off+e.Len > int64(len(disk))) {
			t.Errorf("extent %+v off a disk of %d bytes", e, len(disk))
		}
		if tab, err := Partitions(r, int64(len(disk))); err == nil {
			for _, p := range tab.Partitions {
				if p.Off < 0 || p.Len <= 0 || p.Off+p.Len > int64(len(disk)) {
					t.Errorf("partition %+v off a disk of %d bytes", p, len(disk))
				}
			}
		}
	})
}
