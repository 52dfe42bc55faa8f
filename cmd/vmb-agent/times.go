package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/fsfix/ext"
	"vmb.dev/vmb/internal/fsfix/ntfs"
	"vmb.dev/vmb/internal/fsfix/ufs"
)

// A mounted target filesystem.
type mountpoint struct {
	dir, dev, fstype string
	ufs              *ufs.Params // a UFS filesystem, read into memory: built again at unmount
}

// Filesystems record the moment of every change: inode change and creation times,
// superblock mount and write times, journal commit times. A build's guest clock
// starts at the epoch, but it runs, so two builds of the same job would differ in
// those times. Before a target is unmounted, normalize clamps every access and
// modification time after the epoch to the epoch, and sets every change time to the
// epoch; after it is unmounted, fixTimes rewrites what the kernel cannot (ext2/3/4
// creation times and superblock times). Times before the epoch (a tar-in of old
// files) are kept.

// normalize walks a mounted target and sets its times.
//
// Not on btrfs: btrfs.Fix clamps every inode's times once it is unmounted, and
// setting them here would record, in the inode's transid, the transaction in
// which an inode whose times happened to pass the epoch (a clock tick between
// the agent setting the clock and the write) was touched: vmexec TestBigFiles
// found a small file's transid 215 in one build and 259 in the other.
func (a *agent) normalize(m mountpoint) error {
	if m.fstype == "btrfs" {
		return nil
	}
	epoch := a.job.Epoch
	return filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st); err != nil {
			return err
		}
		if m.fstype == "ntfs" && d.Type()&fs.ModeSymlink == 0 {
			if err := ntfs.ClampFileTimes(p, epoch); err != nil {
				return err
			}
		}
		if !changed(&st, epoch) {
			return nil
		}
		times := []unix.Timespec{clamp(st.Atime, epoch), clamp(st.Mtime, epoch)}
		// The change time is the clock's when the times are set: set the clock to the
		// epoch first. The kernel stamps inodes with the clock of the last tick, so a
		// tick between the two calls shows as a change time past the epoch: try again.
		for try := 0; ; try++ {
			if err := unix.ClockSettime(unix.CLOCK_REALTIME, &unix.Timespec{Sec: epoch}); err != nil {
				return err
			}
			if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, times, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return fmt.Errorf("set times of %s: %w", p, err)
			}
			if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS, &st); err != nil {
				return err
			}
			if st.Ctime.Sec == epoch && st.Ctime.Nsec == 0 || try == 100 || m.fstype == "ntfs" {
				// ntfs-3g stamps the change with its own reading of the clock,
				// to 100 ns, which is never the epoch: trying again only costs
				// (100 tries a file through FUSE). ntfs.Clamp sets it after
				// unmounting.
				return nil
			}
		}
	})
}

// changed says whether an inode has times after the epoch: it was changed by this
// job, or normalize has to set its times (and so changes it).
func changed(st *unix.Statx_t, epoch int64) bool {
	return after(st.Atime, epoch) || after(st.Mtime, epoch) || st.Ctime.Sec != epoch || st.Ctime.Nsec != 0
}

func after(t unix.StatxTimestamp, epoch int64) bool {
	return t.Sec > epoch || t.Sec == epoch && t.Nsec != 0
}

func clamp(t unix.StatxTimestamp, epoch int64) unix.Timespec {
	if after(t, epoch) {
		return unix.Timespec{Sec: epoch}
	}
	return unix.Timespec{Sec: t.Sec, Nsec: int64(t.Nsec)}
}

