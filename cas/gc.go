package cas

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// DefaultGrace is how long gc leaves a file that nothing reaches alone after its last
// write or use: long enough for any writer to finish the job that wrote it and commit
// the job's action record.
const DefaultGrace = time.Hour

// GCOptions tunes GC.
type GCOptions struct {
	// MaxSize is the budget of stored bytes for objects that refs and action
	// records reach; 0 means no budget: only unreachable files are removed. What
	// refs reach is kept even beyond it.
	MaxSize int64
	// Grace protects recently written or used files; 0 means DefaultGrace.
	Grace time.Duration
	// DryRun reports what would be removed and removes nothing.
	DryRun bool
}

// GCReport says what GC kept and removed.
type GCReport struct {
	Refs           int   `json:"refs"` // roots: what they reach was kept
	KeptActions    int   `json:"kept_actions"`
	RemovedActions int   `json:"removed_actions"`
	KeptObjects    int   `json:"kept_objects"`
	KeptBytes      int64 `json:"kept_bytes"`
	RemovedObjects int   `json:"removed_objects"`
	RemovedBytes   int64 `json:"removed_bytes"`
	RemovedTemps   int   `json:"removed_temps"` // staging files and fetched files written out for jobs
	// RemovedLegacy names the top-level directories of an older vmb's layout
	// that gc removed.
	RemovedLegacy []string `json:"removed_legacy,omitempty"`
	// Compacted counts the raw objects (ingested with DeferCompression) that gc
	// compressed.
	Compacted CompactStats `json:"compacted"`
}

// GC trims the store. Everything a ref reaches is kept first, whatever its age and
// the budget: refs are roots. Then action records are kept from the most recently used down, as
// long as the objects they reach (counted once however many records share them) fit
// in MaxSize; older records are removed, then every object no kept record reaches.
// Last, the objects it keeps that were stored uncompressed are compressed (Compact).
// Files written or used within the grace period are never removed, so a concurrent
// writer that has stored blobs but not yet its record loses nothing. Records go
// before the blobs they reach, so a crash mid-gc leaves no record without its blobs.
func (s *Store) GC(ctx context.Context, opt GCOptions) (*GCReport, error) {
	grace := opt.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	now := s.now()
	rep := &GCReport{}

	objs, _, err := s.walk(objectsDir)
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", s.dir, err)
	}
	size := make(map[Digest]int64, len(objs))
	for _, e := range objs {
		size[e.digest] = e.size
	}
	acts, _, err := s.walk(actionsDir)
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", s.dir, err)
	}
	sort.Slice(acts, func(i, j int) bool { return acts[i].modTime.After(acts[j].modTime) })

	keep := make(map[Digest]bool)
	var kept int64
	rooted, err := s.roots(func(d Digest) {
		if !keep[d] {
			keep[d] = true
			kept += size[d]
		}
	})
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", s.dir, err)
	}
	rep.Refs = len(rooted.refs)
	full := false
	var evict []entry
	for _, e := range acts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if rooted.actions[ActionID(e.digest)] {
			rep.KeptActions++ // what it reaches is kept already
			continue
		}
		reached, err := s.reachOf(ActionID(e.digest))
		if err != nil { // an unusable record: nothing should keep it or be kept for it
			evict = append(evict, e)
			continue
		}
		var add int64
		for d := range reached {
			if !keep[d] {
				add += size[d]
			}
		}
		recent := now.Sub(e.modTime) < grace
		if !recent && (full || (opt.MaxSize > 0 && kept+add > opt.MaxSize)) {
			full = true // strictly least recently used: every older record goes too
			evict = append(evict, e)
			continue
		}
		for d := range reached {
			keep[d] = true
		}
		kept += add
		rep.KeptActions++
	}
	for _, e := range evict {
		if !opt.DryRun {
			if err := os.Remove(e.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("gc: %w", err)
			}
		}
		rep.RemovedActions++
	}
	var compact []Digest
	for _, e := range objs {
		if keep[e.digest] {
			rep.KeptObjects++
			rep.KeptBytes += e.size
			compact = append(compact, e.digest)
			continue
		}
		if s.removeIfOld(e.path, now, grace, opt.DryRun) {
			rep.RemovedObjects++
			rep.RemovedBytes += e.size
		} else {
			rep.KeptObjects++
			rep.KeptBytes += e.size
			compact = append(compact, e.digest)
		}
	}
	if !opt.DryRun {
		if rep.Compacted, err = s.compact(ctx, compact, 0); err != nil {
			return nil, fmt.Errorf("gc %s: %w", s.dir, err)
		}
		rep.KeptBytes -= rep.Compacted.BytesBefore - rep.Compacted.BytesAfter
	}
	tmps, err := s.temps()
	if err != nil {
		return nil, fmt.Errorf("gc %s: %w", s.dir, err)
	}
	for _, e := range tmps {
		if s.removeIfOld(e.path, now, grace, opt.DryRun) {
			rep.RemovedTemps++
		}
	}
	if err := s.gcScratch(now, grace, opt.DryRun, rep); err != nil {
		return nil, fmt.Errorf("gc %s: %w", s.dir, err)
	}
	return rep, nil
}

