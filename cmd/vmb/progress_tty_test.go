package main

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/solver"
)

// screen is the little of a terminal the tty progress uses: text, newline, carriage
// return, cursor up (CSI n A) and erase to the end of the screen (CSI J).
type screen struct {
	lines    []string
	row, col int
}

var csi = regexp.MustCompile(`^\x1b\[([0-9]*)([A-Za-z])`)

func (s *screen) write(t *testing.T, b []byte) {
	t.Helper()
	for len(b) > 0 {
		if m := csi.FindSubmatch(b); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			switch string(m[2]) {
			case "A":
				s.row = max(0, s.row-n)
			case "J":
				s.line()
				s.lines[s.row] = string([]rune(s.lines[s.row])[:s.col])
				s.lines = s.lines[:s.row+1]
			default:
				t.Fatalf("unexpected escape sequence %q", m[0])
			}
			b = b[len(m[0]):]
			continue
		}
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == '\n':
			s.row, s.col = s.row+1, 0
		case r == '\r':
			s.col = 0
		case r < 0x20:
			t.Fatalf("unexpected control character %q", r)
		default:
			s.line()
			l := []rune(s.lines[s.row])
			for len(l) <= s.col {
				l = append(l, ' ')
			}
			l[s.col] = r
			s.lines[s.row] = string(l)
			s.col++
		}
	}
}

func (s *screen) line() {
	for len(s.lines) <= s.row {
		s.lines = append(s.lines, "")
	}
}

func (s *screen) String() string { return strings.TrimRight(strings.Join(s.lines, "\n"), "\n") }

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func node(image string, step int, j graph.Job, parent *graph.Node) *graph.Node {
	n := graph.NewNode("test", parent, j, nil)
	n.Image, n.Step = image, step
	return n
}

// TestTTYProgress feeds a solve's events to the tty display and checks the screen
// after each frame: finished nodes stay as lines above, the live area below is
// redrawn in place with each running node's time and the end of its log.
func TestTTYProgress(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	var out bytes.Buffer
	cols, rows := 60, 24
	hint := func(n *graph.Node) string { return fmt.Sprintf("vmb shell . %s %d", n.Image, n.Step) }
	p := newTTYProgress(&out, clock.now, func() (int, int) { return cols, rows }, hint, false)
	var scr screen
	frame := func() string {
		t.Helper()
		out.Reset()
		p.frame(false)
		scr.write(t, out.Bytes())
		return scr.String()
	}

	a := node("img", -1, &graph.CreateDisk{Disk: "root", Size: 1 << 20}, nil)
	b := node("img", 0, &graph.Label{Disk: "root", Type: "gpt"}, a)
	c := node("img", 1, &graph.Format{Place: graph.Place{Disk: "root"}, FS: "ext4"}, b)
	ka, kb, kc := a.Key.Short(), b.Key.Short(), c.Key.Short()
	p.event(solver.Event{Type: solver.EventPlan, Node: a, Cached: true})
	p.event(solver.Event{Type: solver.EventPlan, Node: b, Reason: "new"})
	p.event(solver.Event{Type: solver.EventPlan, Node: c, Reason: "new"})
	p.event(solver.Event{Type: solver.EventCached, Node: a})
	p.event(solver.Event{Type: solver.EventStart, Node: b})
	for i := 1; i <= 8; i++ {
		p.event(solver.Event{Type: solver.EventLog, Node: b, Line: fmt.Sprintf("line %d\tof the log\x1b[2J", i)})
	}
	clock.advance(2500 * time.Millisecond)
	want := ` => CACHED  ` + ka + ` img[disk] create-disk root 1.0 MiB
[+] Building 2.5s (1/3)
 => ` + kb + ` img[0] label root gpt  2.5s
    │ line 3    of the log
    │ line 4    of the log
    │ line 5    of the log
    │ line 6    of the log
    │ line 7    of the log
    │ line 8    of the log`
	if diff := cmp.Diff(want, frame()); diff != "" {
		t.Fatalf("first frame (-want +got):\n%s", diff)
	}

	// Only the time moves: the live area is redrawn over itself.
	clock.advance(time.Second)
	if got := frame(); !strings.Contains(got, "[+] Building 3.5s (1/3)") || !strings.Contains(got, "gpt  3.5s") || strings.Count(got, "[+]") != 1 {
		t.Fatalf("second frame:\n%s", got)
	}
	if !strings.HasPrefix(out.String(), "\x1b[8A\r\x1b[J") {
		t.Fatalf("the second frame does not start by erasing the 8 lines of the first: %q", out.String())
	}

	// b finishes and c starts: b becomes a permanent line; a long line is cut.
	p.event(solver.Event{Type: solver.EventDone, Node: b, Duration: 3 * time.Second})
	p.event(solver.Event{Type: solver.EventStart, Node: c})
	p.event(solver.Event{Type: solver.EventLog, Node: c, Line: strings.Repeat("x", 100)})
	clock.advance(time.Second)
	want = ` => CACHED  ` + ka + ` img[disk] create-disk root 1.0 MiB
 => DONE    ` + kb + ` img[0] label root gpt  3.0s
[+] Building 4.5s (2/3)
 => ` + kc + ` img[1] format root ext4  1.0s
    │ ` + strings.Repeat("x", 52) + `…`
	if diff := cmp.Diff(want, frame()); diff != "" {
		t.Fatalf("third frame (-want +got):\n%s", diff)
	}

	// c fails: its error, log tail and the vmb shell command stay; the summary ends.
	p.event(solver.Event{Type: solver.EventFailed, Node: c, Duration: 2 * time.Second,
		Err: &solver.JobError{Node: c, ExitCode: 1, Tail: "mkfs: no\nexit 1", Err: errors.New("exit status 1")}})
	out.Reset()
	sum := &solver.Summary{Executed: 1, Cached: 1, Failed: 1, Duration: 5 * time.Second}
	p.summary(sum, &solver.JobError{Node: c, Err: errors.New("exit status 1")})
	scr.write(t, out.Bytes())
	want = ` => CACHED  ` + ka + ` img[disk] create-disk root 1.0 MiB
 => DONE    ` + kb + ` img[0] label root gpt  3.0s
 => ERROR   ` + kc + ` img[1] format root ext4  2.0s: exit status 1
    last lines of its log:
    │ mkfs: no
    │ exit 1
    a shell on the state it started from: vmb shell . img 1
1 executed, 1 cached, 1 failed, 0 skipped in 5s
vmb: img[1] format root ext4: exit status 1`
	if diff := cmp.Diff(want, scr.String()); diff != "" {
		t.Fatalf("final screen (-want +got):\n%s", diff)
	}
	// Nothing is drawn after the end.
	out.Reset()
	p.close()
	p.frame(false)
	if out.Len() != 0 {
		t.Fatalf("drawn after the end: %q", out.String())
	}
}

