package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// remoteArgs are the flags that say how vmb reads and writes remotes: which keys
// it trusts and which key it signs with. $VMB_TRUST (key files separated by
// spaces) and $VMB_SIGNING_KEY (a key file) are their defaults.
type remoteArgs struct {
	trust         []string
	trustUnsigned bool
	signingKey    string
}

func remoteFlags(fs *flag.FlagSet) *remoteArgs {
	a := &remoteArgs{}
	fs.Func("trust", "accept remote records signed by the public key in `KEYFILE` (repeatable; default $VMB_TRUST)", func(v string) error {
		a.trust = append(a.trust, v)
		return nil
	})
	fs.BoolVar(&a.trustUnsigned, "trust-unsigned", false, "accept remote records without checking signatures (a remote only you write to)")
	fs.StringVar(&a.signingKey, "signing-key", "", "sign the records pushed with the secret key in `KEYFILE` (default $VMB_SIGNING_KEY)")
	return a
}

// keys reads the trusted keys and the signing key the flags or environment name.
func (a *remoteArgs) keys(e *env) (cas.Trust, *cas.SigningKey, error) {
	t := cas.Trust{Unsigned: a.trustUnsigned}
	files := a.trust
	if files == nil {
		files = strings.Fields(e.getenv("VMB_TRUST"))
	}
	for _, f := range files {
		k, err := cas.ReadPublicKey(f)
		if err != nil {
			return t, nil, err
		}
		t.Keys = append(t.Keys, k)
	}
	path := a.signingKey
	if path == "" {
		path = e.getenv("VMB_SIGNING_KEY")
	}
	if path == "" {
		return t, nil, nil
	}
	k, err := cas.ReadSigningKey(path)
	return t, k, err
}

// cachePush and cachePull move records and refs between the cache and a remote.
func cachePush(e *env, args []string) int { return cacheRemote(e, "push", args) }
func cachePull(e *env, args []string) int { return cacheRemote(e, "pull", args) }

func cacheRemote(e *env, verb string, args []string) int {
	c := newCacheCmd(e, "cache "+verb, "[--cache DIR] [--json] [--ref NAME]... [key flags] URL [ACTION-KEY...]")
	ra := remoteFlags(c.fs)
	var refs []string
	c.fs.Func("ref", "the ref NAME (e.g. appliance) and what it reaches; may be repeated", func(v string) error {
		refs = append(refs, v)
		return nil
	})
	if code := c.parse(args, 1, -1); code >= 0 {
		return code
	}
	ids := []cas.ActionID{}
	for _, a := range c.fs.Args()[1:] {
		id, err := cas.ParseActionID(a)
		if err != nil {
			fmt.Fprintf(e.stderr, "vmb cache %s: %v\n", verb, err)
			return exitInvalid
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 && refs == nil {
		if verb == "push" {
			ids = nil // everything: every record and every ref
		}
	} else if refs == nil {
		refs = []string{}
	}
	trust, key, err := ra.keys(e)
	if err != nil {
		fmt.Fprintf(e.stderr, "vmb cache %s: %v\n", verb, err)
		return exitInvalid
	}
	return c.do(func(ctx context.Context, s *cas.Store) (any, error) {
		r, err := cas.OpenRemote(ctx, c.fs.Arg(0))
		if err != nil {
			return nil, err
		}
		if verb == "push" {
			return cas.Push(ctx, r, s, ids, refs, key)
		}
		return cas.Pull(ctx, s, r, ids, refs, &trust)
	}, func(v any) {
		rep := v.(*cas.SyncReport)
		c.printf("%sed %d action records, %d refs and %d objects (%s); %d records and %d objects were there\n",
			verb, rep.Actions, rep.Refs, rep.Objects, graph.FormatSize(rep.Bytes), rep.SkippedAction, rep.SkippedObject)
	})
}

// runKey makes key pairs for signing records.
func runKey(e *env, args []string) int {
	if len(args) == 0 || args[0] != "generate" {
		fmt.Fprintln(e.stderr, "usage: vmb key generate [--out PREFIX] NAME")
		return exitInvalid
	}
	fs := newFlags(e, "key generate", "[--out PREFIX] NAME")
	out := fs.String("out", "", "write PREFIX.secret and PREFIX.public (default: NAME)")
	if code := parse(fs, args[1:]); code >= 0 {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitInvalid
	}
	name := fs.Arg(0)
	if *out == "" {
		*out = name
	}
	sec, pub, err := cas.GenerateKey(name)
	if err == nil {
		err = writeNew(*out+".secret", sec, 0o600)
	}
	if err == nil {
		err = writeNew(*out+".public", pub, 0o644)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "vmb key generate:", err)
		return exitFailed
	}
	fmt.Fprintf(e.stdout, "%s.secret: the secret key (set $VMB_SIGNING_KEY to it where vmb pushes)\n%s.public: the public key (give it to --trust or $VMB_TRUST where vmb pulls)\n",
		*out, *out)
	return exitOK
}

// writeNew writes a file that must not exist yet: a key is never overwritten.
func writeNew(path string, b []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}
