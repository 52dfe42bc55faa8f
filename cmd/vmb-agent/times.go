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

// An inode fixTimes rewrites.
type inodeFix struct {
	ino        uint64
	crtime     bool // created after the epoch
	generation bool // a generation other than 0
	blocks     bool // a file or directory: blocks with checksums seeded by the generation
}

// normalize walks a mounted target, sets its times, and returns the inodes whose
// creation time or generation fixTimes has to rewrite once it is unmounted.
func (a *agent) normalize(m mountpoint) ([]inodeFix, error) {
	epoch := a.job.Epoch
	ext := strings.HasPrefix(m.fstype, "ext")
	var fixes []inodeFix
	err := filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &st); err != nil {
			return err
		}
		if ext {
			// ext4 draws every new inode's generation at random.
			fix := inodeFix{ino: st.Ino, crtime: st.Mask&unix.STATX_BTIME != 0 && after(st.Btime, epoch)}
			if d.Type().IsRegular() || d.IsDir() {
				gen, err := generation(p)
				if err != nil {
					return err
				}
				fix.generation, fix.blocks = gen != 0, gen != 0
			} else {
				fix.generation = true // no blocks to rewrite: setting it costs nothing
			}
			if fix.crtime || fix.generation {
				fixes = append(fixes, fix)
			}
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
	return fixes, err
}

// fsIocGetversion is FS_IOC_GETVERSION, _IOR('v', 1, long), which x/sys/unix lacks.
const fsIocGetversion = 0x80087601

// generation returns the generation of a file or directory.
func generation(p string) (int, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	gen, err := unix.IoctlGetInt(fd, fsIocGetversion)
	if err != nil {
		return 0, fmt.Errorf("generation of %s: %w", p, err)
	}
	return int(uint32(gen)), nil
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
// creation times, generations and change counters of inodes, the free blocks (what
// a removed file leaves there), and the superblock's mount and write
// times, mount count and lifetime write count. Their checksums are seeded with the
// generation, so the blocks of files and directories whose generation changed are
// written again by e2fsck.
func (a *agent) fixTimes(m mountpoint, fixes []inodeFix) error {
	if !strings.HasPrefix(m.fstype, "ext") {
		return nil
	}
	cleared, scrubbed, err := ext.ScrubInodes(m.dev)
	if err != nil {
		return fmt.Errorf("inode tables: %w", err)
	}
	fmt.Printf("+ inode tables: %d free inodes cleared, %d change counters zeroed\n", cleared, scrubbed)
	// Free blocks now, while every group the kernel allocated from has its bitmap
	// (e2fsck marks a group it finds empty BLOCK_UNINIT, and ZeroFree passes
	// those), and again after e2fsck, which frees the blocks of the directories it
	// compacts.
	zeroed, err := ext.ZeroFree(m.dev)
	if err != nil {
		return fmt.Errorf("free blocks: %w", err)
	}
	fmt.Printf("+ free blocks: %d MiB made to read as zeros\n", zeroed>>20)
	if err := a.fixInodes(m, fixes); err != nil {
		return err
	}
	if _, err := ext.ZeroFree(m.dev); err != nil {
		return fmt.Errorf("free blocks: %w", err)
	}
	// Last, since e2fsprogs stamp it with the clock, which runs: the superblock.
	return ext.StampSuperblock(m.dev, a.job.Epoch)
}

// fixInodes sets creation times and generations with debugfs, and has e2fsck write
// again the checksums seeded by a generation that changed.
func (a *agent) fixInodes(m mountpoint, fixes []inodeFix) error {
	if len(fixes) == 0 {
		return nil
	}
	at := fmt.Sprintf("@%d", a.job.Epoch)
	var cmds strings.Builder
	rewrite := false
	for _, f := range fixes {
		if f.crtime {
			fmt.Fprintf(&cmds, "sif <%d> crtime %s\nsif <%d> crtime_extra 0\n", f.ino, at, f.ino)
		}
		if f.generation {
			fmt.Fprintf(&cmds, "sif <%d> generation 0\n", f.ino)
		}
		rewrite = rewrite || f.blocks
	}
	f, err := os.CreateTemp("", "debugfs")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(cmds.String()); err != nil {
		return err
	}
	f.Close()
	fmt.Printf("+ debugfs: creation times and generations of %d inodes\n", len(fixes))
	env := []string{fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", a.job.Epoch), fmt.Sprintf("E2FSCK_TIME=%d", a.job.Epoch)}
	out, err := runEnv(env, "debugfs", "-w", "-f", f.Name(), m.dev)
	if err == nil {
		// debugfs reports a command that failed but exits 0: every line that is not
		// its banner or the echo of a command is an error.
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if !strings.HasPrefix(line, "debugfs") {
				err = fmt.Errorf("%s", line)
				break
			}
		}
	}
	if err != nil {
		return fmt.Errorf("debugfs: %v\n%s", err, out)
	}
	if !rewrite {
		return nil
	}
	// With metadata_csum, the checksums of directory and extent blocks are seeded
	// with their inode's generation: e2fsck writes them again. -D rebuilds every
	// directory from its entries alone: where an entry lands in a directory's
	// blocks otherwise depends on the names created and removed there before it,
	// and programs name their temporary files by pid and clock (depmod writes
	// modules.dep.<pid>.<usec>.<sec> and renames it), so two installs of the same
	// packages laid out /usr/lib/modules/<version> and / differently.
	fmt.Println("+ e2fsck -fyD: checksums seeded with the new generations, directories rebuilt")
	out, err = runEnv(env, "e2fsck", "-fyD", m.dev)
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

func copyFile(from, to string, perm fs.FileMode) error {
	in, err := os.Open(from)
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
