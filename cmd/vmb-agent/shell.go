package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/proto"
)

// shell is a debugging session (vmb shell): it mounts every filesystem it finds on
// the target disks under /mnt/target/<disk>_<partition> (/mnt/target/<disk> for a
// filesystem on a whole disk), prepares what the next step would use, and runs an
// interactive shell on the console, as its controlling terminal. Nothing is written
// back: the host throws the disks away.
func shell(job *proto.Job) int {
	a := &agent{job: job}
	fmt.Println("vmb shell: the target disks (nothing you change is kept):")
	for i, name := range job.Disks {
		dev := fmt.Sprintf("/dev/vd%c", 'b'+i)
		waitFor(dev)
		fmt.Printf("  %-12s %s\n", name, dev)
		for _, v := range volumes(name, dev) {
			fstype := fsType(v.dev)
			switch fstype {
			case "", "swap":
				fmt.Printf("  %-12s %-10s %s\n", v.place, v.dev, orNone(fstype))
				continue
			}
			dir, err := a.mount(v.place)
			if err != nil {
				fmt.Printf("  %-12s %-10s %-6s not mounted: %v\n", v.place, v.dev, fstype, err)
				continue
			}
			fmt.Printf("  %-12s %-10s %-6s %s\n", v.place, v.dev, fstype, dir)
		}
	}
	dir := targetDir
	if job.Kind != "" {
		dir = a.nextStep()
	}
	fmt.Println("Exit the shell (exit or Ctrl-D) to end the session.")
	status := interactive(job, dir)
	unix.Sync()
	return status
}

type volume struct {
	place graph.Place
	dev   string
}

// volumes returns the whole disk if it holds a filesystem (or nothing at all), else
// its partitions, in order.
func volumes(disk, dev string) []volume {
	whole := []volume{{graph.Place{Disk: disk}, dev}}
	if fsType(dev) != "" {
		return whole
	}
	base := filepath.Base(dev)
	parts, _ := filepath.Glob(filepath.Join("/sys/block", base, base+"*"))
	var out []volume
	for _, p := range parts {
		n, err := strconv.Atoi(strings.TrimPrefix(filepath.Base(p), base))
		if err != nil {
			continue
		}
		d := fmt.Sprintf("%s%d", dev, n)
		waitFor(d)
		out = append(out, volume{graph.Place{Disk: disk, Partition: n}, d})
	}
	if len(out) == 0 {
		return whole
	}
	sort.Slice(out, func(i, j int) bool { return out[i].place.Partition < out[j].place.Partition })
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(no filesystem)"
	}
	return s
}

// waitFor waits a little for a device the kernel is still adding.
func waitFor(dev string) {
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(dev); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// nextRun prepares a run step's root with /proc, /sys and /dev as the step would
// have them, and says how the step runs its command there.
func (a *agent) nextRun(j *graph.Run) string {
	root, err := a.mount(graph.Place{Disk: j.Root.Disk, Partition: j.Root.Partition, Path: "/"})
	if err != nil {
		fmt.Printf("  its root %s: %v\n", j.Root, err)
		return targetDir
	}
	for _, m := range []struct{ src, dst, fstype string }{{"proc", "proc", "proc"}, {"sysfs", "sys", "sysfs"}, {"devtmpfs", "dev", "devtmpfs"}} {
		p := filepath.Join(root, m.dst)
		os.MkdirAll(p, 0o755)
		if err := unix.Mount(m.src, p, m.fstype, 0, ""); err != nil {
			fmt.Printf("  mount %s in %s: %v\n", m.dst, root, err)
		}
	}
	cmdline := "cd " + strings.Join(quoteAll([]string{j.Workdir}), "") + " &&"
	for _, k := range sortedKeys(j.Env) {
		cmdline += " " + strings.Join(quoteAll([]string{k + "=" + j.Env[k]}), "")
	}
	cmdline += " " + strings.Join(quoteAll(j.Command), " ")
	fmt.Printf("  it runs, with /proc, /sys and /dev mounted as now:\n  chroot %s /bin/sh -c %s\n", root, quoteAll([]string{cmdline})[0])
	return root
}

// nextStep says what the step the session stands before would do, and where; a run
// step's root gets /proc, /sys and /dev as the step would have them. It returns the
// directory to start the shell in.
func (a *agent) nextStep() string {
	j := graph.NewJob(a.job.Kind)
	if j == nil || json.Unmarshal(a.job.Params, j) != nil {
		fmt.Printf("The next step is a %s job.\n", a.job.Kind)
		return targetDir
	}
	fmt.Printf("The next step: %s\n", j.Describe())
	if r, ok := j.(*graph.Run); ok && r.Mode != "boot" {
		return a.nextRun(r)
	}
	uses := j.Uses()
	places := append(uses.Writes, uses.Reads...)
	if len(places) == 0 {
		return targetDir
	}
	at := places[0]
	if at.Path == "" { // a volume: its root
		at.Path = "/"
	}
	p, err := a.mount(at)
	if err != nil {
		fmt.Printf("  %s: %v\n", at, err)
		return targetDir
	}
	fmt.Printf("  %s is %s\n", at, p)
	if fi, err := os.Stat(p); err == nil && fi.IsDir() {
		return p
	}
	return filepath.Dir(p)
}

func quoteAll(args []string) []string {
	out := make([]string, len(args))
	for i, s := range args {
		if s == "" || strings.ContainsAny(s, " \t\n'\"\\$`;&|<>()*?[]#~") {
			s = `'` + strings.ReplaceAll(s, `'`, `'\''`) + `'`
		}
		out[i] = s
	}
	return out
}

// interactive runs /bin/sh on the console's own tty (ttyS0, not /dev/console, which
// cannot be a controlling terminal) in a session of its own, so that Ctrl-C and job
// control work, with the user's terminal size and TERM.
func interactive(job *proto.Job, dir string) int {
	tty := "/dev/ttyS0"
	if b, err := os.ReadFile("/sys/class/tty/console/active"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			tty = "/dev/" + f[len(f)-1]
		}
	}
	f, err := os.OpenFile(tty, os.O_RDWR, 0)
	if err != nil {
		fmt.Printf("vmb shell: %v\n", err)
		return 1
	}
	defer f.Close()
	if job.Rows > 0 && job.Cols > 0 {
		unix.IoctlSetWinsize(int(f.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(job.Rows), Col: uint16(job.Cols)})
	}
	term := job.Term
	if term == "" {
		term = "vt100"
	}
	cmd := exec.Command("/bin/sh", "-i")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "TERM="+term, `PS1=(vmb shell) \w # `)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = f, f, f
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Run(); err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		fmt.Printf("vmb shell: %v\n", err)
		return 1
	}
	return 0
}
