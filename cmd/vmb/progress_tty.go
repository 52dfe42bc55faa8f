package main

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/solver"
)

// ttyProgress draws a solve on a terminal as BuildKit's tty progress does: at the
// bottom, a live area redrawn in place (a header with the elapsed time and the count
// of finished nodes, then each running node with its elapsed time and the last lines
// of its log); above it, a permanent line for each node that finished, printed once.
//
// Events only change its state; frame draws. run calls frame on a ticker, so the
// screen is redrawn at most once a tick however many events come; tests call frame
// themselves with a fake clock.
type ttyProgress struct {
	w      io.Writer
	now    func() time.Time
	size   func() (cols, rows int)
	hint   func(*graph.Node) string // the vmb shell command for a failed node
	dryRun bool
	tail   int // log lines shown under a running node, at most

	mu       sync.Mutex
	start    time.Time
	running  []*ttyNode // in the order they started
	pending  []string   // permanent lines not drawn yet
	drawn    int        // lines of the live area on the screen
	planned  int
	finished int
	changed  bool
	stop     chan struct{}
	done     chan struct{}
	ended    bool
}

type ttyNode struct {
	node  *graph.Node
	start time.Time
	tail  []string
}

// newTTYProgress returns a display writing to w; size reports the terminal's
// columns and rows.
func newTTYProgress(w io.Writer, now func() time.Time, size func() (int, int), hint func(*graph.Node) string, dryRun bool) *ttyProgress {
	return &ttyProgress{w: w, now: now, size: size, hint: hint, dryRun: dryRun, tail: 6, start: now()}
}

// ttySize returns the size of the terminal behind w, or 80x24.
func ttySize(w io.Writer) func() (int, int) {
	return func() (int, int) {
		if fd, ok := terminalFd(w); ok {
			if c, r, ok := terminalSize(fd); ok {
				return c, r
			}
		}
		return 80, 24
	}
}

// run redraws every interval until summary or close.
func (p *ttyProgress) run(interval time.Duration) {
	p.stop, p.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				p.frame(false)
			case <-p.stop:
				return
			}
		}
	}()
}

func (p *ttyProgress) event(ev solver.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.changed = true
	n := ev.Node
	switch ev.Type {
	case solver.EventPlan:
		p.planned++
		if !ev.Cached && p.dryRun {
			p.pending = append(p.pending, fmt.Sprintf(" => plan    %s %s: %s", n.Key.Short(), n.Label(), ev.Reason))
		}
	case solver.EventCached:
		p.finished++
		p.pending = append(p.pending, fmt.Sprintf(" => CACHED  %s %s", n.Key.Short(), n.Label()))
	case solver.EventStart:
		p.running = append(p.running, &ttyNode{node: n, start: p.now()})
	case solver.EventLog:
		if r := p.find(n); r != nil {
			r.tail = append(r.tail, sanitize(ev.Line))
			if len(r.tail) > p.tail {
				r.tail = r.tail[len(r.tail)-p.tail:]
			}
		}
	case solver.EventDone:
		p.remove(n)
		p.finished++
		p.pending = append(p.pending, fmt.Sprintf(" => DONE    %s %s  %s", n.Key.Short(), n.Label(), seconds(ev.Duration)))
	case solver.EventFailed:
		p.remove(n)
		p.finished++
		p.pending = append(p.pending, fmt.Sprintf(" => ERROR   %s %s  %s: %v", n.Key.Short(), n.Label(), seconds(ev.Duration), ev.Err.Err))
		if n.Pos != "" {
			p.pending = append(p.pending, "    defined at "+n.Pos)
		}
		if ev.Err.Tail != "" {
			p.pending = append(p.pending, "    last lines of its log:")
			for _, l := range strings.Split(ev.Err.Tail, "\n") {
				p.pending = append(p.pending, "    │ "+sanitize(l))
			}
		}
		if h := p.hint(n); h != "" {
			p.pending = append(p.pending, "    a shell on the state it started from: "+h)
		}
	case solver.EventSkipped:
		p.finished++
		p.pending = append(p.pending, fmt.Sprintf(" => SKIPPED %s %s", n.Key.Short(), n.Label()))
	case solver.EventInterrupted:
		p.remove(n)
		p.finished++
		p.pending = append(p.pending, fmt.Sprintf(" => STOPPED %s %s  %s", n.Key.Short(), n.Label(), seconds(ev.Duration)))
	case solver.EventOutput:
		p.pending = append(p.pending, " => output  "+ev.Path)
	}
}

