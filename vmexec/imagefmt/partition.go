package imagefmt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Extent is where a partition lies on its disk, in bytes.
type Extent struct{ Off, Len int64 }

// PartitionExtent returns where partition n (numbered as sfdisk and Linux number
// them: a gpt entry's index plus one; msdos primaries 1-4, logical partitions 5 on)
// lies on the disk r of size bytes, read from its partition table. Sectors are 512
// bytes, as vmb's disks have them. Every offset read is checked against the disk.
func PartitionExtent(r io.ReaderAt, size int64, n int) (Extent, error) {
	if n < 1 {
		return Extent{}, fmt.Errorf("partition %d: partitions are numbered from 1", n)
	}
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return Extent{}, fmt.Errorf("read the partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return Extent{}, errors.New("the disk has no partition table")
	}
	var e Extent
	var err error
	if mbr[446+4] == 0xee { // the protective MBR of a gpt disk
		e, err = gptExtent(r, size, n)
	} else {
		e, err = msdosExtent(r, mbr, n)
	}
	if err != nil {
		return Extent{}, err
	}
	if e.Len <= 0 || e.Off < 0 || e.Off > size || e.Len > size-e.Off {
		return Extent{}, fmt.Errorf("partition %d (%d bytes at %d) does not lie on the disk (%d bytes)", n, e.Len, e.Off, size)
	}
	return e, nil
}

const sector = 512

func gptExtent(r io.ReaderAt, size int64, n int) (Extent, error) {
	h := make([]byte, 92)
	if _, err := r.ReadAt(h, sector); err != nil {
		return Extent{}, fmt.Errorf("read the gpt header: %w", err)
	}
	if !bytes.Equal(h[:8], []byte("EFI PART")) {
		return Extent{}, errors.New("the gpt header is missing")
	}
	entries := int64(binary.LittleEndian.Uint64(h[72:]))
	count := binary.LittleEndian.Uint32(h[80:])
	esize := int64(binary.LittleEndian.Uint32(h[84:]))
	if uint32(n) > count || esize < 128 || esize > 4096 {
		return Extent{}, fmt.Errorf("partition %d: the gpt has %d entries", n, count)
	}
	at := entries*sector + int64(n-1)*esize
	if entries <= 0 || at < 0 || at+128 > size {
		return Extent{}, fmt.Errorf("partition %d: its gpt entry is off the disk", n)
	}
	ent := make([]byte, 128)
	if _, err := r.ReadAt(ent, at); err != nil {
		return Extent{}, fmt.Errorf("read gpt entry %d: %w", n, err)
	}
	if bytes.Equal(ent[:16], make([]byte, 16)) {
		return Extent{}, fmt.Errorf("partition %d does not exist", n)
	}
	first, last := binary.LittleEndian.Uint64(ent[32:]), binary.LittleEndian.Uint64(ent[40:])
	if last < first || last >= uint64(size)/sector {
		return Extent{}, fmt.Errorf("partition %d: sectors %d to %d are not on the disk", n, first, last)
	}
	return Extent{Off: int64(first) * sector, Len: int64(last-first+1) * sector}, nil
}

type mbrEntry struct {
	typ          byte
	start, count int64
}

func mbrEntries(b []byte) [4]mbrEntry {
	var es [4]mbrEntry
	for i := range es {
		p := b[446+16*i:]
		es[i] = mbrEntry{typ: p[4], start: int64(binary.LittleEndian.Uint32(p[8:])), count: int64(binary.LittleEndian.Uint32(p[12:]))}
	}
	return es
}

func extended(typ byte) bool { return typ == 0x05 || typ == 0x0f || typ == 0x85 }

func msdosExtent(r io.ReaderAt, mbr []byte, n int) (Extent, error) {
	es := mbrEntries(mbr)
	if n <= 4 {
		e := es[n-1]
		if e.typ == 0 || e.count == 0 {
			return Extent{}, fmt.Errorf("partition %d does not exist", n)
		}
		return Extent{Off: e.start * sector, Len: e.count * sector}, nil
	}
	var ext mbrEntry
	for _, e := range es {
		if extended(e.typ) {
			ext = e
		}
	}
	if ext.typ == 0 {
		return Extent{}, fmt.Errorf("partition %d: the disk has no extended partition", n)
	}
	// Each EBR holds a logical partition (relative to the EBR) and a link to the
	// next EBR (relative to the extended partition's start).
	ebr := ext.start
	buf := make([]byte, 512)
	for i := 5; i < 5+128; i++ { // a chain that loops ends here
		if _, err := r.ReadAt(buf, ebr*sector); err != nil {
			return Extent{}, fmt.Errorf("read the extended boot record at sector %d: %w", ebr, err)
		}
		if buf[510] != 0x55 || buf[511] != 0xaa {
			return Extent{}, fmt.Errorf("partition %d: the extended boot record at sector %d is not one", n, ebr)
		}
		links := mbrEntries(buf)
		if i == n {
			if links[0].typ == 0 || links[0].count == 0 {
				return Extent{}, fmt.Errorf("partition %d does not exist", n)
			}
			return Extent{Off: (ebr + links[0].start) * sector, Len: links[0].count * sector}, nil
		}
		if !extended(links[1].typ) || links[1].start == 0 {
			break
		}
		ebr = ext.start + links[1].start
	}
	return Extent{}, fmt.Errorf("partition %d does not exist", n)
}
