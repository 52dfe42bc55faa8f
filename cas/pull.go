package cas

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// Pull copies from r into s the records ids and the refs names (nil: every ref of
// r), each with every blob it reaches: blobs verified by BLAKE3 as they arrive,
// records only if trust accepts them, each written after its blobs and refs after
// what they reach, as Sync does.
func Pull(ctx context.Context, s *Store, r *Remote, ids []ActionID, refs []string, trust *Trust) (*SyncReport, error) {
	rep := &SyncReport{}
	for _, a := range ids {
		if _, err := pullAction(ctx, s, r, a, trust, false, rep); err != nil {
			return rep, err
		}
	}
	if refs == nil {
		var err error
		if refs, err = r.Refs(ctx); err != nil {
			return rep, err
		}
	}
	for _, name := range refs {
		ref, err := r.Ref(ctx, name)
		if err != nil {
			return rep, fmt.Errorf("pull: %w", err)
		}
		for _, a := range ref.Actions {
			if _, err := pullAction(ctx, s, r, a, trust, false, rep); err != nil {
				return rep, fmt.Errorf("pull ref %s: %w", name, err)
			}
		}
		if err := pullOutputs(ctx, s, r, ref.Outputs, false, rep); err != nil {
			return rep, fmt.Errorf("pull ref %s: %w", name, err)
		}
		if err := s.SetRef(name, ref); err != nil {
			return rep, fmt.Errorf("pull: %w", err)
		}
		rep.Refs++
	}
	return rep, nil
}

// pullAction brings record a from r into s, if trust accepts it and r has every
// blob it reaches. Eagerly, it pulls them all and then writes the record. Lazily,
// it pulls the blobs the record names (snapshot manifests, files, the log) and
// checks that r has the chunks s lacks; it writes the record only if s then has
// everything it reaches, and returns it either way: the caller fetches chunks when
// it needs them.
func pullAction(ctx context.Context, s *Store, r *Remote, a ActionID, trust *Trust, lazy bool, rep *SyncReport) (*Result, error) {
	if res, _, err := s.readAction(a); err == nil {
		if err := s.checkNames(res); err == nil {
			rep.SkippedAction++
			return res, nil
		}
	}
	b, err := r.Action(ctx, a)
	if err != nil {
		return nil, err
	}
	res, err := trust.check(a, b)
	if err != nil {
		return nil, fmt.Errorf("remote %s: %w", r, err)
	}
	outs := res.Outputs
	if !res.Log.IsZero() {
		outs = append(outs[:len(outs):len(outs)], Output{Name: "log", Kind: KindBlob, Digest: res.Log})
	}
	if err := pullOutputs(ctx, s, r, outs, lazy, rep); err != nil {
		return nil, fmt.Errorf("action %s: %w", a, err)
	}
	if lazy {
		complete := true
		s.reach(res, func(d Digest) { complete = complete && s.Has(d) })
		if !complete {
			return res, nil
		}
	}
	if err := s.writeFile(s.actionPath(a), func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	}); err != nil {
		return nil, err
	}
	rep.Actions++
	return res, nil
}

// pullOutputs pulls the blobs outs name and, eagerly, their snapshots' chunks; lazily
// it only checks that r has the chunks s lacks.
func pullOutputs(ctx context.Context, s *Store, r *Remote, outs []Output, lazy bool, rep *SyncReport) error {
	var direct []Digest
	for _, o := range outs {
		direct = append(direct, o.Digest)
	}
	if err := pullBlobs(ctx, s, r, direct, false, rep); err != nil {
		return err
	}
	var chunks []Digest
	seen := map[Digest]bool{}
	for _, o := range outs {
		if o.Kind != KindSnapshot {
			continue
		}
		m, err := s.Manifest(o.Digest)
		if err != nil {
			return fmt.Errorf("output %q: %w", o.Name, err)
		}
		for _, c := range m.Chunks {
			if !seen[c.Digest] {
				seen[c.Digest] = true
				chunks = append(chunks, c.Digest)
			}
		}
	}
	return pullBlobs(ctx, s, r, chunks, lazy, rep)
}

// pullBlobs copies the blobs s lacks from r, in parallel; with check set, it only
// checks that r has them (a HEAD each). A blob r lacks is ErrIncomplete.
func pullBlobs(ctx context.Context, s *Store, r *Remote, blobs []Digest, check bool, rep *SyncReport) error {
	return eachBlob(ctx, pushWorkers, blobs, rep, func(d Digest) (int64, bool, error) {
		if s.used(s.objectPath(d)) {
			return 0, false, nil
		}
		if check {
			ok, err := r.HasObject(ctx, d)
			if err == nil && !ok {
				err = fmt.Errorf("remote %s: blob %s: %w", r, d, ErrIncomplete)
			}
			return 0, false, err
		}
		n, err := r.fetchObject(ctx, s, d)
		if errors.Is(err, ErrNotFound) {
			err = fmt.Errorf("%w: %w", err, ErrIncomplete)
		}
		return n, err == nil, err
	})
}

// Fetch copies the blobs s lacks among blobs from r, each verified by BLAKE3 before
// it enters s: what a caller that knows the digests it wants (the appliance's
// manifest, then its kernel and initramfs) pulls without a ref or a record. A blob
// r lacks is an error wrapping ErrNotFound; one that does not verify, a *CorruptError.
func (r *Remote) Fetch(ctx context.Context, s *Store, blobs ...Digest) error {
	return pullBlobs(ctx, s, r, blobs, false, &SyncReport{})
}
