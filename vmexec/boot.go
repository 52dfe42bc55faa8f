package vmexec

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/proto"
	"vmb.dev/vmb/vmexec/qemu"
)

// A boot-mode run boots the target from its own disk, with its own firmware
// path, bootloader, kernel and init, and runs the command as the booted system:
// vm-builder's "run as the target-vm". Its interface is the seed's three
// requirements: the target reads a command from a second disk, runs it, and
// reports the exit status. vmb installs that interface for the boot, and keeps
// of the boot only what it changed in files, in three VMs:
//
//  1. the appliance, in a chroot of the target's root on a copy of the disk (the
//     booted disk): check that systemd boots it, and install a oneshot unit
//     (vmb-boot.service) that reads the command disk, runs its job.sh, writes the
//     status to the disk's result sector and powers off;
//  2. the target, booted by SeaBIOS from the booted disk, with the command disk
//     (serial vmb-run, /dev/disk/by-id/virtio-vmb-run) whose result sector says
//     "failed" until the unit overwrites it: a target that dies, never boots, or
//     never runs the unit has failed;
//  3. the appliance again, with the disk as it was before the boot and the
//     booted disk: the agent carries the boot's changes over to the first, the
//     root filesystem file by file (but for bootVolatile and what vmb made for
//     the boot) and the rest of the disk block by block, and normalizes times,
//     inodes and free blocks as after any job. What the boot did not change keeps
//     its bytes; where the boot's services put their files, in which order, and
//     what the target's journal holds, never reaches the result.

// bootUnit and bootDir are what vmb installs in the target for a boot-mode run.
const (
	bootUnit = "vmb-boot.service"
	bootDir  = "/var/lib/vmb-boot"
	// bootSerial names the command disk in the target.
	bootSerial = "vmb-run"
	// bootDiskSize is the command disk's size; its last sector is the result.
	bootDiskSize = 1 << 20
)

// bootVolatile are the files a boot of a systemd machine writes by itself
// (filepath.Match patterns): a boot-mode run does not carry them over, so that it
// leaves the command's changes, not the boot's. BUILD.md lists them.
var bootVolatile = []string{
	"/etc/machine-id", "/var/lib/dbus/machine-id", "/etc/.updated", "/var/.updated",
	"/etc/ld.so.cache", "/var/cache/ldconfig/aux-cache",
	"/var/lib/systemd/random-seed", "/var/lib/systemd/credential.secret",
	"/var/lib/systemd/timers", "/var/lib/systemd/timesync", "/var/lib/systemd/coredump",
	"/var/lib/dhcp/*", "/var/lib/logrotate/status",
	"/var/log/journal", "/var/log/wtmp", "/var/log/btmp", "/var/log/lastlog", "/var/log/faillog",
	"/etc/ssh/ssh_host_*",
	"/tmp/*", "/var/tmp/*",
}

// bootedDisk is the disk a boot-mode run's target booted from, for the job that
// carries its changes over.
type bootedDisk struct {
	path string
	proto.Booted
}

// bootRun runs the boot-mode run r of node n on the disks at paths (snapshots
// disks).
func (x *Executor) bootRun(ctx context.Context, work string, n *graph.Node, r *graph.Run, names []string, paths map[string]string, disks map[string]cas.Digest, log io.Writer) error {
	d, ok := disks[r.Root.Disk]
	if !ok {
		return fmt.Errorf("boot mode: no disk %q", r.Root.Disk)
	}
	if err := checkMBR(paths[r.Root.Disk], r.Root.Disk); err != nil {
		return err
	}
	booted := filepath.Join(work, "booted-"+r.Root.Disk+".raw")
	if err := x.Store.Materialize(ctx, d, booted); err != nil {
		return err
	}
	prepare := &graph.Node{Key: n.Key, Job: &graph.Run{Root: r.Root, Mode: "chroot", Workdir: "/",
		Command: graph.Command{"/bin/sh", "-c", bootPrepareScript(r)}}}
	fmt.Fprintf(log, "vmb: installing %s in a copy of %s for the boot\n", bootUnit, r.Root.Disk)
	if _, _, err := x.applianceJob(ctx, work, prepare, []string{r.Root.Disk}, map[string]string{r.Root.Disk: booted}, nil, log); err != nil {
		return fmt.Errorf("boot mode: preparing the target: %w", err)
	}

	cmdDisk := filepath.Join(work, "command.tar")
	if err := writeCommandDisk(cmdDisk, r); err != nil {
		return err
	}
	vm := &qemu.VM{Qemu: x.qemu(), KVM: x.KVM, Memory: x.memory(), CPUs: x.CPUs, RTCBase: x.RTCBase,
		Disks: []qemu.Drive{{Path: booted}, {Path: cmdDisk, Serial: bootSerial}}}
	switch r.Network {
	case graph.NetOutside:
		vm.Network, vm.DHCP = qemu.NetOutside, true
	case graph.NetHost:
		vm.Network = qemu.NetHost
	}
	fmt.Fprintf(log, "vmb: booting %s\n", r.Root.Disk)
	if err := x.bootTarget(ctx, vm, x.timeout(n), log); err != nil {
		return err
	}
	status, err := readResult(cmdDisk)
	if err != nil {
		return err
	}
	if status != 0 {
		return &JobError{Status: status, Err: fmt.Errorf("exit status %d", status)}
	}

	fmt.Fprintf(log, "vmb: carrying the boot's changes over\n")
	b := &bootedDisk{path: booted, Booted: proto.Booted{Exclude: bootVolatile}}
	if _, _, err := x.applianceJob(ctx, work, n, names, paths, b, log); err != nil {
		return fmt.Errorf("boot mode: carrying the boot's changes over: %w", err)
	}
	return nil
}

