package vmexec

import (
	"bytes"
	"testing"
)

// The shell session's console: protocol lines are taken out wherever they start,
// in whatever pieces the bytes come; the firmware's escape sequences are dropped,
// the shell's are not.
func TestConsole(t *testing.T) {
	const nonce = "0123456789abcdef"
	in := "\x1bc\x1b[?7l\x1b[2J\x1b[0mSeaBIOS\r\nBooting from ROM..VMB-READY " + nonce + "\r\n" +
		"vmb shell: disks\r\n" +
		"VMB-READY 1111111111111111\r\n" + // another session's: not ours
		"VMB-ERROR " + nonce + " stays visible\r\n" +
		"V\r\nVM\r\n(vmb shell) / # \x1b[6nls\r\n\x1b[1;34mbin\x1b[0m\r\n" +
		"VMB-RESULT " + nonce + " 0\r\n[ 5.0] reboot: Power down\r\n"
	want := "SeaBIOS\r\nBooting from ROM..\r\n" +
		"vmb shell: disks\r\n" +
		"VMB-READY 1111111111111111\r\n" +
		"VMB-ERROR " + nonce + " stays visible\r\n" +
		"V\r\nVM\r\n(vmb shell) / # \x1b[6nls\r\n\x1b[1;34mbin\x1b[0m\r\n" +
		"[ 5.0] reboot: Power down\r\n"
	for _, size := range []int{1, 2, 3, 7, len(in)} {
		var out bytes.Buffer
		c := &console{w: &out, nonce: nonce, ready: make(chan struct{})}
		for i := 0; i < len(in); i += size {
			c.Write([]byte(in[i:min(i+size, len(in))]))
		}
		c.flush()
		if out.String() != want {
			t.Errorf("in pieces of %d:\n got %q\nwant %q", size, out.String(), want)
		}
		select {
		case <-c.ready:
		default:
			t.Errorf("in pieces of %d: the ready line was not seen", size)
		}
		if !c.result {
			t.Errorf("in pieces of %d: the result line was not seen", size)
		}
	}
}

// A console that ends in the middle of what could be a protocol line loses nothing.
func TestConsoleFlush(t *testing.T) {
	var out bytes.Buffer
	c := &console{w: &out, nonce: "ab", ready: make(chan struct{})}
	c.Write([]byte("x\nVMB-RE"))
	c.flush()
	if out.String() != "x\nVMB-RE" {
		t.Errorf("got %q", out.String())
	}
}
