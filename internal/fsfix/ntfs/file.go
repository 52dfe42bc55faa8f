package ntfs

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"
)

// ClampFileTimes clamps, on a volume mounted through ntfs-3g, the four times NTFS
// keeps of the file p (creation, data change, access, MFT record change; ntfs-3g
// shows them as the system.ntfs_times attribute) to the epoch: the creation time
// is the clock's when ntfs-3g created the file, to 100 ns, and utimensat cannot
// set it.
func ClampFileTimes(p string, epoch int64) error {
	var b [32]byte
	n, err := unix.Lgetxattr(p, "system.ntfs_times", b[:])
	if err != nil || n != len(b) {
		return fmt.Errorf("ntfs times of %s: %v (%d bytes)", p, err, n)
	}
	limit := uint64(epoch+ntfsEpoch) * 10_000_000
	dirty := false
	for i := 0; i < len(b); i += 8 {
		if binary.LittleEndian.Uint64(b[i:]) > limit {
			binary.LittleEndian.PutUint64(b[i:], limit)
			dirty = true
		}
	}
	if !dirty {
		return nil
	}
	if err := unix.Lsetxattr(p, "system.ntfs_times", b[:], 0); err != nil {
		return fmt.Errorf("set ntfs times of %s: %w", p, err)
	}
	return nil
}
