package vmexec

import (
	"archive/tar"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// payloadTree writes n files of size bytes each under a fresh directory.
func payloadTree(b *testing.B, n, size int) string {
	dir := b.TempDir()
	buf := make([]byte, size)
	for i := range n {
		rand.Read(buf)
		sub := filepath.Join(dir, fmt.Sprintf("d%02d", i%16))
		os.MkdirAll(sub, 0o755)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%04d", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir
}

// BenchmarkPayload measures what a copy-in's source costs to put on the job disk:
// addTree, which hashes every byte it copies to check the source against the key,
// against the same tar written without the hash (the cost before the check).
func BenchmarkPayload(b *testing.B) {
	for _, c := range []struct {
		name    string
		n, size int
	}{{"1000x4KiB", 1000, 4 << 10}, {"16x4MiB", 16, 4 << 20}} {
		dir := payloadTree(b, c.n, c.size)
		mtime := time.Unix(0, 0)
		b.Run(c.name+"/hashed", func(b *testing.B) {
			b.SetBytes(int64(c.n * c.size))
			for b.Loop() {
				tw := tar.NewWriter(io.Discard)
				if _, err := addTree(tw, dir, "src", mtime); err != nil {
					b.Fatal(err)
				}
				tw.Close()
			}
		})
		b.Run(c.name+"/plain", func(b *testing.B) {
			b.SetBytes(int64(c.n * c.size))
			for b.Loop() {
				tw := tar.NewWriter(io.Discard)
				err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
					if err != nil {
						return err
					}
					fi, _ := d.Info()
					h, _ := tar.FileInfoHeader(fi, "")
					h.Name, h.ModTime = p, mtime
					if err := tw.WriteHeader(h); err != nil || !fi.Mode().IsRegular() {
						return err
					}
					f, err := os.Open(p)
					if err != nil {
						return err
					}
					defer f.Close()
					_, err = io.Copy(tw, f)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				tw.Close()
			}
		})
	}
}
