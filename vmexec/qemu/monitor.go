package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Monitor is a connection to a running VM's QMP socket (VM.Monitor): qemu's
// machine protocol, one JSON command and one JSON answer at a time, events
// in between (skipped).
type Monitor struct {
	c   net.Conn
	dec *json.Decoder
	enc *json.Encoder
	gen map[int]int // the bitmap of each drive that records writes now
	// granularity is the unit TrackWrites records writes in.
	granularity int64
}

// DialMonitor connects to the QMP socket at path, waiting for qemu to make it,
// and negotiates the protocol.
func DialMonitor(ctx context.Context, path string) (*Monitor, error) {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			m := &Monitor{c: c, dec: json.NewDecoder(c), enc: json.NewEncoder(c), gen: map[int]int{}}
			var greeting struct{ QMP json.RawMessage }
			if err := m.dec.Decode(&greeting); err != nil || greeting.QMP == nil {
				c.Close()
				return nil, fmt.Errorf("qmp: no greeting (%v)", err)
			}
			if err := m.Do("qmp_capabilities", nil, nil); err != nil {
				c.Close()
				return nil, err
			}
			return m, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("qmp: %w (%v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// QMPError is an error qemu answered a command with.
type QMPError struct {
	Command, Class, Desc string
}

func (e *QMPError) Error() string { return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc) }

// Do runs a command with args (nil: none) and decodes its answer into result
// (nil: ignored).
func (m *Monitor) Do(command string, args, result any) error {
	req := map[string]any{"execute": command}
	if args != nil {
		req["arguments"] = args
	}
	m.c.SetDeadline(time.Now().Add(30 * time.Second))
	defer m.c.SetDeadline(time.Time{})
	if err := m.enc.Encode(req); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	for {
		var resp struct {
			Return json.RawMessage
			Error  *struct{ Class, Desc string }
			Event  string
		}
		if err := m.dec.Decode(&resp); err != nil {
			return fmt.Errorf("qmp %s: %w", command, err)
		}
		switch {
		case resp.Event != "":
			continue
		case resp.Error != nil:
			return &QMPError{Command: command, Class: resp.Error.Class, Desc: resp.Error.Desc}
		case resp.Return == nil:
			return fmt.Errorf("qmp %s: an answer with neither return nor error", command)
		}
		if result == nil {
			return nil
		}
		return json.Unmarshal(resp.Return, result)
	}
}

// Close closes the connection.
func (m *Monitor) Close() error { return m.c.Close() }

// Extent is a byte range of a disk.
type Extent struct{ Off, Len int64 }

// writtenBitmap names the dirty bitmap number gen of a drive: the one that
// records its writes now, until Written reads it and starts the next.
func writtenBitmap(gen int) string { return fmt.Sprintf("vmb-written-%d", gen) }

// TrackWrites starts recording which ranges the guest writes to the drives
// (their indexes in VM.Disks), at the given granularity (a power of two from
// 512 bytes), for Written to tell; nbdSocket is where qemu's NBD server, which
// Written reads the records through, listens. Call it before the guest runs
// (VM.Paused), then "cont".
func (m *Monitor) TrackWrites(drives []int, granularity int64, nbdSocket string) error {
	m.granularity = granularity
	for _, i := range drives {
		if err := m.Do("block-dirty-bitmap-add", map[string]any{"node": nodeName(i), "name": writtenBitmap(0), "granularity": granularity}, nil); err != nil {
			return err
		}
		m.gen[i] = 0
	}
	return m.Do("nbd-server-start", map[string]any{"addr": map[string]any{"type": "unix", "data": map[string]any{"path": nbdSocket}}}, nil)
}

// Written returns the ranges of drive i (of size bytes) the guest wrote since
// TrackWrites or the last Written of the drive, and starts the record anew. The
// guest must not write meanwhile (it waits, or is paused). As incremental
// backups do: a new bitmap takes over, the old one is disabled, exported
// read-only over NBD, read, and removed.
func (m *Monitor) Written(ctx context.Context, i int, size int64, nbdSocket string) ([]Extent, error) {
	gen, ok := m.gen[i]
	if !ok {
		return nil, fmt.Errorf("drive %d: writes are not tracked", i)
	}
	node, old := nodeName(i), writtenBitmap(gen)
	if err := m.Do("block-dirty-bitmap-add", map[string]any{"node": node, "name": writtenBitmap(gen + 1), "granularity": m.granularity}, nil); err != nil {
		return nil, err
	}
	m.gen[i] = gen + 1
	if err := m.Do("block-dirty-bitmap-disable", map[string]any{"node": node, "name": old}, nil); err != nil {
		return nil, err
	}
	if err := m.Do("block-export-add", map[string]any{"type": "nbd", "id": node, "node-name": node,
		"name": node, "bitmaps": []string{old}}, nil); err != nil {
		return nil, err
	}
	extents, err := dirtyExtents(ctx, nbdSocket, node, "qemu:dirty-bitmap:"+old, size)
	// qemu may not have seen the client go yet: "export ... still in use".
	for try := 0; ; try++ {
		derr := m.Do("block-export-del", map[string]any{"id": node}, nil)
		if derr == nil || !strings.Contains(derr.Error(), "still in use") || try == 500 {
			if err == nil {
				err = derr
			}
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	// The export lets go of the bitmap once its client has gone: until then
	// the bitmap is busy, and the next export of the drive, under the same id,
	// would be refused.
	for try := 0; ; try++ {
		err := m.Do("block-dirty-bitmap-remove", map[string]any{"node": node, "name": old}, nil)
		var qe *QMPError
		if err == nil || !errors.As(err, &qe) || try == 500 {
			return extents, err
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// nodeName is the block node name of drive i (VM.Args names them).
func nodeName(i int) string { return fmt.Sprintf("vmb-disk%d", i) }
