// Package fat makes FAT32 filesystems reproducible: it clamps the times of their
// directory entries to the epoch (Clamp). Their serial is given to mkfs.fat.
package fat

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"vmb.dev/vmb/internal/fsfix/blockdev"
)

// Clamp walks the directories of an unmounted FAT32 filesystem and sets every
// time in a directory entry that is after the epoch to the epoch. The kernel stamps
// a new directory's "." and ".." entries with the clock when it creates it, and
// nothing can set them later; the clock, set to the epoch just before, may have run
// past the 10 ms FAT keeps when the host was busy. It returns how many entries it
// changed. Other FAT variants are left alone.
func Clamp(dev string, epoch int64) (int, error) {
	f, bs, err := blockdev.OpenBootSector(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	le := binary.LittleEndian
	bps := int64(le.Uint16(bs[11:]))
	spc := int64(bs[13])
	reserved := int64(le.Uint16(bs[14:]))
	fats := int64(bs[16])
	fatSize := int64(le.Uint32(bs[36:]))
	if bps == 0 || spc == 0 || le.Uint16(bs[22:]) != 0 || le.Uint16(bs[17:]) != 0 || fatSize == 0 {
		return 0, nil // not FAT32
	}
	clusterSize := bps * spc
	dataStart := (reserved + fats*fatSize) * bps
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if (reserved+fatSize)*bps > size {
		return 0, fmt.Errorf("%s: a FAT of %d sectors past the device's end", dev, fatSize)
	}
	fat := make([]byte, fatSize*bps)
	if _, err := f.ReadAt(fat, reserved*bps); err != nil {
		return 0, err
	}
	next := func(c uint32) uint32 { return le.Uint32(fat[4*int64(c):]) & 0x0fffffff }
	maxCluster := uint32(len(fat) / 4)

	t := time.Unix(epoch, 0).UTC()
	eDate := uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	eTime := uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	after := func(date, tm uint16) bool { return date > eDate || date == eDate && tm > eTime }

	changed := 0
	queue := []uint32{le.Uint32(bs[44:])} // the root directory's first cluster
	seen := map[uint32]bool{}
	buf := make([]byte, clusterSize)
	for len(queue) > 0 {
		c := queue[0]
		queue = queue[1:]
		for ; c >= 2 && c < maxCluster && !seen[c]; c = next(c) {
			seen[c] = true
			off := dataStart + int64(c-2)*clusterSize
			if _, err := f.ReadAt(buf, off); err != nil {
				return changed, err
			}
			dirty := false
			for e := 0; e+32 <= len(buf); e += 32 {
				ent := buf[e : e+32]
				if ent[0] == 0 {
					break // the end of the directory
				}
				if ent[11] == 0x0f {
					continue // a long name's part: no times
				}
				if ent[11]&0x10 != 0 && ent[0] != 0xe5 && ent[0] != '.' {
					queue = append(queue, uint32(le.Uint16(ent[20:]))<<16|uint32(le.Uint16(ent[26:])))
				}
				fix := false
				if cd, ct := le.Uint16(ent[16:]), le.Uint16(ent[14:]); after(cd, ct) || cd == eDate && ct == eTime && ent[13] != 0 {
					le.PutUint16(ent[16:], eDate)
					le.PutUint16(ent[14:], eTime)
					ent[13] = 0
					fix = true
				}
				if md, mt := le.Uint16(ent[24:]), le.Uint16(ent[22:]); after(md, mt) {
					le.PutUint16(ent[24:], eDate)
					le.PutUint16(ent[22:], eTime)
					fix = true
				}
				if le.Uint16(ent[18:]) > eDate {
					le.PutUint16(ent[18:], eDate)
					fix = true
				}
				if fix {
					changed++
					dirty = true
				}
			}
			if dirty {
				if _, err := f.WriteAt(buf, off); err != nil {
					return changed, err
				}
			}
		}
	}
	if changed > 0 {
		if err := f.Sync(); err != nil {
			return changed, err
		}
	}
	return changed, nil
}
