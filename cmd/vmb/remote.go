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
	"vmb.dev/vmb/vmexec/appliance"
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

// keys reads the trusted keys and the signing key the flags, the environment or
// the config file name, the first that names any.
func (a *remoteArgs) keys(e *env) (cas.Trust, *cas.SigningKey, error) {
	t := cas.Trust{Unsigned: a.trustUnsigned}
	cfg, err := loadConfig(e)
	if err != nil {
		return t, nil, err
	}
	files := a.trust
	if files == nil {
		files = strings.Fields(e.getenv("VMB_TRUST"))
	}
	if len(files) == 0 {
		files = cfg.trust
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
		path = cfg.signingKey
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
	c := newCacheCmd(e, "cache "+verb, "[--cache DIR] [--json] [--ref NAME]... [-t KEY=VALUE]... [key flags] URL [ACTION-KEY... | [DIR] [IMAGE...]]")
	ra := remoteFlags(c.fs)
	tags := tagsFlag(c.fs)
	var refs []string
	c.fs.Func("ref", "the ref NAME (e.g. appliance) and what it reaches; may be repeated", func(v string) error {
		refs = append(refs, v)
		return nil
	})
	if code := c.parse(args, 1, -1); code >= 0 {
		return code
	}
	url, rest := c.fs.Arg(0), c.fs.Args()[1:]
	ids := []cas.ActionID{}
	byImage := false
	for _, a := range rest {
		id, err := cas.ParseActionID(a)
		if err != nil {
			byImage = true
			break
		}
		ids = append(ids, id)
	}
	if !byImage && len(ids) == 0 && refs == nil {
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
		r, err := cas.OpenRemote(ctx, url)
		if err != nil {
			return nil, err
		}
		if byImage {
			if ids, err = imageActions(ctx, e, s, r, verb, rest, *tags); err != nil {
				return nil, err
			}
			if _, err := s.Ref(appliance.RefName); verb == "push" && err == nil {
				refs = append(refs, appliance.RefName) // the appliance travels with its images
			}
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

// imageActions returns the records a push or pull of images carries: args are
// [DIR] [IMAGE...] (every image of DIR, default ".", if none is named). A push
// carries each of their nodes that this cache has a record of, a pull each that
// the remote has; the keys are those of the appliance a solve would choose (for a
// pull, the remote's when this cache has none and the repository pins none).
func imageActions(ctx context.Context, e *env, s *cas.Store, r *cas.Remote, verb string, args, tags []string) ([]cas.ActionID, error) {
	dir, _, images, code := repository(e, "", args)
	if code >= 0 {
		return nil, errors.New("no repository")
	}
	var remotes []string
	if verb == "pull" {
		remotes = []string{r.String()}
	}
	g, _, code := prepare(ctx, e, s, dir, tags, remotes, true, true)
	if code >= 0 {
		return nil, fmt.Errorf("the definitions in %s do not compile (above)", dir)
	}
	nodes, err := g.Select(images...)
	if err != nil {
		return nil, err
	}
	ids := []cas.ActionID{}
	for _, n := range nodes {
		a := cas.ActionID(n.Key)
		var have bool
		if verb == "push" {
			_, err = s.GetAction(a)
			have = err == nil
		} else if have, err = r.HasAction(ctx, a); err != nil {
			return nil, err
		}
		if have {
			ids = append(ids, a)
		}
	}
	return ids, nil
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
