// Package imagefmt converts a raw disk into the image formats vmb exports (qcow2,
// vmdk, vdi, vhdx) with qemu-img, and makes them reproducible: qemu-img writes
// identifiers drawn at random into some formats, which are replaced with values
// derived from the export's node key (vmexec/proto.Derive).
package imagefmt

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"

	"vmb.dev/vmb/vmexec/proto"
)

// Formats are the formats Convert writes, raw included (a copy is not made: raw is
// the disk itself).
var Formats = []string{"raw", "qcow2", "vmdk", "vdi", "vhdx"}

// Convert writes the raw disk at raw as an image of format at dst, with qemu-img
// (its command line and output to log), and sets its identifiers from seed. The
// same disk and seed give the same bytes.
func Convert(ctx context.Context, raw, dst, format, seed string, log io.Writer) error {
	args := []string{"convert", "-f", "raw", "-O", format}
	// Options that keep the image the same from run to run.
	switch format {
	case "vmdk":
		args = append(args, "-o", "subformat=monolithicSparse")
	case "vhdx":
		args = append(args, "-o", "subformat=dynamic")
	}
	args = append(args, raw, dst)
	cmd := exec.CommandContext(ctx, "qemu-img", args...)
	cmd.Stdout, cmd.Stderr = log, log
	fmt.Fprintf(log, "+ qemu-img %s\n", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("qemu-img convert: %w", err)
	}
	return fixIdentifiers(dst, format, seed)
}

// qemu-img writes identifiers drawn at random into some formats: the same disk
// exported twice would give two images. fixIdentifiers replaces them, in place,
// with values derived from seed (the export's node key), so an export is as
// reproducible as the disk it exports. qcow2 and raw have none.
func fixIdentifiers(path, format, seed string) error {
	switch format {
	case "vmdk":
		return fixVMDK(path, seed)
	case "vdi":
		return fixVDI(path, seed)
	case "vhdx":
		return fixVHDX(path, seed)
	}
	return nil
}

// derived returns n bytes derived from seed (the export's node key) for the
// identifier named what.
func derived(seed, what string, n int) []byte { return proto.Derive(seed, "export "+what, n) }

// derivedUUID returns a version 4 UUID derived from seed, as VDI stores it.
func derivedUUID(seed, what string) []byte { return proto.DeriveUUID(seed, "export "+what) }

var vmdkCID = regexp.MustCompile(`(?m)^CID=[0-9a-fA-F]{1,8}$`)

// fixVMDK sets the content ID of a monolithic sparse VMDK's embedded descriptor.
// qemu-img prints the random CID without leading zeros, so its length varies: the
// descriptor's text is rewritten with an eight-digit CID inside the sectors the
// header gives it, and the rest of those sectors zeroed, so the result does not
// depend on the random ID it replaces.
func fixVMDK(path, seed string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var hdr [44]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil {
		return fmt.Errorf("vmdk %s: %w", path, err)
	}
	if string(hdr[:4]) != "KDMV" {
		return fmt.Errorf("vmdk %s: not a monolithic sparse VMDK", path)
	}
	off := int64(binary.LittleEndian.Uint64(hdr[28:])) * 512
	size := int64(binary.LittleEndian.Uint64(hdr[36:])) * 512
	if off < 512 || size <= 0 || size > 1<<20 {
		return fmt.Errorf("vmdk %s: descriptor at %d, %d bytes: not one qemu-img writes", path, off, size)
	}
	desc := make([]byte, size)
	if _, err := f.ReadAt(desc, off); err != nil {
		return fmt.Errorf("vmdk %s: descriptor: %w", path, err)
	}
	text := desc
	if i := bytes.IndexByte(desc, 0); i >= 0 {
		text = desc[:i]
	}
	loc := vmdkCID.FindIndex(text)
	if loc == nil {
		return fmt.Errorf("vmdk %s: no CID in the descriptor", path)
	}
	cid := binary.BigEndian.Uint32(derived(seed, "vmdk cid", 4))
	var out bytes.Buffer
	out.Write(text[:loc[0]])
	fmt.Fprintf(&out, "CID=%08x", cid)
	out.Write(text[loc[1]:])
	if int64(out.Len()) >= size {
		return fmt.Errorf("vmdk %s: descriptor does not fit its %d bytes", path, size)
	}
	clear(desc)
	copy(desc, out.Bytes())
	if _, err := f.WriteAt(desc, off); err != nil {
		return err
	}
	return f.Close()
}

