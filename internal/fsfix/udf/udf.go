// Package udf makes UDF volumes reproducible.
//
// UDF (ECMA-167) stamps its descriptors with the clock: mkudffs the primary volume
// descriptor, the integrity descriptor, the file set descriptor and the root's file
// entry, to the microsecond; the kernel the integrity descriptor at every mount and
// unmount, and each new file entry's creation time, which nothing can set later.
// Clamp walks the volume from its anchor the way a reader does (volume
// descriptor sequences, integrity sequence, file set, the directory tree from the
// root) and sets every timestamp after the epoch to the epoch, then the descriptor's
// CRC and tag checksum. It reads no file data: a structural walk, not a scan for
// tags, so a file that holds a UDF image is left alone.
package udf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"vmb.dev/vmb/internal/fsfix"
	"vmb.dev/vmb/internal/fsfix/blockdev"
)

// Descriptor tag identifiers (ECMA-167 3/7.2.1, 4/7.2.1).
const (
	udfPVD  = 1
	udfAVDP = 2
	udfPD   = 5
	udfLVD  = 6
	udfTD   = 8
	udfLVID = 9
	udfFSD  = 256
	udfFID  = 257
	udfAED  = 258
	udfSBD  = 264 // space bitmap
	udfFE   = 261
	udfEFE  = 266
)

type udfVolume struct {
	f         *os.File
	dev       string
	bs        int64 // logical block size
	partStart int64 // the partition's first block, in blocks from the volume's start
	partLen   int64
	partNum   uint16
	bitmap    [2]uint32 // the unallocated space bitmap: length in bytes, logical block
	epoch     int64
	stamp     [12]byte
	changed   int
	seen      map[uint32]bool // file entries walked, by logical block
}

// Clamp sets every timestamp after epoch on the unmounted UDF volume dev to
// epoch (see the package comment), zeroes its free blocks, and returns how many
// descriptors it rewrote.
func Clamp(dev string, epoch int64) (int, error) {
	f, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	v := &udfVolume{f: f, dev: dev, epoch: epoch, seen: map[uint32]bool{}}
	v.stamp = udfStamp(epoch)
	if err := v.walk(); err != nil {
		return v.changed, fmt.Errorf("udf %s: %w", dev, err)
	}
	if err := f.Sync(); err != nil {
		return v.changed, err
	}
	// UDF has no FITRIM: the agent discards its free blocks itself, which a deleted
	// file's entry (with the time it was deleted) and data are left in.
	free, err := v.free()
	if err != nil {
		return v.changed, fmt.Errorf("udf %s: %w", dev, err)
	}
	if err := blockdev.ZeroRanges(f, free); err != nil {
		return v.changed, fmt.Errorf("udf %s: discard free blocks: %w", dev, err)
	}
	return v.changed, nil
}

// free returns the byte ranges of the device the space bitmap says are free.
func (v *udfVolume) free() ([][2]int64, error) {
	if v.bitmap[0] == 0 {
		return nil, nil // no bitmap: an unallocated space table, which mkudffs does not write
	}
	le := binary.LittleEndian
	if int64(v.bitmap[0]) > 24+(v.partLen+7)/8+v.bs {
		return nil, fmt.Errorf("space bitmap of %d bytes, for a partition of %d blocks", v.bitmap[0], v.partLen)
	}
	var sbd []byte
	for i := uint32(0); int64(i)*v.bs < int64(v.bitmap[0]); i++ {
		b, err := v.readLogical(v.bitmap[1] + i)
		if err != nil {
			return nil, err
		}
		if i == 0 && !udfTagOK(b, udfSBD, v.bitmap[1]) {
			return nil, fmt.Errorf("no space bitmap descriptor at logical block %d", v.bitmap[1])
		}
		sbd = append(sbd, b...)
	}
	bits, nbytes := int64(le.Uint32(sbd[16:])), int64(le.Uint32(sbd[20:]))
	if bits > v.partLen || 24+nbytes > int64(len(sbd)) || (bits+7)/8 > nbytes {
		return nil, fmt.Errorf("space bitmap of %d bits in %d bytes, for a partition of %d blocks", bits, nbytes, v.partLen)
	}
	bitmap := sbd[24 : 24+nbytes]
	var ranges [][2]int64
	for i := int64(0); i < bits; {
		if bitmap[i/8]>>(i%8)&1 == 0 { // allocated
			i++
			continue
		}
		j := i
		for j < bits && bitmap[j/8]>>(j%8)&1 == 1 {
			j++
		}
		ranges = append(ranges, [2]int64{v.logical(uint32(i)), v.logical(uint32(j))})
		i = j
	}
	return ranges, nil
}

