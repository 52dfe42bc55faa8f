package appliance

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// cpioEntry is one file of an initramfs.
type cpioEntry struct {
	Name string // without a leading slash
	Mode uint32 // type and permission bits, as in stat(2)
	Data []byte // content, or the target of a symlink
}

const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
)

// writeCPIO writes entries as a "newc" cpio archive, deterministically: sorted by
// name, parent directories first, owner 0, mtime 0, inodes numbered in order.
func writeCPIO(w io.Writer, entries []cpioEntry) error {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	for i := 1; i < len(entries); i++ {
		if entries[i].Name == entries[i-1].Name {
			return fmt.Errorf("cpio: %s appears twice", entries[i].Name)
		}
	}
	write := func(ino int, name string, mode uint32, data []byte) error {
		nlink := 1
		if mode&0o170000 == modeDir {
			nlink = 2
		}
		hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
		buf := []byte(hdr + name + "\x00")
		buf = append(buf, make([]byte, pad4(len(buf)))...)
		buf = append(buf, data...)
		buf = append(buf, make([]byte, pad4(len(data)))...)
		_, err := w.Write(buf)
		return err
	}
	for i, e := range entries {
		if strings.HasPrefix(e.Name, "/") {
			return fmt.Errorf("cpio: %s: names are relative", e.Name)
		}
		if err := write(i+1, e.Name, e.Mode, e.Data); err != nil {
			return err
		}
	}
	return write(0, "TRAILER!!!", 0, nil)
}

func pad4(n int) int { return (4 - n%4) % 4 }
