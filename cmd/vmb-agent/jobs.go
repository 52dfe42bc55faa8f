package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/fsfix/fat"
	"vmb.dev/vmb/internal/fsfix/ufs"
	"vmb.dev/vmb/vmexec/proto"
)

// run runs the job and unmounts whatever it mounted.
func (a *agent) run() error {
	job := graph.NewJob(a.job.Kind)
	if job == nil {
		return fmt.Errorf("unknown job kind %q", a.job.Kind)
	}
	if err := json.Unmarshal(a.job.Params, job); err != nil {
		return fmt.Errorf("params: %w", err)
	}
	os.MkdirAll(outputDir, 0o755)
	uses := job.Uses()
	a.readOnly = len(uses.Writes) == 0 && len(uses.Disks) == 0
	err := a.do(job)
	if uerr := a.unmountAll(); err == nil {
		err = uerr
	}
	if _, ok := job.(*graph.Run); ok && err == nil {
		err = a.fixUnmounted()
	}
	unix.Sync()
	return err
}

// fixUnmounted runs the fixers of the FAT family on every such filesystem of a
// run's disks, which its command may have mounted and written itself (a boot
// loader's installer mounts the EFI system partition): FAT keeps creation times to
// 10 ms, and the held clock is up to holdPeriod past the epoch. vmb check found
// grub-install's /EFI/BOOT made at .06 s in one build and .07 s in the other. The
// fixers change nothing that is not after the epoch, so a filesystem the agent
// mounted and fixed already is left as it is.
func (a *agent) fixUnmounted() error {
	for _, name := range a.job.Disks {
		dev, err := a.disk(name)
		if err != nil {
			return err
		}
		devs := []string{dev}
		entries, _ := os.ReadDir(filepath.Join("/sys/block", filepath.Base(dev)))
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), filepath.Base(dev)) {
				devs = append(devs, "/dev/"+e.Name())
			}
		}
		for _, d := range devs {
			out, _ := exec.Command("blkid", "-p", "-o", "value", "-s", "TYPE", d).Output()
			if typ := strings.TrimSpace(string(out)); typ == "vfat" || typ == "exfat" {
				if err := a.fixVolume(typ, d); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func (a *agent) do(job graph.Job) error {
	switch j := job.(type) {
	case *graph.Label:
		return a.label(j)
	case *graph.Partition:
		return a.partition(j)
	case *graph.Format:
		return a.format(j)
	case *graph.CopyIn:
		return a.copyIn(j)
	case *graph.Fetch:
		return a.copyIn(&graph.CopyIn{Src: "fetched", Dest: j.Dest, Mode: j.Mode})
	case *graph.TarIn:
		return a.tarIn(j)
	case *graph.ImageIn:
		return a.imageIn(j)
	case *graph.Remove:
		dir, err := a.mount(j.Path)
		if err != nil {
			return err
		}
		if done, err := removeXFS(dir); done {
			return err
		}
		return sh("rm", "-rf", dir)
	case *graph.Run:
		if a.job.Booted != nil {
			return a.applyBoot(j, a.job.Booted)
		}
		return a.runChroot(j)
	case *graph.CopyOut:
		// A symlink is followed, as the target would follow it: /vmlinuz is
		// the kernel, not a link to one.
		root, err := a.mount(graph.Place{Disk: j.Src.Disk, Partition: j.Src.Partition, Path: "/"})
		if err != nil {
			return err
		}
		src, err := resolveIn(root, j.Src.Path)
		if err != nil {
			return err
		}
		dst := filepath.Join(outputDir, j.Dest)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if fi, err := os.Stat(src); err == nil && fi.IsDir() {
			return a.tarDir(src, dst)
		}
		return sh("cp", "-a", src, dst)
	case *graph.TarOut:
		src, err := a.mount(j.Src)
		if err != nil {
			return err
		}
		dst := filepath.Join(outputDir, j.Dest)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		return a.tarDir(src, dst)
	case *graph.Diff:
		dir, err := a.mount(graph.Place{Disk: j.Place.Disk, Partition: j.Place.Partition, Path: "/"})
		if err != nil {
			return err
		}
		return listing(dir, filepath.Join(outputDir, j.Dest))
	}
	return fmt.Errorf("job %s does not run in the build VM", job.Kind())
}

// uuidBytes derives the n-th UUID of this job from its seed (proto.DeriveUUID),
// so that a filesystem made by the same node is the same every time; serials and
// signatures are its first bytes.
func (a *agent) uuidBytes(n int) []byte {
	return proto.DeriveUUID(a.job.Seed, fmt.Sprintf("uuid %d", n))
}

// uuid is uuidBytes(n) as text.
func (a *agent) uuid(n int) string {
	x := hex.EncodeToString(a.uuidBytes(n))
	return x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

func (a *agent) hex32(n int) string { return strings.ReplaceAll(a.uuid(n), "-", "")[:8] }

func (a *agent) label(j *graph.Label) error {
	dev, err := a.disk(j.Disk)
	if err != nil {
		return err
	}
	script := "label: gpt\nlabel-id: " + strings.ToUpper(a.uuid(0)) + "\n"
	if j.Type == "msdos" {
		script = "label: dos\nlabel-id: 0x" + a.hex32(0) + "\n"
	}
	return shIn(strings.NewReader(script), "sfdisk", "--quiet", "--wipe", "always", dev)
}

func (a *agent) partition(j *graph.Partition) error {
	dev, err := a.disk(j.Disk)
	if err != nil {
		return err
	}
	out, err := exec.Command("sfdisk", "--dump", dev).Output()
	if err != nil {
		return fmt.Errorf("read partition table of %s: %w", dev, err)
	}
	gpt := strings.Contains(string(out), "label: gpt")
	primaries, logicals := 0, 0
	for _, l := range strings.Split(string(out), "\n") {
		if !strings.HasPrefix(l, dev) {
			continue
		}
		var n int
		fmt.Sscanf(strings.TrimPrefix(l, dev), "%d", &n)
		if n >= 5 && !gpt {
			logicals++
		} else {
			primaries++
		}
	}
	var script strings.Builder
	for i, p := range j.Partitions {
		var num int
		if p.Type == "logical" {
			logicals++
			num = 4 + logicals
		} else {
			primaries++
			num = primaries
		}
		fmt.Fprintf(&script, "%s%d : ", dev, num)
		if p.Size > 0 {
			fmt.Fprintf(&script, "size=%d, ", int64(p.Size)/512)
		}
		switch {
		case gpt:
			// lang resolved aliases already; a job made by hand may still say
			// "" or "linux".
			guid, err := graph.ResolveGUID(p.GUID)
			if err != nil {
				return err
			}
			fmt.Fprintf(&script, "type=%s, uuid=%s", guid, strings.ToUpper(a.uuid(1+i)))
			if p.Name != "" {
				fmt.Fprintf(&script, ", name=%q", p.Name)
			}
		case p.Type == "extended":
			script.WriteString("type=5")
		default:
			id := p.ID
			if id == "" {
				id = "83"
			}
			fmt.Fprintf(&script, "type=%s", id)
		}
		if p.Bootable && !gpt {
			script.WriteString(", bootable")
		}
		script.WriteString("\n")
	}
	return shIn(strings.NewReader(script.String()), "sfdisk", "--quiet", "--append", dev)
}

func (a *agent) format(j *graph.Format) error {
	dev, err := a.volume(j.Place)
	if err != nil {
		return err
	}
	u := a.uuid(0)
	var args []string
	env := append(os.Environ(), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", a.job.Epoch))
	switch j.FS {
	case "ext2", "ext3", "ext4":
		args = []string{"mkfs." + j.FS, "-F", "-q", "-U", u, "-E", "hash_seed=" + u + ",lazy_itable_init=0,lazy_journal_init=0"}
		if j.Label != "" {
			args = append(args, "-L", j.Label)
		}
		// e2fsprogs 1.47.0 reads the time to write from this variable, not from
		// SOURCE_DATE_EPOCH.
		env = append(env, fmt.Sprintf("E2FSPROGS_FAKE_TIME=%d", a.job.Epoch))
	case "fat32":
		// No fake MBR on a whole disk: mkfs.fat would draw its signature from the clock.
		args = []string{"mkfs.fat", "-F", "32", "--mbr=n", "-i", a.hex32(0)}
		if j.Label != "" {
			args = append(args, "-n", j.Label)
		}
	case "xfs":
		args = []string{"mkfs.xfs", "-f", "-q", "-m", "uuid=" + u}
		if j.Label != "" {
			args = append(args, "-L", j.Label)
		}
	case "btrfs":
		args = []string{"mkfs.btrfs", "-f", "-q", "-U", u}
		if j.Label != "" {
			args = append(args, "-L", j.Label)
		}
	case "minix":
		args = []string{"mkfs.minix", "-3"}
	case "exfat":
		args = []string{"mkfs.exfat"}
		if j.Label != "" {
			args = append(args, "-L", j.Label)
		}
	case "ntfs":
		args = []string{"mkntfs", "-F", "-f", "-q"}
		if j.Label != "" {
			args = append(args, "-L", j.Label)
		}
	case "ufs", "ufs2":
		return a.formatUFS(dev, j)
	case "udf":
		args = []string{"mkudffs", "--uuid=" + strings.ReplaceAll(a.uuid(0), "-", "")[:16]}
		if j.Label != "" {
			args = append(args, "--label="+j.Label)
		}
	default:
		return fmt.Errorf("format %s: not supported by this appliance yet", j.FS)
	}
	args = append(args, j.Options...)
	args = append(args, dev)
	fmt.Printf("+ %s\n", strings.Join(args, " "))
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, os.Stdout, os.Stdout
	// The mkfs tools that ignore SOURCE_DATE_EPOCH stamp what they make with the
	// clock, to the second (mkfs.minix's root inode; mkntfs seeds its serial with
	// it): the clock started at the epoch when the VM booted, but a second may
	// have gone since.
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &unix.Timespec{Sec: a.job.Epoch}); err != nil {
		return err
	}
	if err := cmd.Run(); err != nil {
		return err
	}
	switch j.FS {
	case "fat32":
		// mkfs.fat dates the label's directory entry with the clock.
		_, err = fat.Clamp(dev, a.job.Epoch)
	case "exfat":
		// mkfs.exfat of exfatprogs 1.2 draws the serial from the clock and takes
		// none: tune.exfat sets it (and the boot region's checksum).
		err = sh("tune.exfat", "-I", "0x"+a.hex32(0), dev)
	case "udf":
		err = a.fixUDFFormat(dev, j.Place.Partition == 0)
	case "xfs":
		// mkfs.xfs stamps its first inodes with the clock, to the nanosecond.
		err = a.fixVolume("xfs", dev)
	case "btrfs":
		err = a.fixBtrfsFormat(dev)
	case "ntfs":
		err = a.fixNTFSFormat(dev)
	}
	return err
}

// mount mounts the filesystem of p's volume (once per job) and returns the host
// path of p inside it.
func (a *agent) mount(p graph.Place) (string, error) {
	dev, err := a.volume(p)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(targetDir, strings.NewReplacer(":", "_", "/", "_").Replace(p.Volume().String()))
	if !a.isMounted(dir) {
		m := mountpoint{dir: dir, dev: dev, fstype: fsType(dev)}
		if m.fstype == "ufs" {
			u, err := ufs.ReadParams(dev)
			if err == nil {
				os.MkdirAll(dir, 0o755)
				fmt.Printf("+ read UFS%d %s into memory\n", u.Version, p.Volume())
				err = ufs.Read(dev, dir)
			}
			if err != nil {
				return "", fmt.Errorf("%s: %w", p.Volume(), err)
			}
			m.ufs = &u
			a.mounted = append(a.mounted, m)
			return filepath.Join(dir, filepath.Clean("/"+p.Path)), nil
		}
		if err := loadModules(moduleGroup(m.fstype)); err != nil {
			return "", err
		}
		// noload: no journal. A build VM that dies loses its job, not the disk it
		// started from, and a journal would record commit times.
		opts := "noatime"
		if a.readOnly {
			// Mounting writes on some filesystems (btrfs commits a transaction
			// at unmount): a job that only reads leaves the disk as it was.
			opts = "ro"
			if m.fstype == "xfs" {
				opts += ",norecovery" // or it writes an unmount record to its log
			}
		}
		if m.fstype == "ext3" || m.fstype == "ext4" {
			opts += ",noload"
		}
		if m.fstype == "btrfs" && !a.readOnly {
			// One transaction, committed at unmount: the commit timer (30 s)
			// would add generations to a long job's disk as the clock goes.
			opts += ",commit=3600"
		}
		if strings.HasPrefix(m.fstype, "ext") && !a.readOnly {
			// The allocator looks only at block groups whose bitmaps it has
			// read. By default a thread reads them in the background from the
			// mount on, and the optimized scan picks among those read, so how
			// far that thread had got decided where a block went: vmb check
			// found an extent block of /var/lib/dpkg/status in another group
			// after an apt install. Read on demand, and scanned in order from
			// the goal, the groups are chosen the same way every time.
			opts += ",no_prefetch_block_bitmaps,mb_optimize_scan=0"
		}
		if m.fstype == "ext4" {
			// Blocks are allocated as files are written, not when writeback
			// comes: a file created and removed before writeback would otherwise
			// leave the allocator somewhere else depending on the timing.
			opts += ",nodelalloc"
		}
		opts += xfsMountOptions(m.fstype, a.readOnly) + btrfsMountOptions(m.fstype, a.readOnly)
		os.MkdirAll(dir, 0o755)
		var err error
		switch m.fstype {
		case "":
			err = sh("mount", "-o", opts, dev, dir)
		case "ntfs": // written through FUSE: the kernel's ntfs3 is not in the appliance
			err = sh("ntfs-3g", "-o", opts, dev, dir)
		default:
			err = mountKernel(m.fstype, opts, dev, dir)
		}
		if err != nil {
			kernelSays()
			return "", fmt.Errorf("mount %s: %w", p.Volume(), err)
		}
		a.mounted = append(a.mounted, m)
		xfsMounted(m.fstype)
		if !a.readOnly {
			btrfsMounted(m.fstype, dir)
		}
		if strings.HasPrefix(m.fstype, "ext") && !a.readOnly { // ext2 and ext3 too: the ext4 driver mounts them
			if err := ext4StreamOnly(dev); err != nil {
				return "", fmt.Errorf("%s: %w", p.Volume(), err)
			}
		}
	}
	return filepath.Join(dir, filepath.Clean("/"+p.Path)), nil
}

// ext4StreamOnly makes ext4's block allocator place every file by the
// filesystem-wide stream goal, which follows the order files are written in.
// By default a file of under mb_stream_req (16) blocks goes to a preallocation of
// the CPU its writer happens to run on (a per-CPU "locality group"), so the same
// writes land elsewhere with another CPU count or schedule: vmb check, which
// rebuilds with two CPUs, found an apt install's small files placed differently
// in every block group. Allocation is at write time already (nodelalloc).
func ext4StreamOnly(dev string) error {
	real, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return err
	}
	knob := filepath.Join("/sys/fs/ext4", filepath.Base(real), "mb_stream_req")
	if _, err := os.Stat(filepath.Dir(knob)); errors.Is(err, fs.ErrNotExist) {
		return nil // mounted by the ext2 or ext3 driver, which has no per-CPU preallocation
	}
	if err := os.WriteFile(knob, []byte("0\n"), 0o644); err != nil {
		return fmt.Errorf("place small files as a stream: %w", err)
	}
	return nil
}

// fsTypes remembers, within one boot, the filesystem type blkid found on each
// device, for the jobs of a chain that only work on files (keepsFSTypes): none of
// them can change what a device holds, and starting blkid costs about 50 ms a job
// under emulation. Any other job forgets them all, before and after it runs.
var fsTypes = map[string]string{}

var keepsFSTypes = map[string]bool{}

func init() {
	for _, j := range []graph.Job{&graph.CopyIn{}, &graph.TarIn{}, &graph.ImageIn{}, &graph.Fetch{}, &graph.Remove{}, &graph.CopyOut{}, &graph.TarOut{}} {
		keepsFSTypes[j.Kind()] = true
	}
}

// fsType is the filesystem type blkid names on dev, or "". blkid is kept from
// its cache file (-c /dev/null): it trusts an entry that the clock says it
// checked less than 2 seconds before, and the agent sets the clock back to the
// epoch for every job, so in a chain (TestChainReformat, in CI) it named a disk
// just formatted fat32 by the ext4 it had cached a moment earlier.
func fsType(dev string) string {
	if t, ok := fsTypes[dev]; ok {
		return t
	}
	out, err := exec.Command("blkid", "-c", "/dev/null", "-o", "value", "-s", "TYPE", dev).Output()
	if err != nil {
		return ""
	}
	t := strings.TrimSpace(string(out))
	fsTypes[dev] = t
	return t
}

// mountKernel mounts a filesystem the kernel has a driver for, as mount(8) would
// with these options, without the cost of starting it (tens of milliseconds a
// job under emulation): noatime, ro and the like are flags (mountFlags), the rest
// goes to the driver.
func mountKernel(fstype, opts, dev, dir string) error {
	fmt.Printf("+ mount -o %s -t %s %s %s\n", opts, fstype, dev, dir)
	var flags uintptr
	var data []string
	for _, o := range strings.Split(opts, ",") {
		if f, ok := mountFlags[o]; ok {
			flags |= f
		} else {
			data = append(data, o)
		}
	}
	if err := unix.Mount(dev, dir, fstype, flags, strings.Join(data, ",")); err != nil {
		return fmt.Errorf("mount -t %s %s: %w", fstype, dev, err)
	}
	return nil
}

// fitrim is FITRIM, _IOWR('X', 121, struct fstrim_range), which x/sys/unix lacks.
const fitrim = 0xc0185879

// fstrim discards the free blocks of a mounted filesystem, as fstrim(8) does,
// without the cost of starting it. Not every filesystem can (ext4 mounted
// noload refuses; ext.ZeroFree does it once unmounted): that is no error.
func fstrim(dir string) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	r := struct{ start, len, minlen uint64 }{0, math.MaxUint64, 0}
	unix.Syscall(unix.SYS_IOCTL, uintptr(fd), fitrim, uintptr(unsafe.Pointer(&r)))
}

// mountFlags are the options mount(8) makes flags of, not the driver's options.
var mountFlags = map[string]uintptr{
	"ro": unix.MS_RDONLY, "noatime": unix.MS_NOATIME, "sync": unix.MS_SYNCHRONOUS,
	"dirsync": unix.MS_DIRSYNC, "nodev": unix.MS_NODEV, "nosuid": unix.MS_NOSUID, "noexec": unix.MS_NOEXEC,
}

// unmount unmounts a target filesystem; FUSE's (ntfs-3g) with umount(8).
func unmount(m mountpoint) error {
	if m.fstype == "ntfs" || m.fstype == "" {
		return sh("umount", m.dir)
	}
	fmt.Printf("+ umount %s\n", m.dir)
	if err := unix.Unmount(m.dir, 0); err != nil {
		return fmt.Errorf("umount %s: %w", m.dir, err)
	}
	return nil
}

func (a *agent) isMounted(dir string) bool {
	for _, m := range a.mounted {
		if m.dir == dir {
			return true
		}
	}
	return false
}

// unmountAll normalizes times, discards free blocks (so the disk handed back is
// sparse) and unmounts.
func (a *agent) unmountAll() error {
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for i := len(a.mounted) - 1; i >= 0; i-- {
		m := a.mounted[i]
		for _, sub := range []string{"dev", "proc", "sys"} {
			unix.Unmount(filepath.Join(m.dir, sub), unix.MNT_DETACH)
		}
		if a.readOnly { // mounted read-only, or a UFS copy in memory
			if m.ufs == nil {
				keep(unmount(m))
			}
			continue
		}
		if m.ufs != nil {
			keep(a.buildUFS(*m.ufs, m.dev, m.dir, nil))
			continue
		}
		err := a.normalize(m)
		keep(err)
		keep(settleXFS(m.dir))
		// Committed first: btrfs frees the blocks a transaction replaced only
		// when it commits, and fstrim discards only free blocks.
		syncfs(m.dir)
		fstrim(m.dir)
		if err := unmount(m); err != nil {
			keep(err)
			continue
		}
		if err == nil {
			keep(a.fixTimes(m))
			keep(a.fixVolume(m.fstype, m.dev))
		}
	}
	a.mounted = nil
	return first
}

func (a *agent) copyIn(j *graph.CopyIn) error {
	dst, err := a.mount(j.Dest)
	if err != nil {
		return err
	}
	src := filepath.Join(payloadDir, proto.PayloadSrc)
	if _, err := os.Lstat(src); err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	fmt.Printf("+ copy %s to %s\n", j.Src, dst)
	if err := a.copyTree(src, dst); err != nil {
		return err
	}
	if j.Owner != "" {
		if err := sh("chown", "-R", j.Owner, dst); err != nil {
			return err
		}
	}
	if j.Mode != "" {
		return sh("chmod", string(j.Mode), dst)
	}
	return nil
}

func (a *agent) tarIn(j *graph.TarIn) error {
	dst, err := a.mount(j.Dest)
	if err != nil {
		return err
	}
	os.MkdirAll(dst, 0o755)
	return extractPayload(dst)
}

// extractPayload extracts the payload, a tar archive, onto dst as root: numeric
// owners, modes, and with extra (tar's options) xattrs and the like.
func extractPayload(dst string, extra ...string) error {
	in, err := openPayload(filepath.Join(payloadDir, proto.PayloadSrc))
	if err != nil {
		return fmt.Errorf("payload: %w", err)
	}
	defer in.Close()
	args := append([]string{"-x", tarRecord(dst), "--warning=no-timestamp", "--numeric-owner", "--same-owner", "-p"}, extra...)
	// tar tells a compressed archive by its first bytes only in a file it can
	// read again: on a pipe, it is told.
	br := bufio.NewReader(in)
	head, _ := br.Peek(6)
	for _, c := range tarCompressions {
		if bytes.HasPrefix(head, []byte(c.magic)) {
			args = append(args, c.flag)
			break
		}
	}
	return shIn(br, "tar", append(args, "-f", "-", "-C", dst)...)
}

// tarCompressions are the compressed formats GNU tar recognizes by their first
// bytes when it reads an archive from a file, and the option that names each.
var tarCompressions = []struct{ magic, flag string }{
	{"\x1f\x8b", "--gzip"}, {"BZh", "--bzip2"}, {"\xfd7zXZ\x00", "--xz"}, {"\x28\xb5\x2f\xfd", "--zstd"},
	{"LZIP", "--lzip"}, {"\xffLZMA", "--lzma"}, {"\x89LZO", "--lzop"}, {"\x1f\x9d", "--uncompress"},
}

// imageIn extracts the image's filesystem, which the host flattened into one tar
// stream, as root: numeric owners, modes, xattrs, hard links and device nodes as
// the image has them.
func (a *agent) imageIn(j *graph.ImageIn) error {
	dst, err := a.mount(j.Dest)
	if err != nil {
		return err
	}
	os.MkdirAll(dst, 0o755)
	return extractPayload(dst, "--xattrs", "--xattrs-include=*")
}

// tarDir archives a directory deterministically: sorted names, numeric owners,
// no access or change times.
func (a *agent) tarDir(src, dst string) error {
	return sh("tar", "--sort=name", "--numeric-owner", "--format=posix",
		"--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
		fmt.Sprintf("--mtime=@%d", a.job.Epoch), "--clamp-mtime", "-cf", dst, "-C", src, ".")
}

func (a *agent) runChroot(j *graph.Run) error {
	if j.Mode != "chroot" {
		return fmt.Errorf("run mode %q is not supported yet", j.Mode)
	}
	root, err := a.mount(graph.Place{Disk: j.Root.Disk, Partition: j.Root.Partition, Path: "/"})
	if err != nil {
		return err
	}
	for _, m := range []struct{ src, dst, fstype string }{{"proc", "proc", "proc"}, {"sysfs", "sys", "sysfs"}, {"devtmpfs", "dev", "devtmpfs"}} {
		p := filepath.Join(root, m.dst)
		os.MkdirAll(p, 0o755)
		if err := unix.Mount(m.src, p, m.fstype, 0, ""); err != nil {
			return fmt.Errorf("mount %s in the target: %w", m.dst, err)
		}
	}
	// A boot loader's installer (grub-mkconfig) names the root by UUID only when
	// /dev/disk/by-uuid has it: the links udev would make.
	if err := diskLinks(); err != nil {
		return fmt.Errorf("/dev/disk links: %w", err)
	}
	if j.Network != graph.NoNetwork {
		undo, err := network(root)
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		defer undo()
	}
	cmd := exec.Command(j.Command[0], j.Command[1:]...)
	cmd.SysProcAttr = &unix.SysProcAttr{Chroot: root}
	cmd.Dir = j.Workdir
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", a.job.Epoch), "PYTHONHASHSEED=0"}
	cmd.Env = append(cmd.Env, a.diskEnv(j.Root.Disk)...)
	for _, k := range sortedKeys(j.Env) {
		cmd.Env = append(cmd.Env, k+"="+j.Env[k])
	}
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stdout
	fmt.Printf("+ chroot %s %q\n", j.Root, []string(j.Command))
	return cmd.Run()
}

// listing writes a file-level description of the tree at root: one line per entry,
// sorted, with type, mode, owner, size, mtime and the sha256 of regular files.
func listing(root, dst string) error {
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	return filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		// os.Lstat fills a syscall.Stat_t (not x/sys/unix's): asserting the
		// other made every diff job panic.
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat_t", p)
		}
		extra := ""
		switch {
		case fi.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			extra = hex.EncodeToString(h.Sum(nil))
		case fi.Mode()&os.ModeSymlink != 0:
			extra, _ = os.Readlink(p)
		}
		_, err = fmt.Fprintf(out, "%s %s %d:%d %d %d %s\n", fi.Mode(), "/"+filepath.ToSlash(rel), st.Uid, st.Gid, fi.Size(), fi.ModTime().Unix(), extra)
		return err
	})
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// kernelSays prints the kernel's last messages: why a mount failed is only there.
func kernelSays() {
	out, _ := exec.Command("dmesg").Output()
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fmt.Println(strings.Join(lines[max(0, len(lines)-5):], "\n"))
}

