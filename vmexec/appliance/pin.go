package appliance

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vmb.dev/vmb/cas"
)

// A repository pins its executor in LockFile, at its root: a line
// "appliance <hex digest>" (blank lines and lines starting with # aside). A solve
// of a pinned repository uses exactly that appliance, from the cache or pulled from
// a remote, and never builds another. The pin enters no key but through the
// appliance's identity, which every key names anyway.

// LockFile is the name of the pin file in a repository's root directory.
const LockFile = "vmb.lock"

// ReadPin returns the appliance the repository in dir pins, or the zero digest if
// it has no lock file.
func ReadPin(dir string) (cas.Digest, error) {
	p := filepath.Join(dir, LockFile)
	b, err := os.ReadFile(p)
	if errors.Is(err, os.ErrNotExist) {
		return cas.Digest{}, nil
	}
	if err != nil {
		return cas.Digest{}, err
	}
	var pin cas.Digest
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) != 2 || f[0] != "appliance" {
			return cas.Digest{}, fmt.Errorf("%s:%d: want \"appliance DIGEST\"", p, n)
		}
		d, err := cas.ParseDigest(f[1])
		if err != nil {
			return cas.Digest{}, fmt.Errorf("%s:%d: %w", p, n, err)
		}
		if !pin.IsZero() && pin != d {
			return cas.Digest{}, fmt.Errorf("%s:%d: a second appliance", p, n)
		}
		pin = d
	}
	if pin.IsZero() {
		return cas.Digest{}, fmt.Errorf("%s: pins no appliance (want a line \"appliance DIGEST\")", p)
	}
	return pin, nil
}

// WritePin writes the lock file of the repository in dir, pinning appliance d.
func WritePin(dir string, d cas.Digest) error {
	b := fmt.Sprintf("# The build VM this repository is built with: vmb appliance pin moves it.\nappliance %s\n", d)
	return os.WriteFile(filepath.Join(dir, LockFile), []byte(b), 0o644)
}

// PinError is Choose's error when the pinned appliance is in neither the cache
// nor a remote: vmb builds no other.
type PinError struct {
	Pin     cas.Digest
	Current *Appliance // the cache's current appliance, or nil
	Tried   []error    // what each remote answered
}

func (e *PinError) Error() string {
	have := "none"
	if e.Current != nil {
		have = e.Current.Digest.String()
	}
	msg := fmt.Sprintf("the repository pins appliance %s; this cache has %s: vmb appliance pull URL --digest %s, or vmb appliance pin to move",
		e.Pin, have, e.Pin)
	for _, err := range e.Tried {
		msg += "\n\t" + err.Error()
	}
	return msg
}

// Sources are where Choose may pull an appliance from, and what it tells.
type Sources struct {
	Remotes []*cas.Remote                     // in order
	Warn    func(error)                       // a remote that failed (down, corrupt), then skipped
	Pulled  func(a *Appliance, r *cas.Remote) // a pulled from r
}

// Choose returns the appliance a solve uses in store. With a pin, that one: from
// the store, else pulled from the first remote that has it (and made current if
// the store has none), else a *PinError. Without one, the store's current
// appliance; if it has none, the first remote's current one, pulled and made
// current, since the remote's records were built with it. It returns nil and no
// error when there is no pin and neither the store nor a remote has an appliance:
// the caller builds one.
func Choose(ctx context.Context, store *cas.Store, pin cas.Digest, src Sources) (*Appliance, error) {
	cur, err := Load(store)
	if err != nil && !errors.Is(err, ErrNone) {
		return nil, err
	}
	if pin.IsZero() && cur != nil {
		return cur, nil
	}
	if !pin.IsZero() {
		if cur != nil && cur.Digest == pin {
			return cur, nil
		}
		if a, err := Get(store, pin); err == nil {
			if _, err := current(a); err != nil {
				return nil, fmt.Errorf("the pinned %w", err)
			}
			return a, a.Keep(store)
		}
	}
	var tried []error
	for _, r := range src.Remotes {
		a, err := Pull(ctx, store, r, pin)
		if err == nil {
			if _, serr := current(a); serr != nil {
				err = fmt.Errorf("remote %s: %w", r, serr)
			}
		}
		if err != nil {
			if !errors.Is(err, cas.ErrNotFound) && src.Warn != nil {
				src.Warn(err)
			}
			tried = append(tried, err)
			continue
		}
		if cur == nil {
			err = a.Use(store)
		}
		if src.Pulled != nil {
			src.Pulled(a, r)
		}
		return a, err
	}
	if !pin.IsZero() {
		return nil, &PinError{Pin: pin, Current: cur, Tried: tried}
	}
	return nil, nil
}
