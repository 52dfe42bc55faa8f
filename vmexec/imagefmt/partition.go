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

// Table is a disk's partition table as Partitions reads it.
type Table struct {
	Scheme     string      // "gpt" or "msdos"
	Partitions []Partition // in the order of their numbers
	Meta       []Region    // where the table itself lies on the disk
}

// Partition is one partition of a Table.
type Partition struct {
	Number int // as PartitionExtent numbers them
	Extent
	Type string // gpt: the type GUID; msdos: the type byte, in hex
	Name string // gpt: the partition's name
}

// Region is a named byte range of a disk that holds partitioning metadata: "MBR",
// "protective MBR", "GPT header", "GPT entries", "backup GPT entries", "backup
// GPT header", "EBR".
type Region struct {
	Name string
	Extent
}

// Partitions reads the partition table of the disk r of size bytes: every
// partition, and where the table's own structures lie. A disk without a table
// gives an error. Every offset read is checked against the disk; partitions that
// do not lie on it are left out.
func Partitions(r io.ReaderAt, size int64) (*Table, error) {
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		return nil, fmt.Errorf("read the partition table: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil, errors.New("the disk has no partition table")
	}
	var t *Table
	var err error
	if mbr[446+4] == 0xee {
		t, err = gptTable(r, size)
	} else {
		t, err = msdosTable(r, mbr, size)
	}
	if err != nil {
		return nil, err
	}
	ps := t.Partitions[:0]
	for _, p := range t.Partitions {
		if p.Len > 0 && p.Off >= 0 && p.Off <= size && p.Len <= size-p.Off {
			ps = append(ps, p)
		}
	}
	t.Partitions = ps
	return t, nil
}

func gptTable(r io.ReaderAt, size int64) (*Table, error) {
	h := make([]byte, 92)
	if _, err := r.ReadAt(h, sector); err != nil {
		return nil, fmt.Errorf("read the gpt header: %w", err)
	}
	if !bytes.Equal(h[:8], []byte("EFI PART")) {
		return nil, errors.New("the gpt header is missing")
	}
	le := binary.LittleEndian
	alt := le.Uint64(h[32:])
	entries := le.Uint64(h[72:])
	count := uint64(le.Uint32(h[80:]))
	esize := uint64(le.Uint32(h[84:]))
	sectors := uint64(size) / sector
	if esize < 128 || esize > 4096 || count > 4096 || entries == 0 || entries >= sectors || count*esize > uint64(size)-entries*sector {
		return nil, fmt.Errorf("the gpt header's entry array (%d entries of %d bytes at sector %d) is not on the disk", count, esize, entries)
	}
	arrayLen := int64((count*esize + sector - 1) / sector * sector)
	t := &Table{Scheme: "gpt", Meta: []Region{
		{"protective MBR", Extent{0, sector}},
		{"GPT header", Extent{sector, sector}},
		{"GPT entries", Extent{int64(entries) * sector, arrayLen}},
	}}
	if alt > 1 && alt < sectors && int64(alt)*sector >= arrayLen {
		t.Meta = append(t.Meta,
			Region{"backup GPT entries", Extent{int64(alt)*sector - arrayLen, arrayLen}},
			Region{"backup GPT header", Extent{int64(alt) * sector, sector}})
	}
	arr := make([]byte, count*esize)
	if _, err := r.ReadAt(arr, int64(entries)*sector); err != nil {
		return nil, fmt.Errorf("read the gpt entries: %w", err)
	}
	for i := range count {
		ent := arr[i*esize : i*esize+128]
		if bytes.Equal(ent[:16], make([]byte, 16)) {
			continue
		}
		first, last := le.Uint64(ent[32:]), le.Uint64(ent[40:])
		if last < first || last >= sectors {
			continue
		}
		t.Partitions = append(t.Partitions, Partition{
			Number: int(i) + 1,
			Extent: Extent{Off: int64(first) * sector, Len: int64(last-first+1) * sector},
			Type:   guid(ent[:16]),
			Name:   utf16le(ent[56:128]),
		})
	}
	return t, nil
}

// guid formats a gpt GUID (mixed-endian) as text.
func guid(b []byte) string {
	le := binary.LittleEndian
	return fmt.Sprintf("%08X-%04X-%04X-%X-%X", le.Uint32(b), le.Uint16(b[4:]), le.Uint16(b[6:]), b[8:10], b[10:16])
}

// utf16le decodes a NUL-padded UTF-16LE name (the BMP is enough for names).
func utf16le(b []byte) string {
	var rs []rune
	for i := 0; i+1 < len(b); i += 2 {
		c := rune(binary.LittleEndian.Uint16(b[i:]))
		if c == 0 {
			break
		}
		rs = append(rs, c)
	}
	return string(rs)
}

func msdosTable(r io.ReaderAt, mbr []byte, size int64) (*Table, error) {
	t := &Table{Scheme: "msdos", Meta: []Region{{"MBR", Extent{0, sector}}}}
	es := mbrEntries(mbr)
	var ext mbrEntry
	for i, e := range es {
		if e.typ == 0 || e.count == 0 {
			continue
		}
		if extended(e.typ) {
			ext = e
			continue
		}
		t.Partitions = append(t.Partitions, Partition{Number: i + 1, Extent: Extent{e.start * sector, e.count * sector}, Type: fmt.Sprintf("%02x", e.typ)})
	}
	if ext.typ == 0 {
		return t, nil
	}
	ebr := ext.start
	buf := make([]byte, 512)
	for n := 5; n < 5+128; n++ { // a chain that loops ends here
		if ebr*sector < 0 || ebr*sector+sector > size {
			break
		}
		if _, err := r.ReadAt(buf, ebr*sector); err != nil {
			return nil, fmt.Errorf("read the extended boot record at sector %d: %w", ebr, err)
		}
		if buf[510] != 0x55 || buf[511] != 0xaa {
			break
		}
		t.Meta = append(t.Meta, Region{"EBR", Extent{ebr * sector, sector}})
		links := mbrEntries(buf)
		if links[0].typ != 0 && links[0].count != 0 {
			t.Partitions = append(t.Partitions, Partition{Number: n, Extent: Extent{(ebr + links[0].start) * sector, links[0].count * sector}, Type: fmt.Sprintf("%02x", links[0].typ)})
		}
		if !extended(links[1].typ) || links[1].start == 0 {
			break
		}
		ebr = ext.start + links[1].start
	}
	return t, nil
}
