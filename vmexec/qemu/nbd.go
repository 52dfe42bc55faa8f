package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The part of the NBD protocol (github.com/NetworkBlockDevice/nbd,
// doc/proto.md) that reads one metadata context of an export: qemu exports a
// dirty bitmap as the context "qemu:dirty-bitmap:NAME", bit 0 set where the
// guest wrote. Fixed newstyle handshake, structured replies, BLOCK_STATUS.
const (
	nbdMagic          = 0x4e42444d41474943 // "NBDMAGIC"
	nbdOptMagic       = 0x49484156454f5054 // "IHAVEOPT"
	nbdRepMagic       = 0x3e889045565a9
	nbdFlagFixedNew   = 1
	nbdFlagNoZeroes   = 2
	nbdOptGo          = 7
	nbdOptStructured  = 8
	nbdOptSetMeta     = 10
	nbdRepAck         = 1
	nbdRepInfo        = 3
	nbdRepMetaContext = 4
	nbdRepErrBit      = 1 << 31
	nbdRequestMagic   = 0x25609513
	nbdCmdDisc        = 2
	nbdCmdBlockStatus = 7
	nbdStructMagic    = 0x668e33ef
	nbdSimpleMagic    = 0x67446698
	nbdReplyFlagDone  = 1
	nbdReplyNone      = 0
	nbdReplyStatus    = 5
	nbdReplyErrBit    = 1 << 15
)

// dirtyExtents connects to the NBD server at socket, and returns the ranges of
// export (of size bytes) that the metadata context ctxName flags (bit 0).
func dirtyExtents(ctx context.Context, socket, export, ctxName string, size int64) ([]Extent, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("nbd: %w", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Minute))
	n := &nbdConn{c: c}
	id, err := n.handshake(export, ctxName)
	if err != nil {
		return nil, fmt.Errorf("nbd: %w", err)
	}
	var out []Extent
	for off := int64(0); off < size; {
		length := min(size-off, 1<<30)
		ext, err := n.blockStatus(id, off, length)
		if err != nil {
			return nil, fmt.Errorf("nbd: block status at %d: %w", off, err)
		}
		for _, e := range ext {
			if e.dirty {
				if k := len(out) - 1; k >= 0 && out[k].Off+out[k].Len == off {
					out[k].Len += e.len
				} else {
					out = append(out, Extent{Off: off, Len: e.len})
				}
			}
			off += e.len
		}
	}
	n.write(nbdRequestMagic, uint16(0), uint16(nbdCmdDisc), uint64(0), uint64(0), uint32(0))
	return out, n.err
}

type nbdConn struct {
	c   net.Conn
	err error
}

// write writes the big-endian encoding of vs, keeping the first error.
func (n *nbdConn) write(vs ...any) {
	var b bytes.Buffer
	for _, v := range vs {
		switch v := v.(type) {
		case string:
			b.WriteString(v)
		default:
			binary.Write(&b, binary.BigEndian, v)
		}
	}
	if n.err == nil {
		_, n.err = n.c.Write(b.Bytes())
	}
}

func (n *nbdConn) read(vs ...any) error {
	for _, v := range vs {
		if n.err == nil {
			n.err = binary.Read(n.c, binary.BigEndian, v)
		}
	}
	return n.err
}

