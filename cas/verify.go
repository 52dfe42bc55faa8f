package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Problem is something verify found wrong.
type Problem struct {
	Path        string `json:"path"`
	Error       string `json:"error"`
	Quarantined string `json:"quarantined,omitempty"` // where the file was moved
}

// VerifyReport says what Verify checked and found.
type VerifyReport struct {
	Objects  int       `json:"objects"`
	Actions  int       `json:"actions"`
	Refs     int       `json:"refs"`
	Problems []Problem `json:"problems"`
}

// OK reports whether verify found nothing wrong.
func (r *VerifyReport) OK() bool { return len(r.Problems) == 0 }

// Verify re-hashes every blob and re-reads every action record. A blob whose content
// does not match its name, and a record that cannot be read or reaches a blob that
// is missing or corrupt, and a ref that cannot be read or reaches such a blob or a
// missing record, is moved to quarantine/ when quarantine is set, so that the
// store is consistent again: a later build runs those jobs again.
func (s *Store) Verify(ctx context.Context, quarantine bool) (*VerifyReport, error) {
	rep := &VerifyReport{Problems: []Problem{}}
	var mu sync.Mutex
	problem := func(path string, err error) {
		p := Problem{Path: path, Error: err.Error()}
		if quarantine {
			if q, qerr := s.quarantine(path); qerr == nil {
				p.Quarantined = q
			} else {
				p.Error += fmt.Sprintf(" (quarantine failed: %v)", qerr)
			}
		}
		mu.Lock()
		rep.Problems = append(rep.Problems, p)
		mu.Unlock()
	}

	objs, stray, err := s.walk(objectsDir)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s.dir, err)
	}
	for _, p := range stray {
		problem(p, errors.New("not a blob name"))
	}
	rep.Objects = len(objs)
	bad := make(map[Digest]bool)
	err = forEach(ctx, 0, len(objs), func() func(int) error {
		return func(i int) error {
			e := objs[i]
			err := s.verifyBlob(e.digest)
			if err == nil || errors.Is(err, ErrNotFound) { // not found: removed by a concurrent gc
				return nil
			}
			mu.Lock()
			bad[e.digest] = true
			mu.Unlock()
			problem(e.path, err)
			return nil
		}
	})
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s.dir, err)
	}

	acts, stray, err := s.walk(actionsDir)
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s.dir, err)
	}
	for _, p := range stray {
		problem(p, errors.New("not an action record name"))
	}
	rep.Actions = len(acts)
	for _, e := range acts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := s.verifyAction(ActionID(e.digest), bad); err != nil {
			problem(e.path, err)
		}
	}

	names, err := s.Refs()
	if err != nil {
		return nil, fmt.Errorf("verify %s: %w", s.dir, err)
	}
	rep.Refs = len(names)
	for _, name := range names {
		if err := s.verifyRef(name, bad); err != nil {
			problem(s.refPath(name), err)
		}
	}
	return rep, nil
}

// verifyRef checks that ref name is readable and that every blob and record it
// names, and every chunk of its snapshots, is present and not in bad. (Its records
// were verified before it, and moved away if they were bad.)
func (s *Store) verifyRef(name string, bad map[Digest]bool) error {
	r, err := s.Ref(name)
	if err != nil {
		return err
	}
	check, missing := s.checkReached(bad)
	if err := s.reachOutputs(r.Outputs, check); err != nil {
		return err
	}
	if *missing != nil {
		return *missing
	}
	for _, a := range r.Actions {
		if _, err := os.Stat(s.actionPath(a)); err != nil {
			return fmt.Errorf("reaches missing action record %s", a)
		}
	}
	return nil
}

// verifyBlob reads all of blob d and checks its digest.
func (s *Store) verifyBlob(d Digest) error {
	r, err := s.Open(d)
	if err != nil {
		return err
	}
	defer r.Close()
	_, err = io.Copy(io.Discard, r)
	return err
}

// verifyAction checks that record a is readable and that every blob it reaches is
// present and not in bad.
func (s *Store) verifyAction(a ActionID, bad map[Digest]bool) error {
	r, _, err := s.readAction(a)
	if err != nil {
		return err
	}
	check, missing := s.checkReached(bad)
	if err := s.reach(r, check); err != nil {
		return err
	}
	return *missing
}

// checkReached returns a function for reach and the first problem it was called
// with: a blob in bad or missing from the store.
func (s *Store) checkReached(bad map[Digest]bool) (func(Digest), *error) {
	var missing error
	return func(d Digest) {
		if missing != nil {
			return
		}
		if bad[d] {
			missing = fmt.Errorf("reaches corrupt blob %s", d)
		} else if !s.Has(d) {
			missing = fmt.Errorf("reaches missing blob %s", d)
		}
	}, &missing
}

// quarantine moves a file of the store to quarantine/, out of every lookup's way.
func (s *Store) quarantine(path string) (string, error) {
	dir := filepath.Join(s.dir, quarantineDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(s.dir, path)
	if err != nil {
		return "", err
	}
	name := filepath.Base(filepath.Dir(filepath.Dir(rel))) + "-" + filepath.Base(path) // objects-ab12…, actions-cd34…
	if ref, ok := strings.CutPrefix(filepath.ToSlash(rel), refsDir+"/"); ok {
		name = "ref-" + strings.ReplaceAll(ref, "/", "-")
	}
	dst := filepath.Join(dir, name)
	return dst, os.Rename(path, dst)
}
