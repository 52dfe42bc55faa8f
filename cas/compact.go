package cas

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"sync/atomic"
)

// Compression off the critical path. Compressing new chunks costs more CPU than
// hashing them (zstd's fastest level runs at a few hundred MB/s on one core, BLAKE3
// at several GB/s), so an ingest may store new chunks as "raw" zstd frames, which
// any zstd decoder reads and which cost a copy to write, and leave their compression
// to Compact, run when the machine has time: while the next job's VM boots, or by
// vmb cache gc. A raw frame is a valid object: naming, verification, dedup and sync
// do not tell the two apart.

const (
	zstdMagic      = 0xFD2FB528
	rawFrameHeader = 0xE0 // Single_Segment, 8-byte Frame_Content_Size, no checksum, no dictionary
	maxRawBlock    = 128 << 10
)

// appendRawFrame appends to dst a zstd frame holding b in raw (uncompressed) blocks.
func appendRawFrame(dst, b []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, zstdMagic)
	dst = append(dst, rawFrameHeader)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(len(b)))
	for first := true; first || len(b) > 0; first = false {
		n := min(len(b), maxRawBlock)
		last := 0
		if n == len(b) {
			last = 1
		}
		h := uint32(n)<<3 | uint32(last) // Block_Type 0: raw
		dst = append(dst, byte(h), byte(h>>8), byte(h>>16))
		dst = append(dst, b[:n]...)
		b = b[n:]
	}
	return dst
}

// isRawFrame reports whether the stored object at p was written by appendRawFrame.
func isRawFrame(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var h [16]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return false, nil // too short to be one
	}
	return binary.LittleEndian.Uint32(h[:]) == zstdMagic && h[4] == rawFrameHeader && (h[13]>>1)&3 == 0, nil
}

// CompactStats says what Compact did.
type CompactStats struct {
	Objects     int   `json:"objects"`      // objects compressed
	BytesBefore int64 `json:"bytes_before"` // their stored size before
	BytesAfter  int64 `json:"bytes_after"`  // and after
}

// Compact compresses every raw-frame object among the blobs ds and, for snapshots
// among them, their chunks. Each object is replaced atomically by its compressed
// form; a reader that has it open keeps reading the old file, which holds the same
// content. Digests that are not in the store are skipped.
func (s *Store) Compact(ctx context.Context, ds []Digest) (CompactStats, error) {
	return s.CompactWorkers(ctx, ds, 0)
}

// CompactWorkers is Compact with at most workers goroutines (0: one a CPU): a
// compaction beside a running build takes a core, not every one.
func (s *Store) CompactWorkers(ctx context.Context, ds []Digest, workers int) (CompactStats, error) {
	var todo []Digest
	seen := map[Digest]bool{}
	add := func(d Digest) {
		if !seen[d] {
			seen[d] = true
			todo = append(todo, d)
		}
	}
	for _, d := range ds {
		add(d)
		if b, err := s.Get(d); err == nil {
			if m, err := DecodeManifest(b); err == nil {
				for _, c := range m.Chunks {
					add(c.Digest)
				}
			}
		}
	}
	return s.compact(ctx, todo, workers)
}

func (s *Store) compact(ctx context.Context, todo []Digest, workers int) (CompactStats, error) {
	var st CompactStats
	var objects, before, after atomic.Int64
	stage := &staging{s: s}
	defer stage.abort()
	err := forEach(ctx, workers, len(todo), func() func(int) error {
		return func(i int) error {
			d := todo[i]
			p := s.objectPath(d)
			raw, err := isRawFrame(p)
			if errors.Is(err, os.ErrNotExist) || (err == nil && !raw) {
				return nil
			}
			if err != nil {
				return err
			}
			b, err := s.Get(d)
			if err != nil {
				return err
			}
			buf := encBufs.Get().(*[]byte)
			defer encBufs.Put(buf)
			*buf = s.enc.EncodeAll(b, (*buf)[:0])
			fi, err := os.Stat(p)
			if err != nil || int64(len(*buf)) >= fi.Size() {
				return nil // gone, or does not compress: leave it
			}
			objects.Add(1)
			before.Add(fi.Size())
			after.Add(int64(len(*buf)))
			return stage.write(p, *buf)
		}
	})
	if err == nil {
		err = stage.commit()
	}
	st.Objects, st.BytesBefore, st.BytesAfter = int(objects.Load()), before.Load(), after.Load()
	return st, err
}
