package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
)

// Process is a running VM: its serial console and, with NetOutside, its passt.
type Process struct {
	cmd    *exec.Cmd
	passt  *exec.Cmd
	stderr bytes.Buffer
	// Console is what the guest writes to its serial console; read it to the end
	// before Wait.
	Console io.Reader
	// Stdin writes to the serial console when the VM was started with
	// StartInteractive; nil otherwise.
	Stdin io.WriteCloser

	stopped  chan struct{}
	stopOnce sync.Once
}

// ErrNoPasst is returned by Start when a VM with NetOutside cannot have its
// network because passt is not installed.
var ErrNoPasst = errors.New(`passt is not installed: a VM whose network must not reach the host needs it (apt-get install passt)`)

// Start starts the VM with stdin from /dev/null. It is killed, with its passt,
// when ctx is done.
func (vm *VM) Start(ctx context.Context) (*Process, error) { return vm.start(ctx, false) }

// StartInteractive starts the VM with its console's input on Process.Stdin.
func (vm *VM) StartInteractive(ctx context.Context) (*Process, error) { return vm.start(ctx, true) }

func (vm *VM) start(ctx context.Context, interactive bool) (*Process, error) {
	p := &Process{cmd: exec.Command(vm.Qemu, vm.Args()...), stopped: make(chan struct{})}
	// A process group of its own: a signal from the user's terminal reaches vmb,
	// which decides, and not qemu. Pdeathsig: qemu does not outlive vmb.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p.cmd.Stderr = &p.stderr
	var err error
	if interactive {
		if p.Stdin, err = p.cmd.StdinPipe(); err != nil {
			return nil, err
		}
	}
	if p.Console, err = p.cmd.StdoutPipe(); err != nil {
		return nil, err
	}
	if args := vm.PasstArgs(); args != nil {
		if err := p.startPasst(vm.passt(), args); err != nil {
			return nil, err
		}
	}
	if err := p.cmd.Start(); err != nil {
		p.stopPasst()
		return nil, fmt.Errorf("start qemu: %w", err)
	}
	for _, f := range p.cmd.ExtraFiles {
		f.Close()
	}
	go func() {
		select {
		case <-ctx.Done():
			syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			p.stopPasst()
		case <-p.stopped:
		}
	}()
	return p, nil
}

// startPasst starts passt on one end of a socket pair and gives qemu the other.
func (p *Process) startPasst(bin string, args []string) error {
	path, err := exec.LookPath(bin)
	if err != nil {
		return ErrNoPasst
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "passt"), os.NewFile(uintptr(fds[1]), "qemu")
	defer ours.Close()
	p.passt = exec.Command(path, args...)
	p.passt.ExtraFiles = []*os.File{ours}
	p.passt.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	var perr bytes.Buffer
	p.passt.Stdout, p.passt.Stderr = &perr, &perr
	if err := p.passt.Start(); err != nil {
		theirs.Close()
		return fmt.Errorf("start passt: %w", err)
	}
	p.cmd.ExtraFiles = []*os.File{theirs}
	return nil
}

func (p *Process) stopPasst() {
	if p.passt != nil && p.passt.Process != nil {
		syscall.Kill(-p.passt.Process.Pid, syscall.SIGKILL)
	}
}

// Wait waits for qemu to exit and stops its passt. The error is qemu's, with what
// qemu wrote to stderr.
func (p *Process) Wait() error {
	err := p.cmd.Wait()
	p.stopOnce.Do(func() { close(p.stopped) })
	p.stopPasst()
	if p.passt != nil {
		p.passt.Wait()
	}
	if err != nil {
		if msg := strings.TrimSpace(p.stderr.String()); msg != "" {
			return fmt.Errorf("qemu: %w: %s", err, msg)
		}
		return fmt.Errorf("qemu: %w", err)
	}
	return nil
}
