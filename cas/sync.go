package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/klauspost/compress/zstd"

	"vmb.dev/vmb/internal/atomicfile"
)

// SyncReport says what Sync and SyncRefs copied.
type SyncReport struct {
	Actions       int   `json:"actions"`        // records copied
	Refs          int   `json:"refs"`           // refs set
	Objects       int   `json:"objects"`        // blobs copied
	Bytes         int64 `json:"bytes"`          // stored bytes copied
	SkippedAction int   `json:"skipped_action"` // records the destination had
	SkippedObject int   `json:"skipped_object"` // blobs the destination had
}

// Add adds what o counts to r.
func (r *SyncReport) Add(o *SyncReport) {
	r.Actions += o.Actions
	r.Refs += o.Refs
	r.Objects += o.Objects
	r.Bytes += o.Bytes
	r.SkippedAction += o.SkippedAction
	r.SkippedObject += o.SkippedObject
}

// Sync copies to dst every action record in ids, and every blob they reach, from
// src, skipping what dst has. Blobs are copied as stored (no recompression) and
// verified on the way; each record is written after its blobs, so dst is consistent
// at every moment. No ids means every record of src.
func Sync(ctx context.Context, dst, src *Store, ids []ActionID) (*SyncReport, error) {
	rep := &SyncReport{}
	return rep, syncActions(ctx, dst, src, ids, rep)
}

