package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"strings"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/fsfix/blockdev"
)

// Linux cannot write UFS (Debian's kernel is built without UFS write support), and
// its driver does not find the UFS2 superblock where makefs puts it. So a job that
// works on a UFS filesystem works on a copy of its tree in the build VM's memory:
// mounting reads the tree out with vmb's own reader (readUFS), and unmounting
// builds the filesystem again from it with makefs (NetBSD's), with the same version,
// block and fragment sizes, label and ID. makefs records the times of the tree as
// they are (its -T clamps UFS1's, not UFS2's), to the second: the tree is
// normalized first, as a mounted filesystem is.

// ufsFS is what a rebuild of a UFS filesystem keeps from the one it replaces.
type ufsFS struct {
	version      int
	bsize, fsize int
	label        string
	id           uint32
}

// formatUFS makes an empty UFS filesystem (version 1 for "ufs", 2 for "ufs2") on
// dev. j.Options are makefs options (e.g. "-o", "bsize=16384,fsize=2048").
func (a *agent) formatUFS(dev string, j *graph.Format) error {
	id, _ := hex.DecodeString(a.hex32(0))
	u := ufsFS{version: 1, label: j.Label, id: binary.BigEndian.Uint32(id)}
	if j.FS == "ufs2" {
		u.version = 2
	}
	empty, err := os.MkdirTemp("", "ufs")
	if err != nil {
		return err
	}
	defer os.Remove(empty)
	return a.buildUFS(u, dev, empty, j.Options)
}

// buildUFS writes a UFS filesystem holding dir's tree over all of dev, with the
// tree's times normalized.
func (a *agent) buildUFS(u ufsFS, dev, dir string, options []string) error {
	if _, err := a.normalize(mountpoint{dir: dir, dev: dev, fstype: "ufs"}); err != nil {
		return err
	}
	size, err := blockdev.Size(dev)
	if err != nil {
		return err
	}
	opts := fmt.Sprintf("version=%d", u.version)
	if u.bsize > 0 {
		opts += fmt.Sprintf(",bsize=%d,fsize=%d", u.bsize, u.fsize)
	}
	args := []string{"-t", "ffs", "-o", opts, "-s", fmt.Sprint(size), "-T", fmt.Sprint(a.job.Epoch)}
	args = append(args, options...)
	args = append(args, dev, dir)
	fmt.Printf("+ makefs %s\n", strings.Join(args, " "))
	cmd := exec.Command("makefs", args...)
	// makefs prints its layout; the log keeps only what went wrong.
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("makefs: %w\n%s", err, out)
	}
	return fixUFS(dev, u.label, u.id)
}
