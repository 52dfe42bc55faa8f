package vmexec

import (
	"fmt"
	"os"
	"strings"
)

// VM is one boot of the appliance, as data: Args renders the qemu command line, so
// that it can be tested without qemu and printed ready to paste into a shell.
type VM struct {
	Qemu    string // qemu-system-x86_64
	KVM     bool
	Memory  int // MiB
	Kernel  string
	Initrd  string
	Cmdline string
	// Disks are attached in order as /dev/vda, /dev/vdb, ...
	Disks []Drive
	// Network gives the VM a virtio NIC on qemu's user-mode network: outbound
	// connections only, the host at 10.0.2.2, a DNS forwarder at 10.0.2.3.
	Network bool
}

// Drive is a raw disk image attached to the VM.
type Drive struct {
	Path     string
	ReadOnly bool
}

// Args returns qemu's arguments: no default devices, no network unless asked, no
// option ROMs, the serial console on stdio, power-off ends qemu.
func (vm *VM) Args() []string {
	args := []string{"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-machine", "q35", "-m", fmt.Sprint(vm.Memory), "-smp", "1",
		"-serial", "stdio", "-monitor", "none"}
	if vm.Network {
		args = append(args, "-netdev", "user,id=net0", "-device", "virtio-net-pci,netdev=net0,romfile=")
	} else {
		args = append(args, "-net", "none")
	}
	args = append(args, "-kernel", vm.Kernel, "-initrd", vm.Initrd, "-append", vm.Cmdline)
	if vm.KVM {
		args = append(args, "-accel", "kvm", "-cpu", "host")
	} else {
		args = append(args, "-accel", "tcg", "-cpu", "max")
	}
	for _, d := range vm.Disks {
		opt := "format=raw,if=virtio,cache=unsafe,discard=unmap"
		if d.ReadOnly {
			opt = "format=raw,if=virtio,readonly=on"
		}
		args = append(args, "-drive", "file="+strings.ReplaceAll(d.Path, ",", ",,")+","+opt)
	}
	return args
}

// String renders the command line for a shell.
func (vm *VM) String() string {
	parts := []string{vm.Qemu}
	for _, a := range vm.Args() {
		if strings.ContainsAny(a, " \"'$\\") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
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
