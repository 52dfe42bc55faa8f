package vmexec

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/vmexec/proto"
	"vmb.dev/vmb/vmexec/qemu"
)

// ShellOptions configures a shell session.
type ShellOptions struct {
	// Step, if set, is the job the session stands before: the agent mounts what it
	// would use, prepares a run step's root as the step would, and says where.
	Step graph.Job
	// Rows, Cols and Term describe the user's terminal; zero values leave the
	// guest's defaults (80x24, vt100).
	Rows, Cols int
	Term       string
}

// Shell boots the build VM on disks (a snapshot by disk name) and connects an
// interactive shell on its serial console to stdin and stdout, for debugging a build.
// The agent mounts every filesystem of the disks under /mnt/target (see
// cmd/vmb-agent). The disks are materialized to temporary files that are removed
// when the VM stops: nothing of the session enters the store.
//
// stdin is forwarded, byte for byte, once the agent is up; the console's bytes go to
// stdout as they come, less the protocol lines. When stdin ends, Ctrl-D is sent
// until the shell ends. Shell returns when the VM has powered off (the shell
// exited), or kills the VM when ctx is done. A read of stdin that is blocked then is
// left behind: its goroutine ends at the read's return.
func (x *Executor) Shell(ctx context.Context, disks map[string]cas.Digest, stdin io.Reader, stdout io.Writer, opt ShellOptions) error {
	if err := x.bootFiles(); err != nil {
		return err
	}
	work, err := os.MkdirTemp(x.tmpDir(), "vmb-shell-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	names := make([]string, 0, len(disks))
	for name := range disks {
		names = append(names, name)
	}
	sort.Strings(names)
	nonce := make([]byte, 8)
	rand.Read(nonce)
	job := proto.Job{Nonce: hex.EncodeToString(nonce), Disks: names, Epoch: proto.Epoch, Shell: true,
		Rows: opt.Rows, Cols: opt.Cols, Term: opt.Term}
	if opt.Step != nil {
		job.Kind = opt.Step.Kind()
		if job.Params, err = json.Marshal(opt.Step); err != nil {
			return err
		}
	}
	jobDisk := filepath.Join(work, "job.tar")
	if _, err := x.writeJobDisk(ctx, jobDisk, []*proto.Job{&job}, nil); err != nil {
		return err
	}
	vm := x.newVM(jobDisk)
	for _, name := range names {
		p, err := x.materialize(ctx, work, name, disks[name])
		if err != nil {
			return err
		}
		vm.Disks = append(vm.Disks, qemu.Drive{Path: p})
	}
	if x.Verbose {
		fmt.Fprintf(stdout, "+ %s\r\n", vm)
	}
	return runShell(ctx, vm, job.Nonce, stdin, stdout)
}

// runShell runs the VM with its console connected to stdin and stdout.
func runShell(ctx context.Context, vm *qemu.VM, nonce string, stdin io.Reader, stdout io.Writer) error {
	p, err := vm.StartInteractive(ctx)
	if err != nil {
		return err
	}
	in, out := p.Stdin, p.Console
	stopped := make(chan struct{})
	ready := make(chan struct{})
	con := &console{w: stdout, nonce: nonce, ready: ready}
	go func() {
		// Bytes sent before the agent is up could reach the serial port before
		// the guest listens; after, the guest's tty holds them until the shell
		// reads them.
		select {
		case <-ready:
		case <-stopped:
			return
		}
		w := &lastByte{w: in}
		if _, err := io.Copy(w, stdin); err != nil {
			return
		}
		// The end of stdin is the end of the session: Ctrl-D, at the start of a
		// line, ends the shell. Again and again: one that comes while the
		// shell runs a command, or before it started, reaches its line editor
		// as a NUL (the tty's end-of-file mark in canonical mode) and is lost.
		if w.last != '\n' && w.last != 0 {
			in.Write([]byte{'\n'})
		}
		for {
			if _, err := in.Write([]byte{4}); err != nil {
				return
			}
			select {
			case <-stopped:
				return
			case <-time.After(500 * time.Millisecond):
			}
		}
	}()
	_, cerr := io.Copy(con, out)
	con.flush()
	werr := p.Wait()
	close(stopped)
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case cerr != nil:
		return fmt.Errorf("console: %w", cerr)
	case !con.result:
		return &JobError{Status: -1, Err: fmt.Errorf("the build VM stopped without ending the session (%v)", werr)}
	}
	return nil
}