// checkMBR fails unless the disk at p has a boot loader where SeaBIOS looks for
// one: code in its first sector, and the boot signature. Without it the firmware
// finds nothing to boot, or jumps into zeros and hangs until the step times out.
func checkMBR(p, disk string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := io.ReadFull(f, b); err != nil {
		return err
	}
	if b[510] != 0x55 || b[511] != 0xaa || bytes.Count(b[:440], []byte{0}) == 440 {
		return &JobError{Status: -1, Err: fmt.Errorf("disk %q has no BIOS boot loader (its first sector holds no boot code): a boot-mode run boots the disk as a machine would, with SeaBIOS", disk)}
	}
	return nil
}

// writeCommandDisk writes the command disk of run r: a tar holding job.sh, and,
// in its last sector, the result, "failed" until the target writes "exit N".
func writeCommandDisk(path string, r *graph.Run) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	script := []byte(jobScript(r))
	if err := tw.WriteHeader(&tar.Header{Name: "job.sh", Mode: 0o755, Size: int64(len(script)),
		ModTime: time.Unix(proto.Epoch, 0), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	tw.Write(script)
	if err := tw.Close(); err != nil {
		return err
	}
	if fi, _ := f.Stat(); fi.Size() > bootDiskSize-512 {
		return fmt.Errorf("boot mode: the command and its environment take %d bytes, more than %d", fi.Size(), bootDiskSize-512)
	}
	if err := f.Truncate(bootDiskSize); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte("failed\n"), bootDiskSize-512); err != nil {
		return err
	}
	return f.Close()
}

// readResult reads the exit status the target wrote to the command disk.
func readResult(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b := make([]byte, 512)
	if _, err := f.ReadAt(b, bootDiskSize-512); err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	if s, ok := strings.CutPrefix(line, "exit "); ok {
		if n, err := strconv.Atoi(s); err == nil {
			return n, nil
		}
	}
	return 0, &JobError{Status: -1, Err: fmt.Errorf("the target powered off without running the command (result %q): see its console above; boot mode needs a target that boots by itself with systemd", line)}
}

// jobScript is the script the target runs: the run's command, in its workdir,
// with the environment a chroot-mode run has (the boot disk is /dev/vda).
func jobScript(r *graph.Run) string {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
		fmt.Sprintf("SOURCE_DATE_EPOCH=%d", proto.Epoch), "PYTHONHASHSEED=0",
		"VMB_DISK_" + strings.ToUpper(strings.ReplaceAll(r.Root.Disk, "-", "_")) + "=/dev/vda", "VMB_ROOT_DISK=/dev/vda"}
	for _, k := range slices.Sorted(maps.Keys(r.Env)) {
		env = append(env, k+"="+r.Env[k])
	}
	var b strings.Builder
	fmt.Fprintf(&b, "cd %s || exit 1\nexec env -i", shq(r.Workdir))
	for _, s := range env {
		b.WriteString(" " + shq(s))
	}
	for _, s := range r.Command {
		b.WriteString(" " + shq(s))
	}
	b.WriteString("\n")
	return b.String()
}

// shq quotes s for the shell.
func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// bootPrepareScript checks that the target boots with systemd and installs the
// unit that runs the command disk's job, listing what it made in proto.MadeList.
func bootPrepareScript(r *graph.Run) string {
	after := "multi-user.target"
	wants := ""
	if r.Network != graph.NoNetwork {
		after += " network-online.target"
		wants = "Wants=network-online.target\n"
	}
	return fmt.Sprintf(`set -e
if [ ! -x /lib/systemd/systemd ] && [ ! -x /usr/lib/systemd/systemd ] || [ ! -d /etc/systemd/system ]; then
	echo "vmb: boot mode needs a target that boots with systemd; this root has no /lib/systemd/systemd or no /etc/systemd/system" >&2
	exit 3
fi
for t in tar dd sync; do
	command -v $t > /dev/null || { echo "vmb: boot mode needs $t in the target" >&2; exit 3; }
done
d=%[1]s
rm -rf $d
mkdir -p $d
cat > $d/run <<'EOF'
#!/bin/sh
dev=/dev/disk/by-id/virtio-%[2]s
i=0
while [ ! -b $dev ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
mkdir -p /run/vmb-boot
tar -xf $dev -C /run/vmb-boot || exit 1
echo "vmb: running the command"
/bin/sh /run/vmb-boot/job.sh < /dev/null > /dev/console 2>&1
status=$?
echo "vmb: the command exited with status $status"
printf 'exit %%d\n' $status | dd of=$dev bs=512 seek=%[3]d conv=notrunc,fsync status=none
sync
EOF
u=/etc/systemd/system/%[4]s
cat > $u <<'EOF'
[Unit]
Description=vmb: the build's boot-mode run
After=%[5]s
%[6]sSuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/bin/sh %[1]s/run
StandardOutput=journal+console
StandardError=journal+console
TimeoutStartSec=infinity
EOF
w=/etc/systemd/system/multi-user.target.wants
[ -d $w ] || { mkdir -p $w; echo $w >> %[7]s; }
ln -sf ../%[4]s $w/%[4]s
printf '%%s\n' $u $w/%[4]s >> %[7]s
`, bootDir, bootSerial, bootDiskSize/512-1, bootUnit, after, wants, proto.MadeList)
}
