package qemu

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVMArgs(t *testing.T) {
	vm := &VM{Qemu: "qemu-system-x86_64", Memory: 512, Kernel: "/k", Initrd: "/i", Cmdline: "console=ttyS0 quiet",
		Disks: []Drive{{Path: "/job", ReadOnly: true}, {Path: "/a,b.img", Serial: "vmb-run"}}}
	want := []string{"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-machine", "q35", "-m", "512", "-smp", "1",
		"-serial", "stdio", "-monitor", "none", "-net", "none", "-kernel", "/k", "-initrd", "/i", "-append", "console=ttyS0 quiet",
		"-accel", "tcg", "-cpu", "max",
		"-drive", "file=/job,id=disk0,node-name=vmb-disk0,format=raw,if=none,readonly=on", "-device", "virtio-blk-pci,drive=disk0",
		"-drive", "file=/a,,b.img,id=disk1,node-name=vmb-disk1,format=raw,if=none,cache=unsafe,discard=unmap", "-device", "virtio-blk-pci,drive=disk1,serial=vmb-run"}
	if diff := cmp.Diff(want, vm.Args()); diff != "" {
		t.Errorf("args (-want +got):\n%s", diff)
	}
	vm.Network = NetHost
	if s := vm.String(); !strings.Contains(s, "-netdev user,id=net0 -device virtio-net-pci,netdev=net0,romfile= -kernel") || strings.Contains(s, "-net none") || vm.PasstArgs() != nil {
		t.Errorf("with the host's network: %s", s)
	}
	vm.Network = NetOutside
	s := vm.String()
	if !strings.Contains(s, "-netdev stream,id=net0,server=off,addr.type=fd,addr.str=3 -device virtio-net-pci,netdev=net0,romfile= -kernel") || strings.Contains(s, "user,") {
		t.Errorf("with the outside network: %s", s)
	}
	passt := strings.Join(vm.PasstArgs(), " ")
	if !slices.Contains(vm.PasstArgs(), "--no-dhcp") {
		t.Errorf("passt without DHCP: %s", passt)
	}
	for _, want := range []string{"--fd 3", "--no-map-gw", "--address 10.0.2.15", "--gateway 10.0.2.2", "--dns-forward 10.0.2.3"} {
		if !strings.Contains(passt, want) {
			t.Errorf("passt %s: no %q", passt, want)
		}
	}
	if !strings.HasPrefix(s, "passt "+passt+"\n") {
		t.Errorf("String() does not start with passt's command line: %s", s)
	}
	vm.Network = NoNetwork
	vm.CPUs, vm.RTCBase = 2, "2031-06-01T12:00:00"
	if s := vm.String(); !strings.Contains(s, "-smp 2 ") || !strings.Contains(s, "-rtc base=2031-06-01T12:00:00") {
		t.Errorf("with 2 CPUs and a clock elsewhere: %s", s)
	}
	vm.Network, vm.DHCP = NetOutside, true
	if p := vm.PasstArgs(); slices.Contains(p, "--no-dhcp") {
		t.Errorf("passt with DHCP: %s", p)
	}
	vm.Network, vm.DHCP = NoNetwork, false
	// No kernel: the firmware boots the first disk.
	vm.Kernel = ""
	if s := vm.String(); strings.Contains(s, "-kernel") || strings.Contains(s, "-append") {
		t.Errorf("a VM without a kernel: %s", s)
	}
	vm.Kernel = "/k"
	vm.CPUs, vm.RTCBase = 0, ""
	vm.KVM = true
	if s := vm.String(); !strings.Contains(s, "-accel kvm -cpu host") || !strings.Contains(s, "'console=ttyS0 quiet'") {
		t.Errorf("String() = %s", s)
	}
}