// legacyDirs are the top-level directories an older vmb kept its scratch files in,
// before scratch/ (see the package doc): nothing reads them.
var legacyDirs = []string{"fetch", "appliance-boot", "appliance-work", "lang"}

// gcScratch removes what an older vmb left at the top of the cache, and the
// fetched files written out for jobs (scratch/fetch, written again from their blobs
// on every use) once they are older than grace.
func (s *Store) gcScratch(now time.Time, grace time.Duration, dryRun bool, rep *GCReport) error {
	for _, d := range legacyDirs {
		p := filepath.Join(s.dir, d)
		if _, err := os.Lstat(p); err != nil {
			continue
		}
		rep.RemovedLegacy = append(rep.RemovedLegacy, d)
		if !dryRun {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
		}
	}
	fetched := filepath.Join(s.dir, scratchDir, "fetch")
	ents, err := os.ReadDir(fetched)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, e := range ents {
		if e.Type().IsRegular() && s.removeIfOld(filepath.Join(fetched, e.Name()), now, grace, dryRun) {
			rep.RemovedTemps++
		}
	}
	return nil
}

// rootSet is what the refs name.
type rootSet struct {
	refs    []string
	actions map[ActionID]bool
}

// roots reads every ref and calls keep for every blob they reach. A ref that cannot
// be read is an error: gc cannot know what it would have kept.
func (s *Store) roots(keep func(Digest)) (*rootSet, error) {
	names, err := s.Refs()
	if err != nil {
		return nil, err
	}
	rs := &rootSet{refs: names, actions: map[ActionID]bool{}}
	for _, name := range names {
		r, err := s.Ref(name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("%w (vmb cache verify moves it aside)", err)
		}
		for _, a := range r.Actions {
			rs.actions[a] = true
		}
		s.reachRef(r, keep)
	}
	return rs, nil
}

// removeIfOld removes the file at p unless it was modified within grace, checking its
// mtime again right before removing it, and reports whether it removed it.
func (s *Store) removeIfOld(p string, now time.Time, grace time.Duration, dryRun bool) bool {
	fi, err := os.Stat(p)
	if err != nil || now.Sub(fi.ModTime()) < grace {
		return false
	}
	if dryRun {
		return true
	}
	return os.Remove(p) == nil
}

// reachOf returns the set of blobs record a reaches, failing if it is unusable.
func (s *Store) reachOf(a ActionID) (map[Digest]bool, error) {
	r, _, err := s.readAction(a)
	if err != nil {
		return nil, err
	}
	set := make(map[Digest]bool)
	if err := s.reach(r, func(d Digest) { set[d] = true }); err != nil {
		return nil, err
	}
	for d := range set {
		if !s.Has(d) {
			return nil, fmt.Errorf("blob %s: %w", d, ErrIncomplete)
		}
	}
	return set, nil
}
