package ufs

import (
	"fmt"
	"io"
	"os/exec"
	"strings"

	"vmb.dev/vmb/internal/fsfix/blockdev"
)

// Params is what a rebuild of a UFS filesystem keeps from the one it replaces.
type Params struct {
	Version      int // 1 or 2
	BSize, FSize int // block and fragment sizes; 0: makefs's choice
	Label        string
	ID           uint32
}

// Build writes a UFS filesystem holding dir's tree over all of dev with makefs,
// with the tree's times as they are (its -T clamps UFS1's, not UFS2's, to
// epoch: the caller normalizes the tree first), then fixes it (Fix). options are
// more makefs options (e.g. "-o", "bsize=16384,fsize=2048"). The command line is
// printed on log; makefs's output only if it fails.
func Build(p Params, dev, dir string, epoch int64, options []string, log io.Writer) error {
	size, err := blockdev.Size(dev)
	if err != nil {
		return err
	}
	opts := fmt.Sprintf("version=%d", p.Version)
	if p.BSize > 0 {
		opts += fmt.Sprintf(",bsize=%d,fsize=%d", p.BSize, p.FSize)
	}
	args := []string{"-t", "ffs", "-o", opts, "-s", fmt.Sprint(size), "-T", fmt.Sprint(epoch)}
	args = append(args, options...)
	args = append(args, dev, dir)
	fmt.Fprintf(log, "+ makefs %s\n", strings.Join(args, " "))
	cmd := exec.Command("makefs", args...)
	// makefs prints its layout; the log keeps only what went wrong.
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("makefs: %w\n%s", err, out)
	}
	return Fix(dev, p.Label, p.ID)
}