// SyncRefs copies to dst the refs of src called names, with every record and blob
// they reach, as Sync does, and sets each ref in dst after what it reaches. A ref
// dst has is replaced. No names means every ref of src.
func SyncRefs(ctx context.Context, dst, src *Store, names []string) (*SyncReport, error) {
	if names == nil {
		var err error
		if names, err = src.Refs(); err != nil {
			return nil, fmt.Errorf("sync from %s: %w", src.dir, err)
		}
	}
	rep := &SyncReport{}
	for _, name := range names {
		r, err := src.Ref(name)
		if err != nil {
			return rep, fmt.Errorf("sync: %w", err)
		}
		if err := copyRef(ctx, dst, src, name, r, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// CopyRef sets ref name in dst to r, after copying from src every record and blob r
// reaches that dst lacks: SyncRefs for a ref given, not read from src.
func CopyRef(ctx context.Context, dst, src *Store, name string, r *Ref) (*SyncReport, error) {
	rep := &SyncReport{}
	return rep, copyRef(ctx, dst, src, name, r, rep)
}

func copyRef(ctx context.Context, dst, src *Store, name string, r *Ref, rep *SyncReport) error {
	if err := syncActions(ctx, dst, src, r.Actions, rep); err != nil {
		return err
	}
	blobs, err := uniqueBlobs(func(fn func(Digest)) error { return src.reachOutputs(r.Outputs, fn) })
	if err == nil {
		err = copyBlobs(ctx, dst, src, blobs, rep)
	}
	if err == nil {
		err = dst.SetRef(name, r)
	}
	if err != nil {
		return fmt.Errorf("sync ref %s: %w", name, err)
	}
	rep.Refs++
	return nil
}

func syncActions(ctx context.Context, dst, src *Store, ids []ActionID, rep *SyncReport) error {
	if ids == nil {
		var err error
		if ids, err = src.Actions(); err != nil {
			return fmt.Errorf("sync from %s: %w", src.dir, err)
		}
	}
	for _, a := range ids {
		r, b, err := src.readAction(a)
		if err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		if dst.used(dst.actionPath(a)) {
			rep.SkippedAction++
			continue
		}
		blobs, err := uniqueBlobs(func(fn func(Digest)) error { return src.reach(r, fn) })
		if err == nil {
			err = copyBlobs(ctx, dst, src, blobs, rep)
		}
		if err == nil {
			err = dst.writeFile(dst.actionPath(a), func(w io.Writer) error {
				_, err := w.Write(b)
				return err
			})
		}
		if err != nil {
			return fmt.Errorf("sync action %s: %w", a, err)
		}
		rep.Actions++
	}
	return nil
}

// uniqueBlobs lists, once each and in order, the blobs that reach calls its function with.
func uniqueBlobs(reach func(func(Digest)) error) ([]Digest, error) {
	var blobs []Digest
	seen := map[Digest]bool{}
	err := reach(func(d Digest) {
		if !seen[d] {
			seen[d] = true
			blobs = append(blobs, d)
		}
	})
	return blobs, err
}

// copyBlobs copies the blobs dst lacks from src, in parallel, and counts them in rep.
func copyBlobs(ctx context.Context, dst, src *Store, blobs []Digest, rep *SyncReport) error {
	return eachBlob(ctx, 0, blobs, rep, func(d Digest) (int64, bool, error) {
		if dst.used(dst.objectPath(d)) {
			return 0, false, nil
		}
		n, err := copyBlob(dst, src, d)
		return n, err == nil, err
	})
}

// eachBlob runs copy on every blob, on workers goroutines (0: GOMAXPROCS), and
// counts in rep the blobs it copied (the stored bytes it returns) and skipped.
func eachBlob(ctx context.Context, workers int, blobs []Digest, rep *SyncReport, copy func(Digest) (n int64, copied bool, err error)) error {
	var objects, bytes, skipped atomic.Int64
	err := forEach(ctx, workers, len(blobs), func() func(int) error {
		return func(i int) error {
			n, copied, err := copy(blobs[i])
			switch {
			case err != nil:
				return err
			case copied:
				objects.Add(1)
				bytes.Add(n)
			default:
				skipped.Add(1)
			}
			return nil
		}
	})
	rep.Objects += int(objects.Load())
	rep.Bytes += bytes.Load()
	rep.SkippedObject += int(skipped.Load())
	return err
}

// copyBlob copies the stored file of blob d from src to dst, verifying its content
// as it goes, and returns the bytes copied.
func copyBlob(dst, src *Store, d Digest) (int64, error) {
	sp := src.objectPath(d)
	in, err := os.Open(sp)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return 0, err
	}
	defer in.Close()
	return dst.putStored(d, in, sp)
}

// putStored stores the stored form of blob d (its zstd frames), read from in (the
// file or URL from), as it is: it verifies the content on the way, and d appears in
// the store only whole and only if it verifies. It returns the bytes stored.
func (s *Store) putStored(d Digest, in io.Reader, from string) (int64, error) {
	out, err := os.CreateTemp(filepath.Join(s.dir, tmpDir), "sync-*")
	if err != nil {
		return 0, fmt.Errorf("copy blob %s: %w", d, err)
	}
	ok := false
	defer func() {
		if !ok {
			out.Close()
			os.Remove(out.Name())
		}
	}()
	cw := &countWriter{w: out}
	rr := &errReader{r: in} // a failed read is the source's failure, not corruption
	in = rr
	zr, err := zstd.NewReader(io.TeeReader(in, cw), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(1<<34))
	if err != nil {
		return 0, err
	}
	h := NewHasher()
	_, err = io.Copy(h, zr)
	zr.Close()
	if cw.err != nil {
		return 0, fmt.Errorf("copy blob %s: %w", d, cw.err)
	}
	if rr.err != nil {
		return 0, fmt.Errorf("copy blob %s from %s: %w", d, from, rr.err)
	}
	if err != nil {
		return 0, &CorruptError{What: "blob", Digest: d, Path: from, Err: err}
	}
	// The decoder may stop before the end of the file; copy what it did not read.
	if _, err := io.Copy(cw, in); err != nil || rr.err != nil {
		if err == nil {
			err = rr.err
		}
		return 0, fmt.Errorf("copy blob %s: %w", d, err)
	}
	var got Digest
	h.Sum(got[:0])
	if got != d {
		return 0, &CorruptError{What: "blob", Digest: d, Path: from, Err: fmt.Errorf("content hashes to %s", got)}
	}
	if err := atomicfile.Commit(out, s.objectPath(d)); err != nil {
		return 0, fmt.Errorf("copy blob %s: %w", d, err)
	}
	ok = true
	return cw.n, nil
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}