func (v *udfVolume) walk() error {
	// The anchor is at block 256 of a volume whose block size is one of these.
	var avdp []byte
	for _, bs := range []int64{512, 1024, 2048, 4096} {
		b := make([]byte, bs)
		if _, err := v.f.ReadAt(b, 256*bs); err != nil {
			continue
		}
		if udfTagOK(b, udfAVDP, 256) {
			v.bs, avdp = bs, b
			break
		}
	}
	if avdp == nil {
		return errors.New("no anchor volume descriptor pointer at block 256")
	}
	le := binary.LittleEndian
	var lvd []byte
	for _, ext := range [][2]uint32{{le.Uint32(avdp[16:]), le.Uint32(avdp[20:])}, {le.Uint32(avdp[24:]), le.Uint32(avdp[28:])}} {
		l, err := v.volumeSequence(ext[0], ext[1])
		if err != nil {
			return err
		}
		if lvd == nil {
			lvd = l
		}
	}
	if lvd == nil || v.partLen == 0 {
		return errors.New("no logical volume or partition descriptor")
	}
	if lbs := le.Uint32(lvd[212:]); int64(lbs) != v.bs {
		return fmt.Errorf("%w: logical block size %d, volume's %d", fsfix.ErrUnsupported, lbs, v.bs)
	}
	// Only a type 1 (physical) partition map is supported: what mkudffs writes for
	// the revisions before 2.50.
	if n := le.Uint32(lvd[268:]); n != 1 || lvd[440] != 1 || le.Uint16(lvd[444:]) != v.partNum {
		return fmt.Errorf("%w: partition maps other than one physical partition (%d maps, first type %d)", fsfix.ErrUnsupported, n, lvd[440])
	}
	if err := v.integritySequence(le.Uint32(lvd[432:]), le.Uint32(lvd[436:])); err != nil {
		return err
	}
	// The file set descriptor: a long_ad in the logical volume's contents use.
	fsdLen, fsdLoc := le.Uint32(lvd[248:])&0x3fffffff, le.Uint32(lvd[252:])
	for i := uint32(0); i*uint32(v.bs) < fsdLen; i++ {
		b, err := v.readLogical(fsdLoc + i)
		if err != nil {
			return err
		}
		id := le.Uint16(b)
		if id == udfTD || !udfTagOK(b, id, fsdLoc+i) {
			break
		}
		if id != udfFSD {
			continue
		}
		if err := v.clamp(b, v.logical(fsdLoc+i), 16); err != nil {
			return err
		}
		// The root directory's ICB, and the system stream directory's.
		for _, at := range []int{400, 464} {
			if le.Uint32(b[at:])&0x3fffffff == 0 {
				continue
			}
			if err := v.entry(le.Uint32(b[at+4:]), 0); err != nil {
				return err
			}
		}
		break
	}
	return nil
}

// volumeSequence clamps the times of a volume descriptor sequence (length in bytes,
// location in sectors) and returns its logical volume descriptor.
func (v *udfVolume) volumeSequence(length, loc uint32) ([]byte, error) {
	le := binary.LittleEndian
	var lvd []byte
	for i := uint32(0); int64(i)*v.bs < int64(length); i++ {
		b := make([]byte, v.bs)
		if _, err := v.f.ReadAt(b, int64(loc+i)*v.bs); err != nil {
			return nil, fmt.Errorf("volume descriptor at %d: %w", loc+i, err)
		}
		id := le.Uint16(b)
		if !udfTagOK(b, id, loc+i) || id == udfTD {
			break
		}
		switch id {
		case udfPVD:
			if err := v.clamp(b, int64(loc+i)*v.bs, 376); err != nil {
				return nil, err
			}
		case udfPD:
			v.partNum = le.Uint16(b[22:])
			v.partStart, v.partLen = int64(le.Uint32(b[188:])), int64(le.Uint32(b[192:]))
			// The partition header descriptor in the contents use, for NSR contents.
			if string(b[25:29]) == "+NSR" {
				v.bitmap = [2]uint32{le.Uint32(b[64:]) & 0x3fffffff, le.Uint32(b[68:])}
			}
		case udfLVD:
			lvd = b
		}
	}
	return lvd, nil
}

