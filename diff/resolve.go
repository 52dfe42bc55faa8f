package diff

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"vmb.dev/vmb/cas"
)

// Resolve finds the snapshot that arg names in s: a snapshot's digest, or the key
// of an action record (a node of a build) whose output disk is meant; either may be
// abridged to its first digits (at least 6), as long as one thing in the cache
// begins so. A record with several disks needs disk, the disk's name.
func Resolve(s *cas.Store, arg, disk string) (cas.Digest, error) {
	if len(arg) < 6 {
		return cas.Digest{}, fmt.Errorf("%q: want a snapshot digest or an action key, at least 6 hex digits", arg)
	}
	blobs, actions, err := s.Lookup(arg)
	if err != nil {
		return cas.Digest{}, err
	}
	var found []cas.Digest
	var errs []error
	for _, b := range blobs {
		if _, err := s.Manifest(b); err == nil {
			found = append(found, b)
		}
	}
	for _, a := range actions {
		rec, err := s.GetAction(a)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		d, err := RecordDisk(rec, disk)
		if err != nil {
			errs = append(errs, fmt.Errorf("action %s: %w", a.String()[:12], err))
			continue
		}
		found = append(found, d)
	}
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return cas.Digest{}, fmt.Errorf("%q names more than one snapshot: give more digits", arg)
	case len(errs) > 0:
		return cas.Digest{}, errors.Join(errs...)
	}
	return cas.Digest{}, fmt.Errorf("%q: no snapshot or action record in the cache begins so", arg)
}

// RecordDisk returns the snapshot of the disk called disk among an action record's
// outputs ("disk:NAME"); with disk "", the record's only disk.
func RecordDisk(rec *cas.Result, disk string) (cas.Digest, error) {
	var names []string
	for _, o := range rec.Outputs {
		name, ok := strings.CutPrefix(o.Name, "disk:")
		if !ok || o.Kind != cas.KindSnapshot {
			continue
		}
		if name == disk {
			return o.Digest, nil
		}
		names = append(names, name)
	}
	sort.Strings(names)
	switch {
	case len(names) == 0:
		return cas.Digest{}, errors.New("the record has no disk")
	case disk == "" && len(names) == 1:
		o, _ := rec.Output("disk:" + names[0])
		return o.Digest, nil
	case disk == "":
		return cas.Digest{}, fmt.Errorf("the record has disks %s: choose one with --disk", strings.Join(names, ", "))
	}
	return cas.Digest{}, fmt.Errorf("the record has no disk %q (it has %s)", disk, strings.Join(names, ", "))
}
