package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"vmb.dev/vmb/vmexec/proto"
)

// The job reader leaves a payload's large files on the job disk and finds their
// bytes there again: through a PAX header (a long name), between small files,
// in a chain of two jobs, whatever the buffer held when the tar reader skipped.
func TestJobReaderLeavesLargeFiles(t *testing.T) {
	rnd := rand.NewChaCha8([32]byte{7})
	data := func(n int) []byte {
		b := make([]byte, n)
		rnd.Read(b)
		return b
	}
	type file struct {
		name string
		b    []byte
	}
	jobs := [][]file{
		{{"src/small", data(100)}, {"src/" + strings.Repeat("long-name-", 20), data(leaveOnDisk + 1)},
			{"src/mid", data(leaveOnDisk - 1)}, {"src/big", data(3*leaveOnDisk + 5)}, {"src/last", data(10)}},
		{{"src", data(2 * leaveOnDisk)}},
	}
	var disk bytes.Buffer
	tw := tar.NewWriter(&disk)
	for i, files := range jobs {
		j, _ := json.Marshal(proto.Job{Nonce: string(rune('a' + i))})
		tw.WriteHeader(&tar.Header{Name: proto.JobFile, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(j))})
		tw.Write(j)
		for _, f := range files {
			tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(f.b))})
			tw.Write(f.b)
		}
	}
	tw.Close()
	dev := filepath.Join(t.TempDir(), "vda")
	os.WriteFile(dev, disk.Bytes(), 0o644)

	r, err := openJobs(dev)
	if err != nil {
		t.Fatal(err)
	}
	r.dir = t.TempDir()
	for i, files := range jobs {
		job, err := r.next()
		if err != nil || job.Nonce != string(rune('a'+i)) {
			t.Fatalf("job %d: %v, %+v", i, err, job)
		}
		left := 0
		for _, f := range files {
			p := filepath.Join(r.dir, f.name)
			if _, ok := leftOnDisk[p]; ok {
				left++
			}
			in, err := openPayload(p)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(in)
			in.Close()
			if err != nil || !bytes.Equal(got, f.b) {
				t.Errorf("job %d: %s: %d bytes read (%v), want its %d", i, f.name, len(got), err, len(f.b))
			}
		}
		if want := map[int]int{0: 2, 1: 1}[i]; left != want {
			t.Errorf("job %d: %d files left on the disk, want %d", i, left, want)
		}
	}
	if _, err := r.next(); err == nil {
		t.Error("a third job read from a disk of two")
	}
}
