// Package ntfs makes NTFS volumes reproducible.
//
// NTFS keeps four times per file in its standard information, copies of them in
// each of its names ($FILE_NAME, in the file's record and in its directory's index
// entry), all to 100 ns. normalize clamps them through ntfs-3g, but setting them
// is a change of the MFT record, which ntfs-3g stamps with the clock, to the
// 100 ns, and which it copies into the names. Clamp walks the unmounted
// volume's MFT and directory indexes and sets every time after the epoch to the
// epoch, keeping the records' update sequences.
package ntfs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
)

const ntfsEpoch = 11644473600 // 1601-01-01 to 1970-01-01, in seconds

type ntfsVolume struct {
	f           *os.File
	cluster     int64
	recordSize  int64
	indexSize   int64
	limit       uint64 // the epoch in NTFS time
	changed     int
	mftRuns     [][2]int64 // byte offset and length of the MFT's extents
	mirror      int64      // byte offset of $MFTMirr
	mirrorCount int64      // records mirrored
}

// Clamp sets every time after epoch on the unmounted NTFS volume dev to epoch
// (see the package comment) and returns how many MFT records and index blocks it
// rewrote.
func Clamp(dev string, epoch int64) (int, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	v := &ntfsVolume{f: f, limit: uint64(epoch+ntfsEpoch) * 10_000_000}
	if err := v.walk(); err != nil {
		return v.changed, fmt.Errorf("ntfs %s: %w", dev, err)
	}
	return v.changed, f.Sync()
}

func (v *ntfsVolume) walk() error {
	le := binary.LittleEndian
	bs := make([]byte, 512)
	if _, err := v.f.ReadAt(bs, 0); err != nil {
		return err
	}
	if string(bs[3:11]) != "NTFS    " {
		return errors.New("no NTFS boot sector")
	}
	sector, spc := int64(le.Uint16(bs[11:])), int64(bs[13])
	if spc > 128 {
		spc = 1 << (256 - spc)
	}
	if sector < 256 || sector > 4096 || sector&(sector-1) != 0 || spc == 0 || spc > 1<<16 {
		return fmt.Errorf("sector size %d, %d sectors a cluster: out of range", sector, spc)
	}
	v.cluster = sector * spc
	size := func(c int8) int64 {
		if c < 0 {
			return 1 << -c
		}
		return int64(c) * v.cluster
	}
	v.recordSize, v.indexSize = size(int8(bs[64])), size(int8(bs[68]))
	if v.recordSize < 512 || v.recordSize > 64<<10 || v.indexSize < 512 || v.indexSize > 64<<10 {
		return fmt.Errorf("record size %d, index block size %d: out of range", v.recordSize, v.indexSize)
	}
	mft := int64(le.Uint64(bs[48:])) * v.cluster
	mirr := int64(le.Uint64(bs[56:])) * v.cluster

	// The MFT's own extents, from the $DATA attribute of record 0.
	rec := make([]byte, v.recordSize)
	if _, err := v.f.ReadAt(rec, mft); err != nil {
		return err
	}
	if err := v.unfix(rec); err != nil {
		return fmt.Errorf("$MFT record: %w", err)
	}
	for _, at := range ntfsAttributes(rec) {
		if at.typ == 0x80 && at.nonResident && at.name == "" {
			runs, err := v.runs(at.b)
			if err != nil {
				return fmt.Errorf("$MFT data: %w", err)
			}
			v.mftRuns = runs
		}
	}
	if v.mftRuns == nil {
		return errors.New("$MFT record has no data runs")
	}
	v.mirror, v.mirrorCount = mirr, 4 // mkntfs and Windows mirror the first four

	var n int64
	var mirrored [][]byte
	for _, r := range v.mftRuns {
		for off := int64(0); off+v.recordSize <= r[1]; off += v.recordSize {
			at := r[0] + off
			if _, err := v.f.ReadAt(rec, at); err != nil {
				return fmt.Errorf("MFT record %d: %w", n, err)
			}
			if string(rec[:4]) == "FILE" {
				if err := v.record(rec, at); err != nil {
					return fmt.Errorf("MFT record %d: %w", n, err)
				}
			}
			if n < v.mirrorCount {
				mirrored = append(mirrored, append([]byte(nil), rec...))
			}
			n++
		}
	}
	// $MFTMirr holds the first records as they are in the MFT.
	for i, rec := range mirrored {
		old := make([]byte, len(rec))
		at := v.mirror + int64(i)*v.recordSize
		if _, err := v.f.ReadAt(old, at); err != nil {
			return fmt.Errorf("$MFTMirr: %w", err)
		}
		if string(old) != string(rec) {
			if _, err := v.f.WriteAt(rec, at); err != nil {
				return err
			}
		}
	}
	return nil
}