// moduleGroup names the appliance's module group for a filesystem type as blkid
// names it.
func moduleGroup(fstype string) string {
	switch fstype {
	case "ext2", "ext3", "ext4":
		return "ext4"
	case "vfat", "msdos":
		return "vfat"
	case "ntfs":
		return "fuse"
	case "":
		return "all" // blkid does not know: the kernel may
	}
	return fstype
}

// network brings up the VM's NIC on qemu's user-mode network and points the
// target's resolver at qemu's DNS forwarder for the command: a file of ours is
// mounted over the target's /etc/resolv.conf, which is left as it was. undo
// unmounts it.
func network(root string) (undo func(), err error) {
	undo = func() {}
	if !netUp {
		if err := netUpOnce(); err != nil {
			return undo, err
		}
		netUp = true
	}
	resolv := filepath.Join(root, "etc/resolv.conf")
	fi, err := os.Lstat(resolv)
	if err != nil || !fi.Mode().IsRegular() {
		fmt.Println("vmb-agent: the target has no regular /etc/resolv.conf: names will not resolve (the DNS forwarder is 10.0.2.3)")
		return undo, nil
	}
	ours := "/run/resolv.conf"
	if err := os.WriteFile(ours, []byte("nameserver 10.0.2.3\n"), 0o644); err != nil {
		return undo, err
	}
	if err := unix.Mount(ours, resolv, "", unix.MS_BIND, ""); err != nil {
		return undo, fmt.Errorf("resolv.conf: %w", err)
	}
	return func() { unix.Unmount(resolv, unix.MNT_DETACH) }, nil
}