// handshake negotiates structured replies and the metadata context, opens the
// export, and returns the context's id.
func (n *nbdConn) handshake(export, ctxName string) (uint32, error) {
	var magic, opt uint64
	var flags uint16
	if n.read(&magic, &opt, &flags) != nil {
		return 0, n.err
	}
	if magic != nbdMagic || opt != nbdOptMagic || flags&nbdFlagFixedNew == 0 {
		return 0, errors.New("not a fixed newstyle NBD server")
	}
	n.write(uint32(nbdFlagFixedNew | flags&nbdFlagNoZeroes))
	n.write(uint64(nbdOptMagic), uint32(nbdOptStructured), uint32(0))
	if _, err := n.replies(nbdOptStructured, nil); err != nil {
		return 0, err
	}
	n.write(uint64(nbdOptMagic), uint32(nbdOptSetMeta), uint32(4+len(export)+4+4+len(ctxName)),
		uint32(len(export)), export, uint32(1), uint32(len(ctxName)), ctxName)
	var id uint32
	found := false
	if _, err := n.replies(nbdOptSetMeta, func(typ uint32, data []byte) {
		if typ == nbdRepMetaContext && len(data) >= 4 && string(data[4:]) == ctxName {
			id, found = binary.BigEndian.Uint32(data), true
		}
	}); err != nil {
		return 0, err
	}
	if !found {
		return 0, fmt.Errorf("the server has no metadata context %q", ctxName)
	}
	n.write(uint64(nbdOptMagic), uint32(nbdOptGo), uint32(4+len(export)+2), uint32(len(export)), export, uint16(0))
	_, err := n.replies(nbdOptGo, nil)
	return id, err
}

// replies reads an option's replies up to its ACK, giving each other one to f.
func (n *nbdConn) replies(opt uint32, f func(typ uint32, data []byte)) (int, error) {
	for count := 0; ; count++ {
		var magic uint64
		var o, typ, length uint32
		if n.read(&magic, &o, &typ, &length) != nil {
			return count, n.err
		}
		if magic != nbdRepMagic || o != opt || length > 1<<20 {
			return count, fmt.Errorf("option %d: a malformed reply", opt)
		}
		data := make([]byte, length)
		if _, err := io.ReadFull(n.c, data); err != nil {
			return count, err
		}
		switch {
		case typ&nbdRepErrBit != 0:
			return count, fmt.Errorf("option %d refused (%#x): %s", opt, typ, data)
		case typ == nbdRepAck:
			return count, nil
		case f != nil:
			f(typ, data)
		}
	}
}

type nbdExtent struct {
	len   int64
	dirty bool
}

// blockStatus asks for the status of length bytes at off in context id, and
// returns the extents the server describes from off on (at least one).
func (n *nbdConn) blockStatus(id uint32, off, length int64) ([]nbdExtent, error) {
	const cookie = 1
	n.write(uint32(nbdRequestMagic), uint16(0), uint16(nbdCmdBlockStatus), uint64(cookie), uint64(off), uint32(length))
	var out []nbdExtent
	for {
		var magic uint32
		if n.read(&magic) != nil {
			return nil, n.err
		}
		if magic == nbdSimpleMagic { // only for an error
			var errno uint32
			var ck uint64
			n.read(&errno, &ck)
			return nil, fmt.Errorf("error %d", errno)
		}
		var flags, typ uint16
		var ck uint64
		var plen uint32
		if n.read(&flags, &typ, &ck, &plen) != nil {
			return nil, n.err
		}
		if magic != nbdStructMagic || ck != cookie || plen > 64<<20 {
			return nil, errors.New("a malformed reply")
		}
		data := make([]byte, plen)
		if _, err := io.ReadFull(n.c, data); err != nil {
			return nil, err
		}
		switch {
		case typ&nbdReplyErrBit != 0:
			msg := ""
			if len(data) >= 6 {
				msg = string(data[6:min(len(data), 6+int(binary.BigEndian.Uint16(data[4:])))])
			}
			return nil, fmt.Errorf("server error %#x: %s", typ, msg)
		case typ == nbdReplyStatus && len(data) >= 4 && binary.BigEndian.Uint32(data) == id:
			for p := 4; p+8 <= len(data); p += 8 {
				out = append(out, nbdExtent{len: int64(binary.BigEndian.Uint32(data[p:])), dirty: binary.BigEndian.Uint32(data[p+4:])&1 != 0})
			}
		}
		if flags&nbdReplyFlagDone != 0 {
			break
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no extents")
	}
	var total int64
	for _, e := range out {
		if e.len == 0 {
			return nil, errors.New("an empty extent")
		}
		total += e.len
	}
	if over := total - length; over > 0 { // the last may reach past what was asked
		if out[len(out)-1].len <= over {
			return nil, fmt.Errorf("extents of %d bytes for %d asked", total, length)
		}
		out[len(out)-1].len -= over
	}
	return out, nil
}
