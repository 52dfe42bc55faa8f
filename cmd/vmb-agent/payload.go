package main

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"vmb.dev/vmb/vmexec/proto"
)

// A job's payload (the tree of a copy-in, the archive of a tar-in or image-in,
// a fetched file) is on the job disk, as tar entries after the job's job.json.
// The agent extracts it under payloadDir, in the VM's memory, except the bytes
// of files of leaveOnDisk bytes or more: those stay where they are on the job
// disk, and the job reads them from there (openPayload). A payload larger than
// the VM's memory is no harder than a small one, and a large file is read once,
// not copied to memory and then read again.
//
// The file under payloadDir of a file left on the disk is empty: every reader
// of a payload file goes through openPayload.
const leaveOnDisk = 1 << 20

// leftOnDisk maps the path under payloadDir of each file of the current job's
// payload left on the job disk to where its bytes are there.
var leftOnDisk = map[string]section{}

type section struct {
	dev       string
	off, size int64
}

// jobReader reads the jobs of the job disk, one after another: each job.json
// and the payload entries after it, up to the next job.json.
type jobReader struct {
	dev     string
	dir     string // where payloads are extracted: payloadDir
	disk    *diskReader
	tr      *tar.Reader
	pending *proto.Job // the next job, read with the end of the one before it
}

func openJobs(dev string) (*jobReader, error) {
	f, err := os.Open(dev)
	if err != nil {
		return nil, err
	}
	// Left open: the agent reads it to its end, then powers off.
	d := &diskReader{f: f, br: bufio.NewReaderSize(f, 1<<20)}
	return &jobReader{dev: dev, dir: payloadDir, disk: d, tr: tar.NewReader(d)}, nil
}

// diskReader reads the job disk for the tar reader: buffered, knowing its
// position (where a file's bytes start), and able to skip a file's bytes without
// reading them (the tar reader seeks when its reader can).
type diskReader struct {
	f   *os.File
	br  *bufio.Reader
	pos int64
}

func (d *diskReader) Read(p []byte) (int, error) {
	n, err := d.br.Read(p)
	d.pos += int64(n)
	return n, err
}

// Seek moves forward from the current position, the only seek the tar reader
// makes; an offset of 0 tells the position.
func (d *diskReader) Seek(off int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || off < 0 {
		return d.pos, errors.New("job disk: only forward seeks")
	}
	if off <= int64(d.br.Buffered()) {
		n, err := d.br.Discard(int(off))
		d.pos += int64(n)
		return d.pos, err
	}
	if _, err := d.f.Seek(d.pos+off, io.SeekStart); err != nil {
		return d.pos, err
	}
	d.br.Reset(d.f)
	d.pos += off
	return d.pos, nil
}

// next returns the next job, its payload extracted under r.dir (emptied
// first), or an error if there is none.
func (r *jobReader) next() (*proto.Job, error) {
	job := r.pending
	r.pending = nil
	if err := os.RemoveAll(r.dir); err != nil {
		return nil, err
	}
	clear(leftOnDisk)
	for {
		h, err := r.tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("malformed job disk: %w", err)
		}
		if h.Name == proto.JobFile {
			j := &proto.Job{}
			if err := json.NewDecoder(r.tr).Decode(j); err != nil {
				return nil, fmt.Errorf("job.json: %w", err)
			}
			if job != nil {
				r.pending = j
				break
			}
			job = j
			continue
		}
		if job == nil {
			return nil, fmt.Errorf("payload entry %s before any job.json", h.Name)
		}
		var data io.Reader = r.tr
		if h.Typeflag == tar.TypeReg && h.Size >= leaveOnDisk {
			// The tar reader is at the file's first byte, and skips the rest
			// when asked for the next entry.
			leftOnDisk[filepath.Join(r.dir, filepath.Clean("/"+h.Name))] = section{r.dev, r.disk.pos, h.Size}
			data = nil
		}
		if err := extractEntry(data, h, r.dir); err != nil {
			return nil, err
		}
	}
	if job == nil {
		return nil, errors.New("no job.json on the job disk")
	}
	return job, nil
}

// openPayload opens a file of the payload by its path under payloadDir: its
// bytes on the job disk if they were left there.
func openPayload(p string) (io.ReadCloser, error) {
	s, ok := leftOnDisk[p]
	if !ok {
		return os.Open(p)
	}
	f, err := os.Open(s.dev)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, s.off, s.size), f}, nil
}

// extractEntry writes one tar entry under dir, keeping its mode, owner and
// mtime; a regular file with its bytes from data, or empty if data is nil.
func extractEntry(data io.Reader, h *tar.Header, dir string) error {
	name := filepath.Clean("/" + h.Name)
	p := filepath.Join(dir, name)
	os.MkdirAll(filepath.Dir(p), 0o755)
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.MkdirAll(p, os.FileMode(h.Mode).Perm()); err != nil {
			return err
		}
	case tar.TypeSymlink:
		os.Remove(p)
		if err := os.Symlink(h.Linkname, p); err != nil {
			return err
		}
	case tar.TypeReg:
		f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, os.FileMode(h.Mode).Perm())
		if err != nil {
			return err
		}
		if data != nil {
			_, err = io.Copy(f, data)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	default:
		return fmt.Errorf("payload entry %s: unsupported type %c", h.Name, h.Typeflag)
	}
	os.Lchown(p, h.Uid, h.Gid)
	if h.Typeflag != tar.TypeSymlink {
		os.Chmod(p, os.FileMode(h.Mode)&07777)
	}
	unix.Lutimes(p, []unix.Timeval{unix.NsecToTimeval(h.ModTime.UnixNano()), unix.NsecToTimeval(h.ModTime.UnixNano())})
	return nil
}
