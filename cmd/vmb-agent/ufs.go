package main

import (
	"encoding/binary"
	"encoding/hex"
	"os"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/fsfix/ufs"
)

// Linux cannot write UFS (Debian's kernel is built without UFS write support), and
// its driver does not find the UFS2 superblock where makefs puts it. So a job that
// works on a UFS filesystem works on a copy of its tree in the build VM's memory:
// mounting reads the tree out with vmb's own reader (ufs.Read), and unmounting
// builds the filesystem again from it with makefs (ufs.Build), with the same
// version, block and fragment sizes, label and ID. makefs records the times of the
// tree as they are, to the second: the tree is normalized first, as a mounted
// filesystem is.

// formatUFS makes an empty UFS filesystem (version 1 for "ufs", 2 for "ufs2") on
// dev. j.Options are makefs options (e.g. "-o", "bsize=16384,fsize=2048").
func (a *agent) formatUFS(dev string, j *graph.Format) error {
	id, _ := hex.DecodeString(a.hex32(0))
	u := ufs.Params{Version: 1, Label: j.Label, ID: binary.BigEndian.Uint32(id)}
	if j.FS == "ufs2" {
		u.Version = 2
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
func (a *agent) buildUFS(u ufs.Params, dev, dir string, options []string) error {
	if err := a.normalize(mountpoint{dir: dir, dev: dev, fstype: "ufs"}); err != nil {
		return err
	}
	return ufs.Build(u, dev, dir, a.job.Epoch, options, os.Stdout)
}