// Nothing running and nothing new: no redraw. A small terminal gets shorter tails,
// and no line of the live area is wider than the terminal.
func TestTTYProgressFits(t *testing.T) {
	clock := &fakeClock{t: time.Unix(0, 0)}
	var out bytes.Buffer
	rows := 8
	p := newTTYProgress(&out, clock.now, func() (int, int) { return 30, rows }, func(*graph.Node) string { return "" }, false)
	p.frame(false)
	out.Reset()
	p.frame(false)
	if out.Len() != 0 {
		t.Fatalf("redrawn with nothing new: %q", out.String())
	}
	var nodes []*graph.Node
	for i := range 3 {
		n := node(fmt.Sprintf("image-with-a-long-name-%d", i), 0, &graph.CreateDisk{Disk: "d", Size: 1 << 20}, nil)
		nodes = append(nodes, n)
		p.event(solver.Event{Type: solver.EventStart, Node: n})
		for j := range 5 {
			p.event(solver.Event{Type: solver.EventLog, Node: n, Line: fmt.Sprint("log ", j)})
		}
	}
	p.frame(false)
	var scr screen
	scr.write(t, out.Bytes())
	lines := strings.Split(scr.String(), "\n")
	if len(lines) > 8-1 {
		t.Errorf("%d lines on a terminal of 8 rows:\n%s", len(lines), scr.String())
	}
	for _, l := range lines {
		if n := utf8.RuneCountInString(l); n >= 30 {
			t.Errorf("line of %d characters on a terminal of 30 columns: %q", n, l)
		}
	}
	if !strings.Contains(scr.String(), "│ log 4") {
		t.Errorf("no log tail:\n%s", scr.String())
	}

	// Fewer rows than running nodes: no tails, and a count of those not shown.
	rows = 4
	out.Reset()
	clock.advance(time.Second)
	p.frame(false)
	scr.write(t, out.Bytes())
	want := "[+] Building 1.0s (0/0)\n => " + nodes[0].Key.Short() + " image-with-…\n … and 2 more running"
	if diff := cmp.Diff(want, scr.String()); diff != "" {
		t.Errorf("on 4 rows (-want +got):\n%s", diff)
	}
}
