package cas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// A ref is a named root of the store, as a branch is in git: a small file under
// refs/ that names blobs and action records. gc keeps everything a ref reaches,
// whatever its age and whatever the budget; sync carries refs with what they reach.
// vmb's refs are the appliance ("appliance") and the last build of each image
// ("last/…").

// Ref is what a ref names.
type Ref struct {
	// Outputs are blobs, and snapshots with their chunks, that the ref keeps.
	Outputs []Output `json:"outputs,omitempty"`
	// Actions are action records the ref keeps, with everything they reach.
	Actions []ActionID `json:"actions,omitempty"`
}

// Output returns the output called name.
func (r *Ref) Output(name string) (Output, bool) { return outputNamed(r.Outputs, name) }

func outputNamed(outs []Output, name string) (Output, bool) {
	for _, o := range outs {
		if o.Name == name {
			return o, true
		}
	}
	return Output{}, false
}

const refsDir = "refs"

// refName is the grammar of a ref name: slash-separated words of lower-case
// letters, digits, '-' and '_'. No dots: nothing else under refs/ looks like one.
var refName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$`)

func checkRefName(name string) error {
	if !refName.MatchString(name) {
		return fmt.Errorf("ref name %q: want words of a-z, 0-9, '-' and '_' separated by '/'", name)
	}
	return nil
}

func (s *Store) refPath(name string) string {
	return filepath.Join(s.dir, refsDir, filepath.FromSlash(name))
}

// SetRef makes name refer to r. Every blob and record r names must already be in
// the store (ErrIncomplete otherwise): like a record, a ref is written last. Setting
// a ref to what it already holds writes nothing.
func (s *Store) SetRef(name string, r *Ref) error {
	if err := checkRefName(name); err != nil {
		return err
	}
	for _, o := range r.Outputs {
		if !s.Has(o.Digest) {
			return fmt.Errorf("set ref %s: output %q: blob %s: %w", name, o.Name, o.Digest, ErrIncomplete)
		}
	}
	for _, a := range r.Actions {
		if _, err := os.Stat(s.actionPath(a)); err != nil {
			return fmt.Errorf("set ref %s: action %s: %w", name, a, ErrIncomplete)
		}
	}
	b, err := json.MarshalIndent(r, "", "\t")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	p := s.refPath(name)
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return s.writeFile(p, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Ref returns what name refers to. It fails with ErrNotFound if there is no such
// ref and with a *CorruptError if it cannot be read. A ref file that holds only a
// digest in hex (how vmb wrote refs/appliance before refs were the store's) names
// that one blob, as an output with no name.
func (s *Store) Ref(name string) (*Ref, error) {
	if err := checkRefName(name); err != nil {
		return nil, err
	}
	p := s.refPath(name)
	b, err := readFile(p, "ref "+name)
	if err != nil {
		return nil, err
	}
	r, err := decodeRef(b)
	if err != nil {
		return nil, &CorruptError{What: "ref " + name, Path: p, Err: err}
	}
	return r, nil
}

// decodeRef decodes the bytes of a ref file.
func decodeRef(b []byte) (*Ref, error) {
	if d, err := ParseDigest(strings.TrimSpace(string(b))); err == nil {
		return &Ref{Outputs: []Output{{Kind: KindBlob, Digest: d}}}, nil
	}
	var r Ref
	err := json.Unmarshal(b, &r)
	if err == nil {
		err = checkKinds(r.Outputs)
	}
	return &r, err
}

// refBytes returns the file of ref name as it is stored.
func (s *Store) refBytes(name string) ([]byte, error) {
	return readFile(s.refPath(name), "ref "+name)
}

// DeleteRef removes ref name, if there is one. What only it kept, gc may then take.
func (s *Store) DeleteRef(name string) error {
	if err := checkRefName(name); err != nil {
		return err
	}
	if err := os.Remove(s.refPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete ref %s: %w", name, err)
	}
	return nil
}

// Refs lists the names of the store's refs, sorted. Files under refs/ whose names
// are not ref names (left by older versions of vmb) are not refs.
func (s *Store) Refs() ([]string, error) {
	names, _, err := s.walkRefs()
	return names, err
}

// walkRefs lists the refs under refs/, and the paths of the files there that are not refs.
func (s *Store) walkRefs() (names, stray []string, err error) {
	root := filepath.Join(s.dir, refsDir)
	err = filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil || de.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if name := filepath.ToSlash(rel); checkRefName(name) == nil {
			names = append(names, name)
		} else {
			stray = append(stray, p)
		}
		return nil
	})
	sort.Strings(names)
	return names, stray, err
}

// reachRef calls fn for every blob r reaches: its outputs with their chunks, and
// what its records reach. A part it cannot follow (a missing record or manifest)
// is skipped: a root keeps what it can still reach.
func (s *Store) reachRef(r *Ref, fn func(Digest)) {
	for _, o := range r.Outputs {
		s.reachOutputs([]Output{o}, fn)
	}
	for _, a := range r.Actions {
		if rec, _, err := s.readAction(a); err == nil {
			s.reach(rec, fn)
		}
	}
}