// record clamps the times of an MFT record read from byte at, and, if it is in
// use, the entries of the directory index it holds. A deleted file's record keeps
// the times its last change gave it. The bytes past the record's end, where
// ntfs-3g leaves what it moved (index entries, with their times), are zeroed.
func (v *ntfsVolume) record(rec []byte, at int64) error {
	le := binary.LittleEndian
	inUse := le.Uint16(rec[22:])&1 != 0 // not in a sector's last two bytes
	orig := bytes.Clone(rec)
	if err := v.unfix(rec); err != nil {
		if !inUse {
			return nil // a free record with a torn write: nothing reads it
		}
		return err
	}
	for _, a := range ntfsAttributes(rec) {
		switch {
		case a.typ == 0x10 && !a.nonResident: // standard information
			v.clamp(a.value, 0, 8, 16, 24)
		case a.typ == 0x30 && !a.nonResident: // file name
			v.clamp(a.value, 8, 16, 24, 32)
		case a.typ == 0x90 && !a.nonResident && (a.name == "$I30" || a.name == "$Q"): // index root, in the record
			if len(a.value) < 32 {
				continue
			}
			if err := v.entries(a.value[16:], a.name); err != nil {
				return fmt.Errorf("index root: %w", err)
			}
		case a.typ == 0xa0 && a.nonResident && (a.name == "$I30" || a.name == "$Q") && inUse: // index allocation
			if err := v.indexBlocks(a.b, a.name); err != nil {
				return fmt.Errorf("index allocation: %w", err)
			}
		}
	}
	if used := int(le.Uint32(rec[24:])); used <= len(rec) {
		clear(rec[used:])
	}
	v.refix(rec)
	if bytes.Equal(rec, orig) {
		return nil
	}
	v.changed++
	_, err := v.f.WriteAt(rec, at)
	return err
}

