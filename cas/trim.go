package cas

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"vmb.dev/vmb/internal/atomicfile"
)

// The cache trims itself, as cmd/go's build cache does: users do not run gc by
// hand, and a cache nobody trims grows until the disk is full.
const (
	// DefaultBudget is the size a cache is trimmed to when the user sets none.
	DefaultBudget = 32 << 30
	// TrimInterval is how often, at most, Trim collects.
	TrimInterval = 24 * time.Hour
	// trimFile holds the time of the last trim, in seconds since 1970.
	trimFile = "trim.txt"
)

// Trim runs GC to budget (MaxSize) if the last trim is older than TrimInterval,
// and records when; it returns a nil report when no trim was due. Refs are
// roots, as in every gc. The time is written before collecting, so that processes
// finishing at once do not all collect. Reading trim.txt costs one small read: a
// solve can call Trim every time.
func (s *Store) Trim(ctx context.Context, budget int64) (*GCReport, error) {
	p := filepath.Join(s.dir, trimFile)
	now := s.now()
	if b, err := os.ReadFile(p); err == nil {
		if sec, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil {
			if last := time.Unix(sec, 0); now.Sub(last) < TrimInterval && !last.After(now) {
				return nil, nil
			}
		}
	}
	if err := atomicfile.WriteFile(p, []byte(strconv.FormatInt(now.Unix(), 10)+"\n"), 0o644); err != nil {
		return nil, err
	}
	return s.GC(ctx, GCOptions{MaxSize: budget})
}
