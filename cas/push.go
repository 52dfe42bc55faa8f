package cas

import (
	"context"
	"fmt"
)

// Push uploads to r the records ids of s (nil: every record) and the refs names
// (nil: every ref), each with every blob it reaches, in that order: blobs first,
// then the record (signed with key, if one is given), then the ref. Nothing the
// remote has is uploaded or replaced but refs, so a push that stopped half-way is
// completed by the next. Blobs are sent as stored.
func Push(ctx context.Context, r *Remote, s *Store, ids []ActionID, refs []string, key *SigningKey) (*SyncReport, error) {
	rep := &SyncReport{}
	if ids == nil {
		var err error
		if ids, err = s.Actions(); err != nil {
			return rep, err
		}
	}
	for _, a := range ids {
		if err := pushAction(ctx, r, s, a, key, rep); err != nil {
			return rep, err
		}
	}
	if refs == nil {
		var err error
		if refs, err = s.Refs(); err != nil {
			return rep, err
		}
	}
	for _, name := range refs {
		ref, err := s.Ref(name)
		if err != nil {
			return rep, fmt.Errorf("push: %w", err)
		}
		for _, a := range ref.Actions {
			if err := pushAction(ctx, r, s, a, key, rep); err != nil {
				return rep, fmt.Errorf("push ref %s: %w", name, err)
			}
		}
		blobs, err := uniqueBlobs(func(fn func(Digest)) error { return s.reachOutputs(ref.Outputs, fn) })
		if err == nil {
			err = pushBlobs(ctx, r, s, blobs, rep)
		}
		if err == nil {
			b, _ := s.refBytes(name)
			err = r.putFile(ctx, refKey(name), b, false)
		}
		if err != nil {
			return rep, fmt.Errorf("push ref %s to %s: %w", name, r, err)
		}
		rep.Refs++
	}
	return rep, nil
}

// pushAction uploads record a of s, after the blobs it reaches, unless r has it.
func pushAction(ctx context.Context, r *Remote, s *Store, a ActionID, key *SigningKey, rep *SyncReport) error {
	res, b, err := s.readAction(a)
	if err != nil {
		return fmt.Errorf("push: %w", err)
	}
	if ok, err := r.b.Has(ctx, actionKey(a)); err != nil || ok {
		if ok {
			rep.SkippedAction++
		}
		return wrapRemote(r, "action "+a.String(), err)
	}
	blobs, err := uniqueBlobs(func(fn func(Digest)) error { return s.reach(res, fn) })
	if err == nil {
		err = pushBlobs(ctx, r, s, blobs, rep)
	}
	if err == nil && key != nil {
		b, err = key.sign(a, b)
	}
	if err == nil {
		err = r.putFile(ctx, actionKey(a), b, true)
	}
	if err != nil {
		return fmt.Errorf("push action %s to %s: %w", a, r, err)
	}
	rep.Actions++
	return nil
}

// pushWorkers is how many uploads run at once: requests to a server wait on the
// network more than on the CPU.
const pushWorkers = 16

func pushBlobs(ctx context.Context, r *Remote, s *Store, blobs []Digest, rep *SyncReport) error {
	return eachBlob(ctx, pushWorkers, blobs, rep, func(d Digest) (int64, bool, error) {
		return r.pushObject(ctx, s, d)
	})
}