// integritySequence clamps the recording times of the integrity descriptors,
// following the chain of extents.
func (v *udfVolume) integritySequence(length, loc uint32) error {
	le := binary.LittleEndian
	for hops := 0; length > 0 && hops < 64; hops++ {
		next := [2]uint32{}
		for i := uint32(0); int64(i)*v.bs < int64(length); i++ {
			b := make([]byte, v.bs)
			if _, err := v.f.ReadAt(b, int64(loc+i)*v.bs); err != nil {
				return fmt.Errorf("integrity descriptor at %d: %w", loc+i, err)
			}
			id := le.Uint16(b)
			if id != udfLVID || !udfTagOK(b, id, loc+i) {
				break
			}
			if err := v.clamp(b, int64(loc+i)*v.bs, 16); err != nil {
				return err
			}
			next = [2]uint32{le.Uint32(b[32:]), le.Uint32(b[36:])}
		}
		length, loc = next[0], next[1]
	}
	return nil
}

// entry clamps the times of the file entry at logical block lb and, for a
// directory, of every entry under it.
func (v *udfVolume) entry(lb uint32, depth int) error {
	if v.seen[lb] {
		return nil // a hard link, or a loop
	}
	v.seen[lb] = true
	if depth > 4096 {
		return errors.New("directories nested over 4096 deep")
	}
	le := binary.LittleEndian
	b, err := v.readLogical(lb)
	if err != nil {
		return err
	}
	id := le.Uint16(b)
	if !udfTagOK(b, id, lb) || id != udfFE && id != udfEFE {
		return fmt.Errorf("no file entry at logical block %d", lb)
	}
	// Times, extended attributes' and allocation descriptors' lengths and the
	// stream directory, by kind of entry.
	times, eaLen, adLen, ads := []int{72, 84, 96}, le.Uint32(b[168:]), le.Uint32(b[172:]), 176
	if id == udfEFE {
		times, eaLen, adLen, ads = []int{80, 92, 104, 116}, le.Uint32(b[208:]), le.Uint32(b[212:]), 216
	}
	if err := v.clamp(b, v.logical(lb), times...); err != nil {
		return err
	}
	if id == udfEFE && le.Uint32(b[152:])&0x3fffffff != 0 { // a stream directory
		if err := v.entry(le.Uint32(b[156:]), depth+1); err != nil {
			return err
		}
	}
	fileType, flags := b[27], le.Uint16(b[34:])
	if fileType != 4 && fileType != 13 { // a directory, a stream directory
		return nil
	}
	start := int64(ads) + int64(eaLen)
	if start+int64(adLen) > int64(len(b)) {
		return fmt.Errorf("file entry at %d: allocation descriptors out of the block", lb)
	}
	var data []byte
	if flags&7 == 3 { // the data in the entry itself
		data = b[start : start+int64(adLen)]
	} else if data, err = v.extents(b[start:start+int64(adLen)], flags&7, le.Uint64(b[56:])); err != nil {
		return fmt.Errorf("directory at %d: %w", lb, err)
	}
	for off := 0; off+38 <= len(data); {
		fid := data[off:]
		if le.Uint16(fid) != udfFID {
			return fmt.Errorf("directory at %d: no file identifier at byte %d", lb, off)
		}
		chars, lfi, liu := fid[18], int(fid[19]), int(le.Uint16(fid[36:]))
		size := (38 + liu + lfi + 3) &^ 3
		if off+size > len(data) {
			return fmt.Errorf("directory at %d: file identifier at byte %d runs past the directory", lb, off)
		}
		if chars&(4|8) == 0 { // neither deleted nor the parent
			if err := v.entry(le.Uint32(fid[24:]), depth+1); err != nil {
				return err
			}
		}
		off += size
	}
	return nil
}

// extents reads a directory's data through its allocation descriptors (short_ad
// or long_ad), following allocation extent descriptors.
func (v *udfVolume) extents(ads []byte, kind uint16, size uint64) ([]byte, error) {
	le := binary.LittleEndian
	adSize := map[uint16]int{0: 8, 1: 16}[kind]
	if adSize == 0 {
		return nil, fmt.Errorf("%w: allocation descriptors of type %d", fsfix.ErrUnsupported, kind)
	}
	if size > 64<<20 {
		return nil, fmt.Errorf("a directory of %d bytes", size)
	}
	var data []byte
	for hops := 0; uint64(len(data)) < size; {
		if len(ads) < adSize {
			return nil, errors.New("allocation descriptors end before the data")
		}
		n, pos := le.Uint32(ads), le.Uint32(ads[4:])
		typ, n := n>>30, n&0x3fffffff
		ads = ads[adSize:]
		if n == 0 {
			return nil, errors.New("allocation descriptors end before the data")
		}
		if typ == 3 { // the next extent of allocation descriptors
			if hops++; hops > 1024 {
				return nil, errors.New("too many allocation extents")
			}
			b, err := v.readLogical(pos)
			if err != nil {
				return nil, err
			}
			l := le.Uint32(b[20:])
			if !udfTagOK(b, udfAED, pos) || 24+int64(l) > v.bs {
				return nil, fmt.Errorf("no allocation extent descriptor at %d", pos)
			}
			ads = b[24 : 24+l]
			continue
		}
		// No more than the directory's size is read, whatever the extent says.
		n = uint32(min(uint64(n), size-uint64(len(data))))
		if typ == 0 { // recorded
			for i := int64(0); i*v.bs < int64(n); i++ {
				b, err := v.readLogical(pos + uint32(i))
				if err != nil {
					return nil, err
				}
				data = append(data, b[:min(int64(n)-i*v.bs, v.bs)]...)
			}
		} else { // not recorded: zeros
			data = append(data, make([]byte, n)...)
		}
	}
	return data[:size], nil
}

