package appliance

import (
	"context"
	"encoding/json"
	"fmt"

	"vmb.dev/vmb/cas"
)

// An appliance travels between caches as three blobs: its manifest, whose digest
// names it, and the kernel and initramfs the manifest names by digest. Fetching
// the manifest by its digest, then what it names, verifies the whole appliance by
// BLAKE3, with no signature: the digest alone says which appliance it is. Besides
// the current one (ref "appliance"), a store keeps appliances under
// "appliances/<hex digest>": one pulled, pushed or pinned stays through gc when
// another becomes current, and a remote can offer several.

// keptRef is the ref that keeps appliance d besides the current one.
func keptRef(d cas.Digest) string { return "appliances/" + d.String() }

// Keep makes store keep a under appliances/<digest>, whatever becomes current.
func (a *Appliance) Keep(store *cas.Store) error { return store.SetRef(keptRef(a.Digest), a.ref()) }

// Use makes a store's current appliance (and keeps it).
func (a *Appliance) Use(store *cas.Store) error {
	if err := a.Keep(store); err != nil {
		return err
	}
	return a.install(store)
}

// Get returns appliance d if store has it, current or not; ErrNone if it does not.
func Get(store *cas.Store, d cas.Digest) (*Appliance, error) {
	if !store.Has(d) {
		return nil, fmt.Errorf("appliance %s: %w", d.Short(), ErrNone)
	}
	return loadDigest(store, d)
}

// Current returns the digest of r's current appliance (its ref "appliance"); an
// error wrapping cas.ErrNotFound if r has none.
func Current(ctx context.Context, r *cas.Remote) (cas.Digest, error) {
	ref, err := r.Ref(ctx, RefName)
	if err != nil {
		return cas.Digest{}, err
	}
	if mo, ok := ref.Output("manifest"); ok {
		return mo.Digest, nil
	}
	if len(ref.Outputs) == 1 && ref.Outputs[0].Name == "" {
		return ref.Outputs[0].Digest, nil
	}
	return cas.Digest{}, fmt.Errorf("remote %s: its appliance ref names no manifest", r)
}

// Pull copies appliance want from r into store, verified, and keeps it there
// (appliances/<digest>); it does not make it current (Use does). With want zero it
// pulls r's current appliance. An appliance r lacks is an error wrapping
// cas.ErrNotFound; a blob that does not verify is refused (a *cas.CorruptError)
// and enters nothing.
func Pull(ctx context.Context, store *cas.Store, r *cas.Remote, want cas.Digest) (*Appliance, error) {
	if want.IsZero() {
		d, err := Current(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("pull the appliance: %w", err)
		}
		want = d
	}
	if err := r.Fetch(ctx, store, want); err != nil {
		return nil, fmt.Errorf("pull appliance %s: %w", want.Short(), err)
	}
	b, err := store.Get(want)
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil || m.Kernel.IsZero() || m.Initrd.IsZero() {
		return nil, fmt.Errorf("pull appliance %s from %s: blob is not an appliance manifest", want.Short(), r)
	}
	if err := r.Fetch(ctx, store, m.Kernel, m.Initrd); err != nil {
		return nil, fmt.Errorf("pull appliance %s: %w", want.Short(), err)
	}
	a, err := loadDigest(store, want)
	if err != nil {
		return nil, err
	}
	return a, a.Keep(store)
}

// Push uploads store's current appliance to r with its kernel and initramfs,
// under appliances/<digest> and as r's current appliance, and returns it.
func Push(ctx context.Context, r *cas.Remote, store *cas.Store) (*Appliance, *cas.SyncReport, error) {
	a, err := Load(store)
	if err != nil {
		return nil, nil, err
	}
	if err := a.Keep(store); err != nil {
		return nil, nil, err
	}
	rep, err := cas.Push(ctx, r, store, []cas.ActionID{}, []string{keptRef(a.Digest), RefName}, nil)
	return a, rep, err
}