// netUp is set once the NIC is configured: the jobs of a chain after the first
// find it so.
var netUp bool

// netUpOnce brings up the VM's NIC with the addresses of qemu's user network.
func netUpOnce() error {
	if err := loadModules("net"); err != nil {
		return err
	}
	for i := 0; ; i++ {
		if _, err := os.Stat("/sys/class/net/eth0"); err == nil {
			break
		}
		if i == 200 {
			return fmt.Errorf("no eth0: the NIC did not appear")
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "eth0", "up"},
		{"addr", "add", "10.0.2.15/24", "dev", "eth0"},
		{"route", "add", "default", "via", "10.0.2.2"},
	} {
		if err := sh("ip", args...); err != nil {
			return err
		}
	}
	return nil
}

// syncfs writes a mounted filesystem's changes (a btrfs commits its transaction).
func syncfs(dir string) {
	if fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
		unix.Syncfs(fd)
		unix.Close(fd)
	}
}

// diskEnv names the device of each disk for a run's command, as a boot loader's
// installer needs it: VMB_DISK_<NAME> (the name upper-cased, '-' as '_') for every
// disk, and VMB_ROOT_DISK for the disk the root is on.
func (a *agent) diskEnv(rootDisk string) []string {
	var env []string
	for _, name := range a.job.Disks {
		dev, _ := a.disk(name)
		env = append(env, "VMB_DISK_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_"))+"="+dev)
		if name == rootDisk {
			env = append(env, "VMB_ROOT_DISK="+dev)
		}
	}
	return env
}

