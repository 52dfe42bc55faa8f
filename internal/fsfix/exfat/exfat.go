// Package exfat makes exFAT filesystems reproducible: it clamps the times of
// their directory entry sets to the epoch (Clamp). Their serial is set by
// tune.exfat, which the agent runs.
package exfat

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"vmb.dev/vmb/internal/fsfix/blockdev"
)

// Clamp walks the directories of an unmounted exFAT filesystem and sets
// every time in a file's directory entry set that is after the epoch to the epoch,
// then the set's checksum. exFAT keeps a creation time, to 10 ms, that nothing
// can set later: the agent sets the clock to the epoch before it creates each
// entry, but on a busy host the clock may have run 10 ms or more before the kernel
// reads it. It returns how many entry sets it changed.
func Clamp(dev string, epoch int64) (int, error) {
	f, bs, err := blockdev.OpenBootSector(dev)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if string(bs[3:11]) != "EXFAT   " {
		return 0, fmt.Errorf("exfat %s: no exFAT boot sector", dev)
	}
	le := binary.LittleEndian
	sectorShift, clusterShift := bs[108], bs[109]
	if sectorShift < 9 || sectorShift > 12 || clusterShift > 25-sectorShift {
		return 0, fmt.Errorf("exfat %s: sector or cluster size out of range", dev)
	}
	sector := int64(1) << sectorShift
	clusterSize := sector << clusterShift
	fatOff := int64(le.Uint32(bs[80:])) * sector
	heap := int64(le.Uint32(bs[88:])) * sector
	count := le.Uint32(bs[92:])
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, err
	}
	if fatOff+4*(int64(count)+2) > size {
		return 0, fmt.Errorf("exfat %s: a FAT of %d clusters past the device's end", dev, count)
	}
	fat := make([]byte, 4*(int64(count)+2))
	if _, err := f.ReadAt(fat, fatOff); err != nil {
		return 0, fmt.Errorf("exfat %s: FAT: %w", dev, err)
	}

	t := time.Unix(epoch, 0).UTC()
	eStamp := uint32(t.Year()-1980)<<25 | uint32(t.Month())<<21 | uint32(t.Day())<<16 |
		uint32(t.Hour())<<11 | uint32(t.Minute())<<5 | uint32(t.Second()/2)
	// A time as a number that orders: the stamp, then the 10 ms increment (which
	// adds up to 1.99 s to the stamp's two-second resolution).
	after := func(stamp uint32, cs byte) bool {
		return stamp > eStamp || stamp == eStamp && cs > byte(t.Second()%2*100)
	}

	// A directory: its clusters, from the FAT or contiguous (NoFatChain).
	type dir struct {
		first   uint32
		length  int64 // bytes; 0: follow the FAT
		noChain bool
	}
	clustersOf := func(d dir) ([]uint32, error) {
		var cs []uint32
		if d.noChain {
			for i := int64(0); i*clusterSize < d.length; i++ {
				if c := int64(d.first) + i; c < 2 || c >= int64(count)+2 {
					return nil, fmt.Errorf("exfat %s: cluster %d out of range", dev, c)
				}
				cs = append(cs, d.first+uint32(i))
			}
			return cs, nil
		}
		seen := map[uint32]bool{}
		for c := d.first; c >= 2 && c < count+2; c = le.Uint32(fat[4*int64(c):]) {
			if seen[c] {
				return nil, fmt.Errorf("exfat %s: a loop in the FAT at cluster %d", dev, c)
			}
			seen[c] = true
			cs = append(cs, c)
		}
		return cs, nil
	}

	changed := 0
	queue := []dir{{first: le.Uint32(bs[96:])}}
	walked := map[uint32]bool{} // directories, by first cluster: a loop is walked once
	for len(queue) > 0 && len(queue) < 1<<20 {
		d := queue[0]
		queue = queue[1:]
		if walked[d.first] {
			continue
		}
		walked[d.first] = true
		clusters, err := clustersOf(d)
		if err != nil {
			return changed, err
		}
		buf := make([]byte, int64(len(clusters))*clusterSize)
		for i, c := range clusters {
			if c < 2 || c >= count+2 {
				return changed, fmt.Errorf("exfat %s: cluster %d out of range", dev, c)
			}
			if _, err := f.ReadAt(buf[int64(i)*clusterSize:][:clusterSize], heap+int64(c-2)*clusterSize); err != nil {
				return changed, err
			}
		}
		dirty := false
		for e := 0; e+32 <= len(buf); e += 32 {
			typ := buf[e]
			if typ == 0 {
				break // the end of the directory
			}
			if typ != 0x85 {
				continue // not a file's entry set, or not in use
			}
			n := 1 + int(buf[e+1])
			if n < 2 || e+32*n > len(buf) {
				return changed, fmt.Errorf("exfat %s: a file entry set that does not fit its directory", dev)
			}
			set := buf[e : e+32*n]
			if set[32] == 0xc0 && le.Uint16(set[4:])&0x10 != 0 { // a directory: its stream extension
				queue = append(queue, dir{first: le.Uint32(set[32+20:]), length: int64(le.Uint64(set[32+24:])), noChain: set[33]&2 != 0})
			}
			fix := false
			// create: stamp at 8, 10 ms at 20; modify: 12 and 21; access: 16, none.
			for _, at := range [][2]int{{8, 20}, {12, 21}, {16, -1}} {
				var cs byte
				if at[1] >= 0 {
					cs = set[at[1]]
				}
				if after(le.Uint32(set[at[0]:]), cs) {
					le.PutUint32(set[at[0]:], eStamp)
					if at[1] >= 0 {
						set[at[1]] = byte(t.Second() % 2 * 100)
					}
					fix = true
				}
			}
			if fix {
				le.PutUint16(set[2:], exfatSetChecksum(set))
				changed++
				dirty = true
			}
			e += 32 * (n - 1)
		}
		if !dirty {
			continue
		}
		for i, c := range clusters {
			if _, err := f.WriteAt(buf[int64(i)*clusterSize:][:clusterSize], heap+int64(c-2)*clusterSize); err != nil {
				return changed, err
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

// exfatSetChecksum is the checksum of a file's directory entry set, over every byte
// but the checksum's own two.
func exfatSetChecksum(set []byte) uint16 {
	var sum uint16
	for i, b := range set {
		if i == 2 || i == 3 {
			continue
		}
		sum = (sum<<15 | sum>>1) + uint16(b)
	}
	return sum
}