func (p *ttyProgress) find(n *graph.Node) *ttyNode {
	for _, r := range p.running {
		if r.node == n {
			return r
		}
	}
	return nil
}

func (p *ttyProgress) remove(n *graph.Node) {
	for i, r := range p.running {
		if r.node == n {
			p.running = append(p.running[:i], p.running[i+1:]...)
			return
		}
	}
}

// frame draws: it erases the live area, prints the permanent lines that came since
// the last frame, and draws the live area again (unless final), in one write.
func (p *ttyProgress) frame(final bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ended || (!p.changed && len(p.running) == 0 && !final) {
		return // nothing moves: no redraw
	}
	p.changed = false
	var b strings.Builder
	if p.drawn > 0 {
		// Up to the first line of the live area, and erase to the end of the screen.
		fmt.Fprintf(&b, "\x1b[%dA\r\x1b[J", p.drawn)
	}
	for _, l := range p.pending {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	p.pending = p.pending[:0]
	p.drawn = 0
	if !final {
		lines := p.live()
		for _, l := range lines {
			b.WriteString(l)
			b.WriteByte('\n')
		}
		p.drawn = len(lines)
	}
	io.WriteString(p.w, b.String())
}

// live returns the lines of the live area, each cut to the terminal's width so that
// none wraps, and no more of them than the terminal has rows.
func (p *ttyProgress) live() []string {
	cols, rows := p.size()
	width := max(cols-1, 20)
	now := p.now()
	lines := []string{cut(fmt.Sprintf("[+] Building %s (%d/%d)", seconds(now.Sub(p.start)), p.finished, p.planned), width)}
	// The log tails shrink, then the list, to fit the rows less the header and
	// the cursor's line.
	room := max(rows-2, 1)
	tail := p.tail
	for tail > 0 && len(p.running)*(1+tail) > room {
		tail--
	}
	shown := len(p.running)
	if shown > room {
		shown = room - 1 // and a line to say how many more
	}
	for _, r := range p.running[:shown] {
		lines = append(lines, cut(fmt.Sprintf(" => %s %s  %s", r.node.Key.Short(), r.node.Label(), seconds(now.Sub(r.start))), width))
		for _, l := range r.tail[max(0, len(r.tail)-tail):] {
			lines = append(lines, cut("    │ "+l, width))
		}
	}
	if shown < len(p.running) {
		lines = append(lines, fmt.Sprintf(" … and %d more running", len(p.running)-shown))
	}
	return lines
}

func (p *ttyProgress) summary(sum *solver.Summary, err error) {
	p.end()
	fmt.Fprintln(p.w, summaryLine(sum))
	if err != nil {
		fmt.Fprintln(p.w, "vmb:", err)
	}
}

func (p *ttyProgress) close() { p.end() }

// end stops the ticker and draws the last frame: the permanent lines, no live area.
func (p *ttyProgress) end() {
	if p.stop != nil {
		select {
		case <-p.stop:
		default:
			close(p.stop)
			<-p.done
		}
	}
	p.frame(true)
	p.mu.Lock()
	p.ended = true
	p.mu.Unlock()
}

func seconds(d time.Duration) string { return fmt.Sprintf("%.1fs", d.Seconds()) }

// sanitize makes a log line safe to draw: tabs become spaces, escape sequences and
// other control characters (which could move the cursor) are dropped.
func sanitize(s string) string {
	var b strings.Builder
	esc := false
	for _, r := range s {
		switch {
		case esc:
			esc = !(r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z')
		case r == 0x1b:
			esc = true
		case r == '\t':
			b.WriteString("    ")
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cut shortens s to width characters.
func cut(s string, width int) string {
	if utf8.RuneCountInString(s) <= width {
		return s
	}
	r := []rune(s)
	return string(r[:width-1]) + "…"
}