// fixVDI sets the image's creation and modification UUIDs in the VDI header.
func fixVDI(path, seed string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 512)
	if _, err := f.ReadAt(head, 0); err != nil {
		return fmt.Errorf("vdi %s: %w", path, err)
	}
	if !bytes.HasPrefix(head, []byte("<<< QEMU VM Virtual Disk Image >>>")) || head[0x40] != 0x7f || head[0x41] != 0x10 {
		return fmt.Errorf("vdi %s: not a VDI image qemu-img wrote", path)
	}
	u := derivedUUID(seed, "vdi")
	for _, off := range []int64{0x188, 0x198} { // uuidCreate, uuidModify
		if _, err := f.WriteAt(u, off); err != nil {
			return err
		}
	}
	return f.Close()
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fixVHDX replaces what qemu-img draws at random in a VHDX image: in both headers
// (at 64 and 128 KiB, each checksummed) the sequence number, which it starts at
// random, and the file and data write GUIDs; the GUID of the log entry it writes
// (and the entry's checksum); and the disk's Page 83 GUID in the metadata region.
func fixVHDX(path, seed string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	le := binary.LittleEndian
	read := func(off int64, n int) ([]byte, error) {
		b := make([]byte, n)
		if _, err := f.ReadAt(b, off); err != nil {
			return nil, fmt.Errorf("vhdx %s at %d: %w", path, off, err)
		}
		return b, nil
	}
	sum := func(b []byte, at int) {
		le.PutUint32(b[at:], 0)
		le.PutUint32(b[at:], crc32.Checksum(b, castagnoli))
	}
	var headers [2][]byte
	for i := range headers {
		h, err := read(int64(i+1)<<16, 4096)
		if err != nil {
			return err
		}
		if string(h[:4]) != "head" {
			return fmt.Errorf("vhdx %s: no header %d", path, i+1)
		}
		headers[i] = h
	}
	// The sequence numbers keep their order (the greater is the current header).
	first := min(le.Uint64(headers[0][8:]), le.Uint64(headers[1][8:]))
	var logOff int64
	for i, h := range headers {
		le.PutUint64(h[8:], le.Uint64(h[8:])-first+1)
		copy(h[16:32], derived(seed, "vhdx file write guid", 16))
		copy(h[32:48], derived(seed, "vhdx data write guid", 16))
		if !bytes.Equal(h[48:64], make([]byte, 16)) {
			return fmt.Errorf("vhdx %s: a log to replay: not an image qemu-img just wrote", path)
		}
		logOff = int64(le.Uint64(h[72:]))
		sum(h, 4)
		if _, err := f.WriteAt(h, int64(i+1)<<16); err != nil {
			return err
		}
	}
	// The log: with no log GUID in the headers, nothing replays it, but qemu-img
	// leaves an entry there with a GUID of its own.
	if entry, err := read(logOff, 64); err == nil && string(entry[:4]) == "loge" {
		n := le.Uint32(entry[8:])
		if n < 64 || n > 1<<20 {
			return fmt.Errorf("vhdx %s: log entry of %d bytes", path, n)
		}
		if entry, err = read(logOff, int(n)); err != nil {
			return err
		}
		copy(entry[32:48], derived(seed, "vhdx log guid", 16))
		sum(entry, 4)
		if _, err := f.WriteAt(entry, logOff); err != nil {
			return err
		}
	}
	// The metadata region, from the region table at 192 KiB.
	rt, err := read(192<<10, 64<<10)
	if err != nil {
		return err
	}
	metadataRegion := []byte{0x06, 0xa2, 0x7c, 0x8b, 0x90, 0x47, 0x9a, 0x4b, 0xb8, 0xfe, 0x57, 0x5f, 0x05, 0x0f, 0x88, 0x6e}
	page83 := []byte{0xab, 0x12, 0xca, 0xbe, 0xe6, 0xb2, 0x23, 0x45, 0x93, 0xef, 0xc3, 0x09, 0xe0, 0x00, 0xc7, 0x46}
	for i := range min(int(le.Uint32(rt[8:])), 2047) {
		e := rt[16+32*i : 48+32*i]
		if !bytes.Equal(e[:16], metadataRegion) {
			continue
		}
		region := int64(le.Uint64(e[16:]))
		table, err := read(region, 64<<10)
		if err != nil {
			return err
		}
		if string(table[:8]) != "metadata" {
			return fmt.Errorf("vhdx %s: no metadata table at %d", path, region)
		}
		for j := range min(int(le.Uint16(table[10:])), 2047) {
			m := table[32+32*j : 64+32*j]
			if bytes.Equal(m[:16], page83) && le.Uint32(m[20:]) == 16 {
				if _, err := f.WriteAt(derived(seed, "vhdx page 83", 16), region+int64(le.Uint32(m[16:]))); err != nil {
					return err
				}
				return f.Close()
			}
		}
	}
	return fmt.Errorf("vhdx %s: no Page 83 item in the metadata", path)
}
