package lang

import (
	"fmt"
	"os"
	"path/filepath"
)

// writeAtomic writes b to path through a temporary file and a rename, creating the
// directory if need be, so that a reader sees the old file or the new, never half.
func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}
