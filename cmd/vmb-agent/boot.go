package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/treesync"
	"vmb.dev/vmb/vmexec/proto"
)

// bootedDir is where the root filesystem the target booted from is mounted.
const bootedDir = "/mnt/booted"

// applyBoot ends boot-mode run j: it carries what the boot changed over from the
// disk the target booted from (attached after the target disks) to j's disk as
// it was before the boot. The root filesystem file by file (treesync), but for
// b.Exclude and what vmb made for the boot; the rest of the disk (other
// partitions, the partition table, a boot loader's sectors) block by block.
func (a *agent) applyBoot(j *graph.Run, b *proto.Booted) error {
	before, err := a.disk(j.Root.Disk)
	if err != nil {
		return err
	}
	after := fmt.Sprintf("/dev/vd%c", 'b'+len(a.job.Disks))
	n, err := copyOutside(after, before, j.Root.Partition)
	if err != nil {
		return err
	}
	fmt.Printf("+ outside %s: %d KiB changed by the boot\n", j.Root, n>>10)

	dst, err := a.mount(graph.Place{Disk: j.Root.Disk, Partition: j.Root.Partition, Path: "/"})
	if err != nil {
		return err
	}
	src := after
	if j.Root.Partition > 0 {
		src = fmt.Sprintf("%s%d", after, j.Root.Partition)
	}
	fstype := ""
	if out, err := runEnv(nil, "blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", src); err == nil {
		fstype = strings.TrimSpace(string(out))
	}
	if err := loadModules(moduleGroup(fstype)); err != nil {
		return err
	}
	opts := "ro"
	switch fstype {
	case "ext3", "ext4":
		opts += ",noload"
	case "xfs":
		opts += ",norecovery"
	}
	os.MkdirAll(bootedDir, 0o755)
	if err := sh("mount", "-o", opts, src, bootedDir); err != nil {
		kernelSays()
		return fmt.Errorf("mount the booted %s: %w", j.Root, err)
	}
	defer sh("umount", bootedDir)

	made, err := readMade(filepath.Join(bootedDir, proto.MadeList))
	if err != nil {
		return err
	}
	skip := func(rel string) bool {
		if made[rel] {
			return true
		}
		for _, p := range b.Exclude {
			if ok, _ := filepath.Match(p, rel); ok {
				return true
			}
		}
		return false
	}
	st, err := treesync.Sync(bootedDir, dst, skip)
	if err != nil {
		return fmt.Errorf("carry the boot's changes over: %w", err)
	}
	fmt.Printf("+ %s: %d entries created, %d updated, %d removed by the boot\n", j.Root, st.Created, st.Updated, st.Removed)
	return nil
}

// readMade reads the list of what vmb made in the target for the boot.
func readMade(p string) (map[string]bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("the booted root has no %s: was it booted by vmb? %w", proto.MadeList, err)
	}
	defer f.Close()
	m := map[string]bool{filepath.Dir(proto.MadeList): true}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			m[filepath.Clean(l)] = true
		}
	}
	return m, sc.Err()
}

// copyOutside copies what differs between disks from and to outside partition
// part (all of the disk when part is 0: a whole-disk filesystem is carried over
// file by file), and returns how many bytes it wrote.
func copyOutside(from, to string, part int) (int64, error) {
	if part == 0 {
		return 0, nil
	}
	base := filepath.Base(to)
	start, err1 := sysfsInt(fmt.Sprintf("/sys/class/block/%s%d/start", base, part))
	size, err2 := sysfsInt(fmt.Sprintf("/sys/class/block/%s%d/size", base, part))
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("partition %d of %s: %v %v", part, to, err1, err2)
	}
	r, err := os.Open(from)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	w, err := os.OpenFile(to, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer w.Close()
	total, err := w.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	const block = 64 << 10
	x, y := make([]byte, block), make([]byte, block)
	var wrote int64
	for _, rg := range [][2]int64{{0, start * 512}, {(start + size) * 512, total}} {
		for off := rg[0]; off < rg[1]; off += block {
			n := min(block, rg[1]-off)
			if _, err := r.ReadAt(x[:n], off); err != nil {
				return wrote, err
			}
			if _, err := w.ReadAt(y[:n], off); err != nil {
				return wrote, err
			}
			if !bytes.Equal(x[:n], y[:n]) {
				if _, err := w.WriteAt(x[:n], off); err != nil {
					return wrote, err
				}
				wrote += n
			}
		}
	}
	return wrote, w.Sync()
}

func sysfsInt(p string) (int64, error) {
	b, err := os.ReadFile(p)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
