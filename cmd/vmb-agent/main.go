// Command vmb-agent runs inside the build VM as PID 1 of the appliance: it reads
// the job from the job disk, runs it, streams its log on the serial console and
// ends with one protocol line carrying the exit status (package vmexec/proto).
// Installed into a target image it is that image's first-run command interface.
package main

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/proto"
)

const (
	jobDisk    = "/dev/vda"
	payloadDir = "/run/payload" // see openPayload
	outputDir  = "/run/output"
	targetDir  = "/mnt/target"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "vmb-agent: runs as init (PID 1) of the vmb build VM")
		os.Exit(2)
	}
	nonce := "unknown"
	said := false // the current job's result line is out
	defer func() {
		if r := recover(); r != nil {
			fmt.Printf("%s%s agent panic: %v\n", proto.ErrorPrefix, nonce, r)
		}
		unix.Sync()
		if !said {
			fmt.Println(proto.ResultLine(nonce, 255))
		}
		unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	}()
	if err := setup(); err != nil {
		fmt.Printf("%sunknown setup: %v\n", proto.ErrorPrefix, err)
		return
	}
	jobs, err := openJobs(jobDisk)
	if err != nil {
		fmt.Printf("%sunknown job disk: %v\n", proto.ErrorPrefix, err)
		return
	}
	for i := 0; ; i++ {
		var between error
		if i > 0 {
			between = betweenJobs()
		}
		job, err := jobs.next()
		if err != nil {
			fmt.Printf("%s%s job disk: %v\n", proto.ErrorPrefix, nonce, err)
			return
		}
		nonce, said = job.Nonce, false
		status := 1
		if between != nil {
			fmt.Printf("vmb-agent: after the job before: %v\n", between)
		} else {
			status = runJob(job, i)
		}
		unix.Sync()
		fmt.Println(proto.ResultLine(nonce, status))
		said = true
		if status != 0 || jobs.pending == nil && !job.Hold || !waitNext(nonce) || jobs.pending == nil {
			return
		}
	}
}

// runJob runs one job, the i-th of the job disk, and returns its exit status.
func runJob(job *proto.Job, i int) int {
	ts := unix.Timespec{Sec: job.Epoch}
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		fmt.Printf("%s%s set the clock: %v\n", proto.ErrorPrefix, job.Nonce, err)
		return 255
	}
	os.Setenv("SOURCE_DATE_EPOCH", fmt.Sprint(job.Epoch))
	fmt.Printf("%s%s\n", proto.ReadyPrefix, job.Nonce)
	if i == 0 {
		var up unix.Timespec
		unix.ClockGettime(unix.CLOCK_BOOTTIME, &up)
		fmt.Printf("vmb-agent: ready %.2fs after the kernel started\n", float64(up.Nano())/1e9)
	} else {
		fmt.Printf("vmb-agent: job %d of this VM\n", i+1)
	}
	if !keepsFSTypes[job.Kind] || job.Shell {
		clear(fsTypes)
		defer clear(fsTypes)
	}
	if job.Shell {
		loadModules("all") // the user may mount anything
		return shell(job)
	}
	a := &agent{job: job}
	release := holdClock(job.Epoch)
	err := a.run()
	release()
	if err != nil {
		fmt.Printf("vmb-agent: %s: %v\n", job.Kind, err)
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return ee.ExitCode()
		}
		return 1
	}
	if job.Output {
		if err := writeOutput(a.outputDisk()); err != nil {
			fmt.Printf("vmb-agent: write outputs: %v\n", err)
			return 1
		}
	}
	return 0
}

// waitNext waits for the host's line that lets the job after the one with nonce
// run (proto.NextLine); false if the console ends first.
func waitNext(nonce string) bool {
	// The host's line is not echoed back into the next job's log.
	if t, err := unix.IoctlGetTermios(0, unix.TCGETS); err == nil {
		t.Lflag &^= unix.ECHO | unix.ECHONL
		unix.IoctlSetTermios(0, unix.TCSETS, t)
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == proto.NextLine(nonce) {
			return true
		}
	}
	return false
}

