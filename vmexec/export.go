package vmexec

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"regexp"

	"lukechampine.com/blake3"
)

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
	}
	return nil
}

// derived returns n bytes derived from seed for the identifier named what.
func derived(seed, what string, n int) []byte {
	out := make([]byte, n)
	h := blake3.New(n, nil)
	h.Write([]byte("vmb export " + what + "\x00" + seed))
	return h.Sum(out[:0])
}

// derivedUUID returns a version 4 UUID derived from seed, as VDI stores it.
func derivedUUID(seed, what string) []byte {
	u := derived(seed, what, 16)
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

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