func (v *udfVolume) readLogical(lb uint32) ([]byte, error) {
	if int64(lb) >= v.partLen {
		return nil, fmt.Errorf("logical block %d is outside the partition (%d blocks)", lb, v.partLen)
	}
	b := make([]byte, v.bs)
	if _, err := v.f.ReadAt(b, v.logical(lb)); err != nil {
		return nil, fmt.Errorf("logical block %d: %w", lb, err)
	}
	return b, nil
}

// logical returns the device offset of a logical block of the partition.
func (v *udfVolume) logical(lb uint32) int64 { return (v.partStart + int64(lb)) * v.bs }

// clamp sets the timestamps at the given offsets of the descriptor b, read from
// byte off of the device, to the epoch where they are after it, and writes it back
// with its CRC and tag checksum if it changed.
func (v *udfVolume) clamp(b []byte, off int64, at ...int) error {
	epoch := time.Unix(v.epoch, 0)
	changed := false
	for _, at := range at {
		if t, ok := udfTime(b[at : at+12]); ok && t.After(epoch) {
			copy(b[at:], v.stamp[:])
			changed = true
		}
	}
	if !changed {
		return nil
	}
	le := binary.LittleEndian
	crcLen := int(le.Uint16(b[10:]))
	if 16+crcLen > len(b) {
		return fmt.Errorf("descriptor at byte %d: CRC length %d past its block", off, crcLen)
	}
	le.PutUint16(b[8:], udfCRC(b[16:16+crcLen]))
	b[4] = udfTagSum(b)
	v.changed++
	_, err := v.f.WriteAt(b, off)
	return err
}

// udfTime decodes a timestamp (ECMA-167 1/7.3); ok is false for one that is not a
// valid time (all zero: none recorded), which clamp leaves alone.
func udfTime(s []byte) (t time.Time, ok bool) {
	le := binary.LittleEndian
	typeTZ := le.Uint16(s)
	tz := int(int16(typeTZ<<4) >> 4) // minutes east of UTC, 12-bit two's complement
	if typeTZ>>12 != 1 || tz == -2047 {
		tz = 0 // not local time, or no offset given: UTC
	}
	if tz < -1440 || tz > 1440 || s[4] < 1 || s[4] > 12 || s[5] < 1 || s[5] > 31 {
		return time.Time{}, false
	}
	ns := int(s[9])*10_000_000 + int(s[10])*100_000 + int(s[11])*1000
	return time.Date(int(int16(le.Uint16(s[2:]))), time.Month(s[4]), int(s[5]), int(s[6]), int(s[7]), int(s[8]), ns, time.FixedZone("", tz*60)), true
}

// udfStamp encodes a Unix time as a UDF timestamp in UTC.
func udfStamp(epoch int64) [12]byte {
	t := time.Unix(epoch, 0).UTC()
	var s [12]byte
	binary.LittleEndian.PutUint16(s[0:], 1<<12) // local time, offset 0
	binary.LittleEndian.PutUint16(s[2:], uint16(t.Year()))
	s[4], s[5], s[6], s[7], s[8] = byte(t.Month()), byte(t.Day()), byte(t.Hour()), byte(t.Minute()), byte(t.Second())
	return s
}

// udfTagOK says whether b starts with a descriptor tag of the given identifier,
// with a good checksum, recorded at location loc.
func udfTagOK(b []byte, id uint16, loc uint32) bool {
	le := binary.LittleEndian
	return len(b) >= 16 && le.Uint16(b) == id && udfTagSum(b) == b[4] && le.Uint32(b[12:]) == loc
}

func udfTagSum(b []byte) byte {
	var s byte
	for i := range 16 {
		if i != 4 {
			s += b[i]
		}
	}
	return s
}

// udfCRC is the CRC-ITU-T (polynomial 0x1021, initial 0) of ECMA-167 1/7.2.6.
func udfCRC(b []byte) uint16 {
	var crc uint16
	for _, c := range b {
		crc ^= uint16(c) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