// diskLinks makes the links udev keeps under /dev/disk (by-uuid, by-partuuid,
// by-label) for every block device blkid knows. /dev is the appliance's devtmpfs,
// which the target's /dev is a mount of.
func diskLinks() error {
	out, err := exec.Command("blkid", "-c", "/dev/null", "-o", "export").Output()
	if err != nil && len(out) == 0 {
		return nil // no device has anything blkid knows
	}
	link := func(dir, name, dev string) error {
		if name == "" {
			return nil
		}
		d := filepath.Join("/dev/disk", dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
		p := filepath.Join(d, strings.ReplaceAll(name, "/", "\\x2f"))
		os.Remove(p)
		return os.Symlink("../../"+strings.TrimPrefix(dev, "/dev/"), p)
	}
	for _, block := range strings.Split(string(out), "\n\n") {
		kv := map[string]string{}
		for _, l := range strings.Split(block, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				kv[k] = v
			}
		}
		dev := kv["DEVNAME"]
		if dev == "" {
			continue
		}
		for _, e := range []struct{ dir, name string }{{"by-uuid", kv["UUID"]}, {"by-partuuid", kv["PARTUUID"]}, {"by-label", kv["LABEL"]}} {
			if err := link(e.dir, e.name, dev); err != nil {
				return err
			}
		}
	}
	return nil
}

// resolveIn returns where path p of the filesystem mounted at root is, with every
// symbolic link on the way followed as the target would follow it with root as /:
// an absolute link is under root, and ".." stops at root.
func resolveIn(root, p string) (string, error) {
	rest := strings.Split(p, "/")
	cur := "/"
	for hops := 0; len(rest) > 0; {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		fi, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("%s: %w", p, err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}
