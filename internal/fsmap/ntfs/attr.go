package ntfs

import (
	"fmt"
	"unicode/utf16"
)

// attribute is one attribute of an MFT record whose update sequence is undone;
// its bytes alias the record.
type attribute struct {
	typ         uint32
	nonResident bool
	name        string
	b           []byte // the whole attribute
	value       []byte // a resident attribute's value
	size        int64  // a non-resident attribute's data size
}

// attributes lists the attributes of an MFT record.
func attributes(rec []byte) []attribute {
	var out []attribute
	used := min(int(le.Uint32(rec[24:])), len(rec))
	for off := int(le.Uint16(rec[20:])); off >= 0 && off+16 <= used; {
		typ, length := le.Uint32(rec[off:]), int(le.Uint32(rec[off+4:]))
		if typ == 0xffffffff || length < 16 || length > used-off {
			break
		}
		b := rec[off : off+length]
		a := attribute{typ: typ, nonResident: b[8] != 0, b: b}
		nameLen, nameOff := int(b[9]), int(le.Uint16(b[10:]))
		if nameOff+2*nameLen <= length {
			u := make([]uint16, nameLen)
			for i := range u {
				u[i] = le.Uint16(b[nameOff+2*i:])
			}
			a.name = string(utf16.Decode(u))
		}
		switch {
		case !a.nonResident && length >= 24:
			vl, vo := int(le.Uint32(b[16:])), int(le.Uint16(b[20:]))
			if vo+vl <= length {
				a.value = b[vo : vo+vl]
			}
		case a.nonResident && length >= 64:
			a.size = int64(le.Uint64(b[48:]) & (1<<62 - 1))
		}
		out = append(out, a)
		off += length
	}
	return out
}

// extents decodes a non-resident attribute's mapping pairs, from its lowest VCN.
// A run that lies past the volume's last cluster is cut there; a malformed pair
// ends the list.
func (f *FS) extents(attr []byte) []extent {
	if len(attr) < 64 {
		return nil
	}
	vcn := int64(le.Uint64(attr[16:]) & (1<<48 - 1))
	mp := int(le.Uint16(attr[32:]))
	if mp > len(attr) {
		return nil
	}
	p := attr[mp:]
	var out []extent
	lcn := int64(0)
	for len(p) > 0 && p[0] != 0 {
		nl, no := int(p[0]&15), int(p[0]>>4)
		if nl == 0 || nl > 8 || no > 8 || 1+nl+no > len(p) {
			break
		}
		n := varint(p[1:1+nl], false)
		if n <= 0 || n > 1<<48 {
			break
		}
		e := extent{vcn: vcn, lcn: -1, n: n}
		if no > 0 {
			lcn += varint(p[1+nl:1+nl+no], true)
			if lcn < 0 || lcn >= f.clusters {
				break
			}
			e.lcn, e.n = lcn, min(n, f.clusters-lcn)
		}
		out = append(out, e)
		vcn += n
		p = p[1+nl+no:]
	}
	return out
}

// varint reads a little-endian integer of 1 to 8 bytes.
func varint(b []byte, signed bool) int64 {
	var x uint64
	for i := len(b) - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	if signed && b[len(b)-1]&0x80 != 0 && len(b) < 8 {
		x |= ^uint64(0) << (8 * len(b))
	}
	return int64(x)
}

// unfix undoes the update sequence of a multi-sector record (MFT record or index
// block): the last two bytes of each 512 hold the sequence number, their own
// values are in the update sequence array.
func unfix(b []byte) error {
	usa, count := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if count < 1 || (count-1)*512 != len(b) || usa+2*count > len(b) {
		return fmt.Errorf("update sequence of %d at %d in %d bytes", count, usa, len(b))
	}
	usn := le.Uint16(b[usa:])
	for i := 1; i < count; i++ {
		end := i*512 - 2
		if le.Uint16(b[end:]) != usn {
			return fmt.Errorf("sector %d: torn write (update sequence %d, not %d)", i-1, le.Uint16(b[end:]), usn)
		}
		copy(b[end:end+2], b[usa+2*i:])
	}
	return nil
}