// indexBlocks clamps the entries of a directory's (or the quotas') index blocks
// and zeroes what is past their last entry.
func (v *ntfsVolume) indexBlocks(attr []byte, index string) error {
	le := binary.LittleEndian
	runs, err := v.runs(attr)
	if err != nil {
		return err
	}
	blk := make([]byte, v.indexSize)
	for _, r := range runs {
		if r[0] < 0 {
			continue // sparse
		}
		for off := int64(0); off+v.indexSize <= r[1]; off += v.indexSize {
			if _, err := v.f.ReadAt(blk, r[0]+off); err != nil {
				return err
			}
			if string(blk[:4]) != "INDX" {
				continue // never used
			}
			orig := bytes.Clone(blk)
			if err := v.unfix(blk); err != nil {
				return fmt.Errorf("index block at byte %d: %w", r[0]+off, err)
			}
			if err := v.entries(blk[24:], index); err != nil {
				return fmt.Errorf("index block at byte %d: %w", r[0]+off, err)
			}
			if used := 24 + int(le.Uint32(blk[28:])); used <= len(blk) {
				clear(blk[used:])
			}
			v.refix(blk)
			if !bytes.Equal(blk, orig) {
				v.changed++
				if _, err := v.f.WriteAt(blk, r[0]+off); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// entries clamps the times in the index entries after an index header h: the
// file names of a directory ($I30), the change times of quota entries ($Q).
func (v *ntfsVolume) entries(h []byte, index string) error {
	le := binary.LittleEndian
	first, total := int64(le.Uint32(h)), int64(le.Uint32(h[4:]))
	if total > int64(len(h)) || first > total {
		return fmt.Errorf("index header: entries at %d, %d bytes in %d", first, total, len(h))
	}
	for off := first; off+16 <= total; {
		e := h[off:total]
		length, keyLen, flags := int64(le.Uint16(e[8:])), int64(le.Uint16(e[10:])), le.Uint16(e[12:])
		if length < 16 || length > int64(len(e)) || 16+keyLen > length {
			return fmt.Errorf("index entry at %d: length %d, key %d", off, length, keyLen)
		}
		if flags&2 != 0 { // the last entry: no key
			break
		}
		switch index {
		case "$I30":
			v.clamp(e[16:16+keyLen], 8, 16, 24, 32)
		case "$Q": // a quota control entry: its data, after the owner ID
			dataOff, dataLen := int64(le.Uint16(e)), int64(le.Uint16(e[2:]))
			if dataOff+dataLen <= length {
				v.clamp(e[dataOff:dataOff+dataLen], 16)
			}
		}
		off += length
	}
	return nil
}

// clamp sets the 64-bit times at the given offsets of b that are after the epoch
// to it.
func (v *ntfsVolume) clamp(b []byte, at ...int) {
	le := binary.LittleEndian
	for _, at := range at {
		if at+8 <= len(b) && le.Uint64(b[at:]) > v.limit {
			le.PutUint64(b[at:], v.limit)
		}
	}
}

// unfix undoes the update sequence of a multi-sector record (MFT record or index
// block): the last two bytes of each sector hold the sequence number, their own
// values are in the update sequence array.
func (v *ntfsVolume) unfix(b []byte) error {
	le := binary.LittleEndian
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

// refix applies the update sequence again, keeping its number; it leaves b
// alone if its header no longer holds one (a record whose attributes overlap it).
func (v *ntfsVolume) refix(b []byte) {
	le := binary.LittleEndian
	usa, count := int(le.Uint16(b[4:])), int(le.Uint16(b[6:]))
	if count < 1 || (count-1)*512 != len(b) || usa+2*count > len(b) {
		return
	}
	usn := le.Uint16(b[usa:])
	for i := 1; i < count; i++ {
		end := i*512 - 2
		copy(b[usa+2*i:], b[end:end+2])
		le.PutUint16(b[end:], usn)
	}
}

// runs decodes a non-resident attribute's mapping pairs into byte offsets and
// lengths on the volume; a sparse run has offset -1.
func (v *ntfsVolume) runs(attr []byte) ([][2]int64, error) {
	le := binary.LittleEndian
	if len(attr) < 64 || int(le.Uint16(attr[32:])) > len(attr) {
		return nil, errors.New("non-resident attribute too short")
	}
	p := attr[le.Uint16(attr[32:]):]
	var runs [][2]int64
	lcn := int64(0)
	for len(p) > 0 && p[0] != 0 {
		nl, no := int(p[0]&15), int(p[0]>>4)
		if nl == 0 || nl > 8 || no > 8 || 1+nl+no > len(p) {
			return nil, errors.New("bad mapping pairs")
		}
		length := ntfsInt(p[1:1+nl], false)
		if no == 0 {
			runs = append(runs, [2]int64{-1, length * v.cluster})
		} else {
			lcn += ntfsInt(p[1+nl:1+nl+no], true)
			if lcn < 0 || length <= 0 {
				return nil, errors.New("mapping pair out of the volume")
			}
			runs = append(runs, [2]int64{lcn * v.cluster, length * v.cluster})
		}
		p = p[1+nl+no:]
	}
	return runs, nil
}

// ntfsInt reads a little-endian integer of 1 to 8 bytes.
func ntfsInt(b []byte, signed bool) int64 {
	var x uint64
	for i := len(b) - 1; i >= 0; i-- {
		x = x<<8 | uint64(b[i])
	}
	if signed && b[len(b)-1]&0x80 != 0 {
		x |= ^uint64(0) << (8 * len(b))
	}
	return int64(x)
}

type ntfsAttribute struct {
	typ         uint32
	nonResident bool
	name        string // ASCII names only ($I30); others read as "?"
	b           []byte // the whole attribute
	value       []byte // a resident attribute's value
}

// ntfsAttributes lists the attributes of an MFT record whose update sequence is
// undone; their bytes alias the record.
func ntfsAttributes(rec []byte) []ntfsAttribute {
	le := binary.LittleEndian
	var out []ntfsAttribute
	used := min(int(le.Uint32(rec[24:])), len(rec))
	for off := int(le.Uint16(rec[20:])); off+16 <= used; {
		typ, length := le.Uint32(rec[off:]), int(le.Uint32(rec[off+4:]))
		if typ == 0xffffffff || length < 16 || off+length > used {
			break
		}
		b := rec[off : off+length]
		a := ntfsAttribute{typ: typ, nonResident: b[8] != 0, b: b}
		nameLen, nameOff := int(b[9]), int(le.Uint16(b[10:]))
		if nameOff+2*nameLen <= length {
			name := make([]byte, nameLen)
			for i := range name {
				c := le.Uint16(b[nameOff+2*i:])
				if c >= 0x80 {
					c = '?'
				}
				name[i] = byte(c)
			}
			a.name = string(name)
		}
		if !a.nonResident && length >= 24 {
			vl, vo := int(le.Uint32(b[16:])), int(le.Uint16(b[20:]))
			if vo+vl <= length {
				a.value = b[vo : vo+vl]
			}
		}
		out = append(out, a)
		off += length
	}
	return out
}

// SetSerial sets the 8-byte volume serial number in the boot sector of the
// NTFS volume dev and in its backup, the sector just past the volume's last
// (the device's last, as mkntfs leaves it).
func SetSerial(dev string, serial []byte) error {
	if len(serial) != 8 {
		return fmt.Errorf("ntfs %s: a serial of %d bytes, not 8", dev, len(serial))
	}
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	le := binary.LittleEndian
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, 0); err != nil {
		return fmt.Errorf("ntfs %s: boot sector: %w", dev, err)
	}
	if string(bs[3:11]) != "NTFS    " {
		return fmt.Errorf("ntfs %s: no NTFS boot sector", dev)
	}
	sector := int64(le.Uint16(bs[11:]))
	if sector < 256 || sector > 4096 || sector&(sector-1) != 0 {
		return fmt.Errorf("ntfs %s: sector size %d: out of range", dev, sector)
	}
	sectors := int64(le.Uint64(bs[40:]))
	if sectors <= 0 || sectors > 1<<48 {
		return fmt.Errorf("ntfs %s: %d sectors: out of range", dev, sectors)
	}
	copy(bs[72:80], serial)
	if _, err := f.WriteAt(bs, 0); err != nil {
		return fmt.Errorf("ntfs %s: boot sector: %w", dev, err)
	}
	// The backup: ntfs-3g reads it when the boot sector is damaged; ntfsfix
	// compares them.
	backup := make([]byte, 512)
	if _, err := f.ReadAt(backup, sectors*sector); err != nil {
		return fmt.Errorf("ntfs %s: backup boot sector at sector %d: %w", dev, sectors, err)
	}
	if string(backup[3:11]) != "NTFS    " {
		return fmt.Errorf("ntfs %s: no backup boot sector at sector %d", dev, sectors)
	}
	copy(backup[72:80], serial)
	if _, err := f.WriteAt(backup, sectors*sector); err != nil {
		return fmt.Errorf("ntfs %s: backup boot sector: %w", dev, err)
	}
	return f.Sync()
}

// FixFormat makes what mkntfs wrote reproducible. mkntfs (ntfs-3g 2022.10)
// stamps its records and index entries with the clock, to the second, and draws
// the volume serial from a generator seeded with that second: the serial becomes
// the 8 bytes given, the times the epoch.
func FixFormat(dev string, epoch int64, serial []byte) error {
	if err := SetSerial(dev, serial); err != nil {
		return err
	}
	if _, err := Clamp(dev, epoch); err != nil {
		return fmt.Errorf("ntfs %s: %w", dev, err)
	}
	return nil
}
