package cas

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

// ActionID is the key of a job: the hash of everything that can change its result
// (graph.Key). It names an action record, never a blob: the two cannot be mixed up.
type ActionID [Size]byte

func (a ActionID) String() string { return Digest(a).String() }

// MarshalText encodes a as hex.
func (a ActionID) MarshalText() ([]byte, error) { return Digest(a).MarshalText() }

// UnmarshalText parses a hex action ID.
func (a *ActionID) UnmarshalText(b []byte) error { return (*Digest)(a).UnmarshalText(b) }

// ParseActionID parses the 64 hex digits of an ActionID.
func ParseActionID(s string) (ActionID, error) {
	d, err := ParseDigest(s)
	return ActionID(d), err
}

// OutputKind says how to follow an output's digest.
type OutputKind string

const (
	KindBlob     OutputKind = "blob"     // a file
	KindSnapshot OutputKind = "snapshot" // a disk snapshot manifest, which names chunks
)

// Output is one result of a job.
type Output struct {
	Name   string     `json:"name"`
	Kind   OutputKind `json:"kind"`
	Digest Digest     `json:"digest"`
}

// Result is an action record: what a job with a given key produced.
type Result struct {
	Outputs  []Output      `json:"outputs"`
	Log      Digest        `json:"log,omitzero"` // the job's console log, a blob
	Duration time.Duration `json:"duration"`
	Executor string        `json:"executor"` // the executor identity that ran it
	Created  time.Time     `json:"created"`
	// Signatures are ed25519 signatures of the record's fingerprint (sign.go), by
	// the caches that pushed it; they are not part of what they sign.
	Signatures []Signature `json:"signatures,omitempty"`
}

// Output returns the output called name.
func (r *Result) Output(name string) (Output, bool) { return outputNamed(r.Outputs, name) }

// ErrIncomplete is returned (wrapped) by GetAction when the record names a blob the
// store does not have: the record cannot be used, and the job must run again.
var ErrIncomplete = errors.New("record names a missing blob")

func (s *Store) actionPath(a ActionID) string {
	h := a.String()
	return filepath.Join(s.dir, actionsDir, h[:2], h)
}

// PutAction records r as the result of action a. Every blob r names must already be
// in the store: the record is the commit point of a job, written last.
func (s *Store) PutAction(a ActionID, r *Result) error {
	if err := s.checkNames(r); err != nil {
		return fmt.Errorf("record action %s: %w", a, err)
	}
	b, err := json.MarshalIndent(r, "", "\t")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	return s.writeFile(s.actionPath(a), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// GetAction returns the result recorded for action a. It fails with ErrNotFound if
// there is none, with ErrIncomplete if a blob the record names is missing, and with
// a *CorruptError if the record cannot be read.
//
// The store keeps this invariant: while a record is present, so is every blob it
// reaches (gc and verify remove records before or with their blobs), so GetAction
// checks the blobs the record names and not the chunks of its snapshots.
func (s *Store) GetAction(a ActionID) (*Result, error) {
	r, _, err := s.readAction(a)
	if err != nil {
		return nil, err
	}
	if err := s.checkNames(r); err != nil {
		return nil, fmt.Errorf("action %s: %w", a, err)
	}
	s.used(s.actionPath(a))
	return r, nil
}

// TouchAction marks record a, if there is one, as recently used without reading it:
// for a record a build still relies on but does not need to open (a step before a
// cached one), so that gc keeps it for the day a later step changes.
func (s *Store) TouchAction(a ActionID) bool { return s.used(s.actionPath(a)) }

// readAction reads and decodes record a, and returns its bytes too. It fails with
// ErrNotFound if there is none and a *CorruptError if it cannot be decoded.
func (s *Store) readAction(a ActionID) (*Result, []byte, error) {
	p := s.actionPath(a)
	b, err := readFile(p, "action "+a.String())
	if err != nil {
		return nil, nil, err
	}
	r, err := decodeResult(b)
	if err != nil {
		return nil, nil, &CorruptError{What: "action record", Digest: Digest(a), Path: p, Err: err}
	}
	return r, b, nil
}

func decodeResult(b []byte) (*Result, error) {
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	return &r, checkKinds(r.Outputs)
}

// checkKinds checks that every output has a kind this store knows how to follow.
func checkKinds(outs []Output) error {
	for _, o := range outs {
		if o.Kind != KindBlob && o.Kind != KindSnapshot {
			return fmt.Errorf("output %q has unknown kind %q", o.Name, o.Kind)
		}
	}
	return nil
}

// checkNames checks that every blob r names is present.
func (s *Store) checkNames(r *Result) error {
	for _, o := range r.Outputs {
		if !s.Has(o.Digest) {
			return fmt.Errorf("output %q: blob %s: %w", o.Name, o.Digest, ErrIncomplete)
		}
	}
	if !r.Log.IsZero() && !s.Has(r.Log) {
		return fmt.Errorf("log: blob %s: %w", r.Log, ErrIncomplete)
	}
	return nil
}

// reach calls fn for every blob r reaches: its outputs, their snapshots' chunks, its
// log. It reads snapshot manifests, verifying them.
func (s *Store) reach(r *Result, fn func(Digest)) error {
	if err := s.reachOutputs(r.Outputs, fn); err != nil {
		return err
	}
	if !r.Log.IsZero() {
		fn(r.Log)
	}
	return nil
}

// reachOutputs calls fn for every blob outs reach: the outputs and their snapshots'
// chunks.
func (s *Store) reachOutputs(outs []Output, fn func(Digest)) error {
	for _, o := range outs {
		fn(o.Digest)
		if o.Kind == KindSnapshot {
			m, err := s.Manifest(o.Digest)
			if err != nil {
				return fmt.Errorf("output %q: %w", o.Name, err)
			}
			for _, c := range m.Chunks {
				fn(c.Digest)
			}
		}
	}
	return nil
}