// betweenJobs leaves the VM as a fresh boot would for the next job of a chain:
// no process but the agent (a daemon a run's command left behind), an empty /tmp,
// output directory and mount directory (a UFS filesystem is read into it), and no
// /dev/disk links of filesystems that are gone. Nothing may still be mounted
// under the mount directory: the job before unmounted all it mounted.
func betweenJobs() error {
	unix.Kill(-1, unix.SIGKILL) // every process but PID 1
	for {
		if _, err := unix.Wait4(-1, nil, unix.WNOHANG, nil); err != nil {
			break
		}
		time.Sleep(time.Millisecond)
	}
	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], targetDir+"/") {
			return fmt.Errorf("%s is still mounted", f[1])
		}
	}
	for _, dir := range []string{"/tmp", outputDir, targetDir, "/dev/disk"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// setup mounts the kernel filesystems and loads the appliance's modules.
func setup() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}, {"tmpfs", "/run", "tmpfs"}, {"tmpfs", "/tmp", "tmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.dst, err)
		}
	}
	os.Setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
	os.Setenv("HOME", "/root")
	os.Setenv("LANG", "C")
	os.Setenv("TZ", "UTC")
	if err := loadModules("boot"); err != nil {
		return err
	}
	// Wait for the disks the modules just made to appear.
	for i := 0; i < 500; i++ {
		if _, err := os.Stat(jobDisk); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("no /dev/vda: the job disk did not appear")
}

// moduleGroups are the modules of /etc/vmb/modules, by group, dependencies first.
var moduleGroups map[string][]string

// loadModules loads the kernel modules of group (the appliance's "boot", or a
// filesystem's), once; group "all" loads every group.
func loadModules(group string) error {
	if moduleGroups == nil {
		list, err := os.ReadFile("/etc/vmb/modules")
		if err != nil {
			return err
		}
		moduleGroups = map[string][]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(list)), "\n") {
			f := strings.Fields(line)
			if len(f) > 0 {
				moduleGroups[f[0]] = f[1:]
			}
		}
	}
	groups := []string{group}
	if group == "all" {
		groups = slices.Sorted(maps.Keys(moduleGroups))
	}
	for _, g := range groups {
		mods, ok := moduleGroups[g]
		if !ok {
			continue // built into the kernel, or not in this appliance: mount will say
		}
		for _, m := range mods {
			f, err := os.Open(m)
			if err != nil {
				return err
			}
			err = unix.FinitModule(int(f.Fd()), "", 0)
			f.Close()
			// ENODEV: hardware this machine lacks (crc32c-intel without SSE4.2); a
			// filesystem that needed the module fails to mount and says so.
			if err != nil && !errors.Is(err, unix.EEXIST) {
				fmt.Printf("vmb-agent: module %s: %v\n", filepath.Base(m), err)
			}
		}
		delete(moduleGroups, g)
	}
	return nil
}

// writeOutput writes the files under outputDir as a tar stream onto dev.
func writeOutput(dev string) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = filepath.Walk(outputDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || p == outputDir {
			return err
		}
		rel, _ := filepath.Rel(outputDir, p)
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			link, _ = os.Readlink(p)
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = rel
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			r, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, r)
			r.Close()
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// disk returns the device of the target disk called name.
func (a *agent) disk(name string) (string, error) {
	for i, d := range a.job.Disks {
		if d == name {
			return fmt.Sprintf("/dev/vd%c", 'b'+i), nil
		}
	}
	return "", fmt.Errorf("disk %q is not attached", name)
}

func (a *agent) outputDisk() string { return fmt.Sprintf("/dev/vd%c", 'b'+len(a.job.Disks)) }

// volume returns the device of a place's disk or partition.
func (a *agent) volume(p graph.Place) (string, error) {
	dev, err := a.disk(p.Disk)
	if err != nil || p.Partition == 0 {
		return dev, err
	}
	part := fmt.Sprintf("%s%d", dev, p.Partition)
	// The kernel may take a moment to show partitions of a disk it just scanned.
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(part); err == nil {
			return part, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return "", fmt.Errorf("no partition %d on disk %q", p.Partition, p.Disk)
}

// sh runs a command with its output on the console.
func sh(name string, args ...string) error {
	return shIn(nil, name, args...)
}

// runEnv runs a command with env added to the agent's and returns what it printed.
func runEnv(env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

func shIn(stdin io.Reader, name string, args ...string) error {
	fmt.Printf("+ %s %s\n", name, strings.Join(args, " "))
	cmd := exec.Command(name, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, os.Stdout, os.Stdout
	return cmd.Run()
}

type agent struct {
	job     *proto.Job
	mounted []mountpoint
	// readOnly: the job only reads the target (copy-out, tar-out, diff): it mounts
	// filesystems read-only, and a UFS filesystem it read into memory is not built
	// again.
	readOnly bool
}