// lastByte remembers the last byte written through it.
type lastByte struct {
	w    io.Writer
	last byte
}

func (l *lastByte) Write(p []byte) (int, error) {
	if len(p) > 0 {
		l.last = p[len(p)-1]
	}
	return l.w.Write(p)
}

// console passes the serial console's bytes through to w as they come, except the
// agent's protocol lines for this session (ready, result), which it acts on. They
// need not begin a line (the firmware may have written half a line before the
// agent's first): bytes that may begin one are held until they are known not to.
//
// Before the ready line, terminal escape sequences are dropped: the firmware resets
// the terminal and turns its line wrapping off, which the user's terminal would
// keep. After it, the shell's bytes go through as they are.
type console struct {
	w      io.Writer
	nonce  string
	ready  chan struct{} // closed at the ready line
	up     bool          // the ready line came
	inEsc  bool          // in an escape sequence, before the ready line
	out    []byte        // what to write at the end of this Write
	last   byte          // the last byte written
	held   []byte        // what may be the beginning of a protocol line
	inLine bool          // held is a protocol line, up to its end
	result bool          // the result line came (the shell's exit status is the user's business)
}

func (c *console) Write(p []byte) (int, error) {
	for _, b := range p {
		if c.inLine {
			c.held = append(c.held, b)
			if b == '\n' {
				c.protocol(strings.TrimRight(string(c.held), "\r\n"))
				c.held, c.inLine = c.held[:0], false
			}
			continue
		}
		switch c.match(append(c.held, b)) {
		case matchWhole:
			c.held, c.inLine = append(c.held, b), true
		case matchPart:
			c.held = append(c.held, b)
		default:
			c.emit(c.held...)
			c.held = c.held[:0]
			switch {
			case c.match([]byte{b}) == matchPart:
				c.held = append(c.held, b)
			case c.up:
				c.emit(b)
			case c.inEsc:
				c.inEsc = !(b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z')
			case b == 0x1b:
				c.inEsc = true
			default:
				c.emit(b)
			}
		}
	}
	if len(c.out) > 0 {
		_, err := c.w.Write(c.out)
		c.out = c.out[:0]
		if err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (c *console) emit(b ...byte) {
	if len(b) > 0 {
		c.out = append(c.out, b...)
		c.last = b[len(b)-1]
	}
}

// flush writes what is held: the console ended in the middle of a line.
func (c *console) flush() {
	if len(c.held) > 0 && !c.inLine {
		c.w.Write(c.held)
	}
	c.held = nil
}

const (
	matchNone = iota
	matchPart
	matchWhole
)

// match says whether b is the beginning of the session's ready or result line
// (matchPart), all of it up to the status (matchWhole), or neither. The nonce makes
// it something no program in the VM prints by chance.
func (c *console) match(b []byte) int {
	for _, m := range []string{proto.ReadyPrefix + c.nonce, proto.ResultPrefix + c.nonce + " "} {
		switch {
		case len(b) == len(m) && string(b) == m:
			return matchWhole
		case len(b) < len(m) && string(b) == m[:len(b)]:
			return matchPart
		}
	}
	return matchNone
}

// protocol acts on a protocol line.
func (c *console) protocol(line string) {
	if _, ok := proto.ParseResult(line, c.nonce); ok {
		c.result = true
		return
	}
	if line == proto.ReadyPrefix+c.nonce {
		if !c.up && c.last != '\n' && c.last != 0 {
			c.emit('\r', '\n') // the firmware's last line had no end
		}
		c.up = true
		select {
		case <-c.ready:
		default:
			close(c.ready)
		}
	}
}