// fixTimes rewrites, on an unmounted ext2/3/4 target, what normalize could not: the
// creation times, generations and change counters of inodes (ext.ScrubInodes), the
// free blocks (what a removed file leaves there), and the superblock's mount and
// write times, mount count and lifetime write count. With metadata_csum, the
// checksums of directory and extent blocks are seeded with their inode's
// generation: e2fsck writes them again where one changed.
//
// After a run, e2fsck -D also rebuilds every directory from its entries alone:
// where an entry lands in a directory's blocks otherwise depends on the names
// created and removed there before it, and programs name their temporary files by
// pid and clock (depmod writes modules.dep.<pid>.<usec>.<sec> and renames it), so
// two installs of the same packages laid out /usr/lib/modules/<version> and /
// differently. The agent's own jobs (copy-in, tar-in, remove, ...) make the same
// calls with the same names every time: their directories need no rebuild, and a
// copy-in of files into directories that exist needs no e2fsck at all (it is two
// fifths of such a job's time under emulation).
func (a *agent) fixTimes(m mountpoint) error {
	if !strings.HasPrefix(m.fstype, "ext") {
		return nil
	}
	s, err := ext.ScrubInodes(m.dev, a.job.Epoch)
	if err != nil {
		return fmt.Errorf("inode tables: %w", err)
	}
	fmt.Printf("+ inode tables: %d free inodes cleared, %d change counters zeroed, %d creation times and generations set\n", s.Cleared, s.Counters, s.Created)
	// Free blocks now, while every group the kernel allocated from has its bitmap
	// (e2fsck marks a group it finds empty BLOCK_UNINIT, and ZeroFree passes
	// those), and again after e2fsck, which frees the blocks of the directories it
	// compacts.
	zeroed, err := ext.ZeroFree(m.dev)
	if err != nil {
		return fmt.Errorf("free blocks: %w", err)
	}
	fmt.Printf("+ free blocks: %d MiB made to read as zeros\n", zeroed>>20)
	rebuild := a.job.Kind == (&graph.Run{}).Kind()
	if s.Reseed || rebuild {
		args := "-fy"
		if rebuild {
			args = "-fyD"
		}
		if err := e2fsck(m.dev, args, a.job.Epoch); err != nil {
			return err
		}
		if _, err := ext.ZeroFree(m.dev); err != nil {
			return fmt.Errorf("free blocks: %w", err)
		}
	}
	// Last, since e2fsprogs stamp it with the clock, which runs: the superblock.
	return ext.StampSuperblock(m.dev, a.job.Epoch)
}

// e2fsck runs e2fsck with args (-fy or -fyD) on dev, its clock at the epoch.
func e2fsck(dev, args string, epoch int64) error {
	what := "checksums seeded with the new generations written again"
	if strings.Contains(args, "D") {
		what += ", directories rebuilt"
	}
	fmt.Printf("+ e2fsck %s: %s\n", args, what)
	env := []string{fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", epoch), fmt.Sprintf("E2FSCK_TIME=%d", epoch)}
	out, err := runEnv(env, "e2fsck", args, dev)
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() < 4 {
		err = nil // 1 and 2: errors corrected
	}
	if err != nil {
		return fmt.Errorf("e2fsck: %v\n%s", err, out)
	}
	return nil
}

// copyTree copies the payload tree src onto dst (merging into directories that
// exist), owned by root, with the payload's modes and the epoch as every time. Each
// entry is created just after the clock is set to the epoch: FAT keeps creation times
// to 10 ms in directory entries ("." and ".." too) that nothing can set afterwards.
func (a *agent) copyTree(src, dst string) error {
	epoch := unix.Timespec{Sec: a.job.Epoch}
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &epoch); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		to := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if err := unix.ClockSettime(unix.CLOCK_REALTIME, &epoch); err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.Mkdir(to, fi.Mode().Perm()); err != nil && !errors.Is(err, fs.ErrExist) {
				return err
			}
		case d.Type() == fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			os.Remove(to)
			if err := os.Symlink(target, to); err != nil {
				return err
			}
		default:
			if err := replaceXFS(to); err != nil {
				return err
			}
			if err := copyFile(p, to, fi.Mode().Perm()); err != nil {
				return err
			}
		}
		os.Lchown(to, 0, 0) // not every filesystem has owners
		if d.Type() != fs.ModeSymlink {
			if err := os.Chmod(to, fi.Mode()&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil && !errors.Is(err, unix.EPERM) {
				return err
			}
		}
		return nil
	})
}

// copyFile copies a payload file.
func copyFile(from, to string, perm fs.FileMode) error {
	in, err := openPayload(from)
	if err != nil {
		return err
	}
	defer in.Close()
	os.Remove(to) // a file being replaced: a new inode, as cp would not, but as tar does
	out, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := copyData(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
