package cas

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Remotes are the remotes a solve reads its misses from, in order, and pushes its
// results to. A remote that fails (down, slow, erroring) is reported through Warn
// and not asked again by this value; a record that is refused (untrusted, corrupt,
// incomplete) is reported and not used. Either way the solve goes on locally.
type Remotes struct {
	Store   *Store
	Remotes []*Remote
	Trust   Trust
	Key     *SigningKey // signs what is pushed; nil pushes records unsigned
	Push    bool        // push results as Pushed reports them
	Warn    func(error)

	mu     sync.Mutex
	down   map[*Remote]bool
	queue  []ActionID
	wake   chan struct{}
	done   chan struct{}
	pushes SyncReport
}

// lookupTimeout bounds a look-up of one record on one remote.
const lookupTimeout = 20 * time.Second

func (rs *Remotes) warn(err error) {
	if rs.Warn != nil {
		rs.Warn(err)
	}
}

func (rs *Remotes) isDown(r *Remote) bool {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.down[r]
}

func (rs *Remotes) setDown(r *Remote, err error) {
	rs.mu.Lock()
	if rs.down == nil {
		rs.down = map[*Remote]bool{}
	}
	was := rs.down[r]
	rs.down[r] = true
	rs.mu.Unlock()
	if !was {
		rs.warn(fmt.Errorf("%w; going on without remote %s", err, r))
	}
}

// Lookup finds a's record on the remotes: the first that has one trusted and
// complete wins. It pulls the record's direct blobs (manifests, files, log) into
// the store and checks that the remote has the chunks the store lacks; the record
// enters the store once the store has everything it reaches (Fetch brings the
// chunks when they are read). A miss everywhere is ErrNotFound.
func (rs *Remotes) Lookup(ctx context.Context, a ActionID) (*Result, error) {
	for _, r := range rs.Remotes {
		if rs.isDown(r) {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, lookupTimeout)
		res, err := pullAction(lctx, rs.Store, r, a, &rs.Trust, true, &SyncReport{})
		cancel()
		switch {
		case err == nil:
			return res, nil
		case errors.Is(err, ErrNotFound) && !errors.Is(err, ErrIncomplete):
		case errors.Is(err, ErrUntrusted), errors.Is(err, ErrIncomplete), isCorrupt(err):
			rs.warn(fmt.Errorf("refused: %w", err))
		case ctx.Err() != nil:
			return nil, ctx.Err()
		default:
			rs.setDown(r, err)
		}
	}
	return nil, fmt.Errorf("action %s: %w", a, ErrNotFound)
}

func isCorrupt(err error) bool {
	var ce *CorruptError
	return errors.As(err, &ce)
}

// Fetch brings blob d from the first remote that has it into the store, verified:
// the store's fallback for a chunk a remote record named (Store.SetFetch).
func (rs *Remotes) Fetch(ctx context.Context, d Digest) error {
	for _, r := range rs.Remotes {
		if rs.isDown(r) {
			continue
		}
		_, err := r.fetchObject(ctx, rs.Store, d)
		if err == nil || errors.Is(err, ErrNotFound) {
			if err == nil {
				return nil
			}
			continue
		}
		if isCorrupt(err) {
			rs.warn(fmt.Errorf("refused: %w", err))
			continue
		}
		rs.setDown(r, err)
	}
	return fmt.Errorf("blob %s: %w on any remote", d, ErrNotFound)
}

// Pushed queues record a, which the store has just written, for pushing in the
// background to every remote (with Push set; otherwise it does nothing). Wait
// waits for the queue.
func (rs *Remotes) Pushed(a ActionID) {
	if !rs.Push {
		return
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	rs.queue = append(rs.queue, a)
	if rs.wake == nil {
		rs.wake, rs.done = make(chan struct{}, 1), make(chan struct{})
		go rs.pusher()
	}
	select {
	case rs.wake <- struct{}{}:
	default:
	}
}

func (rs *Remotes) pusher() {
	defer close(rs.done)
	for {
		rs.mu.Lock()
		q := rs.queue
		rs.queue = nil
		if len(q) == 0 {
			rs.wake = nil
			rs.mu.Unlock()
			return
		}
		rs.mu.Unlock()
		for _, r := range rs.Remotes {
			if rs.isDown(r) {
				continue
			}
			rep, err := Push(context.Background(), r, rs.Store, q, []string{}, rs.Key)
			rs.mu.Lock()
			rs.pushes.Add(rep)
			rs.mu.Unlock()
			if err != nil {
				rs.setDown(r, err)
			}
		}
	}
}

// Wait waits until what Pushed queued is pushed (or failed), and says what was.
func (rs *Remotes) Wait() SyncReport {
	rs.mu.Lock()
	done := rs.done
	rs.mu.Unlock()
	if done != nil {
		<-done
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.pushes
}
