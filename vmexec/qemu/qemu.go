// Package qemu runs one qemu process: the command line as data (VM.Args, tested
// without qemu and printed ready to paste), and the lifecycle of a running VM
// (Start, its console, Wait, killed when the context ends), together with the
// network helper it may need. Build jobs and vmb shell both boot through it.
// Its Monitor speaks QMP to a running VM, and tells which ranges of a disk the
// guest wrote (dirty bitmaps read over NBD: nbd.go).
//
// # Network
//
// A VM has no network unless asked. NetOutside gives it one that reaches the
// outside world and not the host: qemu's user-mode network maps its gateway
// (10.0.2.2) to the host's loopback, so any networked build step could talk to the
// databases and admin ports a developer keeps on 127.0.0.1. Instead the VM's NIC is
// connected to passt (Debian's passt package) started with --no-map-gw: outbound
// connections leave from the host's own sockets, the gateway address leads
// nowhere, and DNS queries to 10.0.2.3 are forwarded to the host's resolver. The
// guest sees the same addresses as with qemu's user network (10.0.2.15/24,
// gateway 10.0.2.2, DNS 10.0.2.3). NetHost is the explicit opt-in to qemu's
// user network, host loopback included.
package qemu

import (
	"fmt"
	"os"
	"strings"
)

// Network says what a VM's network reaches.
type Network int

const (
	// NoNetwork: no NIC at all.
	NoNetwork Network = iota
	// NetOutside: the outside world through passt; the host's loopback is not
	// reachable.
	NetOutside
	// NetHost: qemu's user-mode network: the outside world and the host's
	// loopback, as 10.0.2.2.
	NetHost
)

// The guest's view of its network, the same whichever backend serves it.
const (
	GuestAddr = "10.0.2.15"
	Gateway   = "10.0.2.2"
	DNS       = "10.0.2.3"
)

// VM is one boot of a kernel, as data.
type VM struct {
	Qemu   string // qemu-system-x86_64
	KVM    bool
	Memory int // MiB
	// CPUs is the number of virtual CPUs; 0 means 1.
	CPUs int
	// RTCBase, if set, is where the guest's clock starts (qemu -rtc base=), e.g.
	// "2031-06-01T12:00:00"; the host's time otherwise.
	RTCBase string
	// Kernel, Initrd and Cmdline are booted directly; with no Kernel the
	// firmware (SeaBIOS) boots the first disk, as a machine does.
	Kernel  string
	Initrd  string
	Cmdline string
	// Disks are attached in order as /dev/vda, /dev/vdb, ...
	Disks   []Drive
	Network Network
	// DHCP makes NetOutside's passt answer DHCP, for a guest that configures its
	// network that way (a booted target); the appliance sets its address itself.
	DHCP bool
	// Passt is the passt binary NetOutside runs; default "passt".
	Passt string
	// Monitor, if set, is the path of a QMP socket qemu listens on (DialMonitor).
	Monitor string
	// Paused starts the VM with its CPUs stopped, for a monitor command "cont".
	Paused bool
}

// Drive is a raw disk image attached to the VM.
type Drive struct {
	Path     string
	ReadOnly bool
	// Serial is the disk's serial number, which the guest's udev names it by
	// (/dev/disk/by-id/virtio-SERIAL).
	Serial string
}

// netFD is the descriptor, in qemu and in passt, of the two ends of the socket pair
// that joins them (the first of exec.Cmd's ExtraFiles).
const netFD = 3

// Args returns qemu's arguments: no default devices, no network unless asked, no
// option ROMs, the serial console on stdio, power-off ends qemu.
func (vm *VM) Args() []string {
	args := []string{"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-machine", "q35", "-m", fmt.Sprint(vm.Memory), "-smp", fmt.Sprint(max(vm.CPUs, 1)),
		"-serial", "stdio", "-monitor", "none"}
	if vm.Monitor != "" {
		args = append(args, "-qmp", "unix:"+strings.ReplaceAll(vm.Monitor, ",", ",,")+",server=on,wait=off")
	}
	if vm.Paused {
		args = append(args, "-S")
	}
	if vm.RTCBase != "" {
		args = append(args, "-rtc", "base="+vm.RTCBase)
	}
	switch vm.Network {
	case NetOutside:
		args = append(args, "-netdev", fmt.Sprintf("stream,id=net0,server=off,addr.type=fd,addr.str=%d", netFD),
			"-device", "virtio-net-pci,netdev=net0,romfile=")
	case NetHost:
		args = append(args, "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=")
	default:
		args = append(args, "-net", "none")
	}
	if vm.Kernel != "" {
		args = append(args, "-kernel", vm.Kernel, "-initrd", vm.Initrd, "-append", vm.Cmdline)
	}
	if vm.KVM {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg", "-cpu", "max")
	}
	for i, d := range vm.Disks {
		// A drive and its device apart: a serial number is the device's.
		opt := "format=raw,if=none,cache=unsafe,discard=unmap"
		if d.ReadOnly {
			opt = "format=raw,if=none,readonly=on"
		}
		dev := fmt.Sprintf("virtio-blk-pci,drive=disk%d", i)
		if d.Serial != "" {
			dev += ",serial=" + d.Serial
		}
		args = append(args, "-drive", "file="+strings.ReplaceAll(d.Path, ",", ",,")+fmt.Sprintf(",id=disk%d,node-name=%s,", i, nodeName(i))+opt, "-device", dev)
	}
	return args
}

// PasstArgs returns passt's arguments for NetOutside, nil otherwise: in the
// foreground, quiet, on the socket at netFD, the gateway not mapped to the host,
// DNS to 10.0.2.3 forwarded, the guest's addresses as qemu's user network gives them.
func (vm *VM) PasstArgs() []string {
	if vm.Network != NetOutside {
		return nil
	}
	args := []string{"--foreground", "--quiet", "--fd", fmt.Sprint(netFD), "--no-map-gw",
		"--address", GuestAddr, "--netmask", "24", "--gateway", Gateway, "--dns-forward", DNS}
	if !vm.DHCP {
		args = append(args, "--no-dhcp")
	}
	return append(args, "--no-ndp", "--no-dhcpv6", "--no-ra", "--ipv4-only")
}

func (vm *VM) passt() string {
	if vm.Passt != "" {
		return vm.Passt
	}
	return "passt"
}

// String renders the command lines for a shell: qemu's, preceded by passt's when
// the VM has one (both then hold one end of a socket pair as descriptor 3).
func (vm *VM) String() string {
	s := shellQuote(append([]string{vm.Qemu}, vm.Args()...))
	if p := vm.PasstArgs(); p != nil {
		s = shellQuote(append([]string{vm.passt()}, p...)) + "\n" + s
	}
	return s
}

func shellQuote(argv []string) string {
	parts := make([]string, len(argv))
	for i, a := range argv {
		if strings.ContainsAny(a, " \"'$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts[i] = a
	}
	return strings.Join(parts, " ")
}

// KVMUsable reports whether /dev/kvm can be opened for reading and writing.
func KVMUsable() bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
