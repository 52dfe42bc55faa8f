package cas

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"vmb.dev/vmb/internal/servertest"
)

// testRemote is a remote of one kind for one test, with where its files lie on disk.
type testRemote struct {
	url  string
	root string // the directory that holds objects/, actions/ and refs/
}

// remoteKinds are the backends every remote test runs against.
var remoteKinds = []struct {
	name string
	open func(t *testing.T) testRemote
}{
	{"dir", func(t *testing.T) testRemote {
		d := filepath.Join(t.TempDir(), "remote")
		return testRemote{d, d}
	}},
	{"nginx", func(t *testing.T) testRemote {
		s := servertest.Nginx(t)
		p := prefix(t)
		return testRemote{s.URL + "/" + p, filepath.Join(s.Root, p)}
	}},
	{"s3", func(t *testing.T) testRemote {
		s := servertest.S3(t)
		s.Setenv(t)
		p := prefix(t)
		return testRemote{s.URL + "/" + p, filepath.Join(s.Root, p)}
	}},
}

// prefix is a test's own place on a shared server, new on every run (-count).
func prefix(t *testing.T) string {
	return fmt.Sprintf("%s-%d", strings.ReplaceAll(t.Name(), "/", "-"), rand.Uint64())
}

func openRemote(t *testing.T, url string) *Remote {
	t.Helper()
	r, err := OpenRemote(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func testKey(t *testing.T, name string) (*SigningKey, *PublicKey) {
	t.Helper()
	sec, pub, err := GenerateKey(name)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "sec"), sec, 0o600)
	os.WriteFile(filepath.Join(dir, "pub"), pub, 0o644)
	k, err := ReadSigningKey(filepath.Join(dir, "sec"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := ReadPublicKey(filepath.Join(dir, "pub"))
	if err != nil {
		t.Fatal(err)
	}
	return k, p
}

func mustVerify(t *testing.T, s *Store) {
	t.Helper()
	rep, err := s.Verify(t.Context(), false)
	if err != nil || !rep.OK() {
		t.Fatalf("verify %s: %v %+v", s.Dir(), err, rep)
	}
}

// seedRemote builds a record and a ref in a store and pushes them, signed by key.
func seedRemote(t *testing.T, r *Remote, key *SigningKey) (*Store, ActionID, *Result) {
	t.Helper()
	src := newStore(t)
	a, res := buildAction(t, src, rand.New(rand.NewPCG(1, 2)), 4<<20)
	if err := src.SetRef("last/x", &Ref{Actions: []ActionID{a}}); err != nil {
		t.Fatal(err)
	}
	rep, err := Push(t.Context(), r, src, nil, nil, key)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Actions != 1 || rep.Refs != 1 || rep.Objects == 0 {
		t.Fatalf("push: %+v", rep)
	}
	return src, a, res
}

func TestRemoteRoundTrip(t *testing.T) {
	for _, k := range remoteKinds {
		t.Run(k.name, func(t *testing.T) {
			tr := k.open(t)
			r := openRemote(t, tr.url)
			key, pub := testKey(t, "a")
			src, a, res := seedRemote(t, r, key)

			// A second push sends nothing: the remote has it all.
			rep, err := Push(t.Context(), r, src, nil, nil, key)
			if err != nil || rep.Objects != 0 || rep.Actions != 0 || rep.SkippedAction != 2 { // the record, and again as the ref's
				t.Fatalf("second push: %+v, %v", rep, err)
			}

			dst := newStore(t)
			rep, err = Pull(t.Context(), dst, r, nil, nil, &Trust{Keys: []*PublicKey{pub}})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Refs != 1 || rep.Actions != 1 {
				t.Fatalf("pull: %+v", rep)
			}
			got, err := dst.GetAction(a)
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Signatures) != 1 || got.Signatures[0].Key != "a" {
				t.Errorf("pulled record signatures: %+v", got.Signatures)
			}
			got.Signatures = nil
			if diff := cmp.Diff(res, got); diff != "" {
				t.Errorf("pulled record (-pushed +pulled):\n%s", diff)
			}
			mustVerify(t, dst)
			if _, err := dst.Ref("last/x"); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestRemoteRefusesTampering(t *testing.T) {
	for _, k := range remoteKinds {
		t.Run(k.name, func(t *testing.T) {
			tr := k.open(t)
			r := openRemote(t, tr.url)
			key, pub := testKey(t, "a")
			_, a, res := seedRemote(t, r, key)
			trust := &Trust{Keys: []*PublicKey{pub}}

			// A changed byte in a blob: refused, nothing enters.
			p := filepath.Join(tr.root, filepath.FromSlash(objectKey(res.Log)))
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			bad := append([]byte(nil), b...)
			bad[len(bad)-8] ^= 1
			os.WriteFile(p, bad, 0o644)
			dst := newStore(t)
			_, err = Pull(t.Context(), dst, r, []ActionID{a}, []string{}, trust)
			if !isCorrupt(err) {
				t.Errorf("pull of a changed blob: %v, want a *CorruptError", err)
			}
			if dst.Has(res.Log) {
				t.Error("the changed blob entered the store")
			}
			if _, err := dst.GetAction(a); !errors.Is(err, ErrNotFound) {
				t.Errorf("record of a changed blob: %v, want not found", err)
			}
			mustVerify(t, dst)
			os.WriteFile(p, b, 0o644)

			// A record re-signed by a key nobody trusts, and one not signed at all.
			other, _ := testKey(t, "a") // the same name, another key
			rb, err := r.Action(t.Context(), a)
			if err != nil {
				t.Fatal(err)
			}
			resigned, err := other.sign(a, rb)
			if err != nil {
				t.Fatal(err)
			}
			unsigned := strings.Replace(string(rb), `"signatures"`, `"signaturesX"`, 1)
			for name, rec := range map[string][]byte{"resigned": resigned, "unsigned": []byte(unsigned)} {
				if err := r.putFile(t.Context(), actionKey(a), rec, false); err != nil {
					t.Fatal(err)
				}
				_, err = Pull(t.Context(), dst, r, []ActionID{a}, []string{}, trust)
				if err == nil || (!errors.Is(err, ErrUntrusted) && name == "resigned") {
					t.Errorf("%s record: %v, want refused", name, err)
				}
				if _, err := dst.GetAction(a); !errors.Is(err, ErrNotFound) {
					t.Errorf("%s record entered the store: %v", name, err)
				}
			}
			noSig, _ := decodeStrict(rb)
			noSig.Signatures = nil
			if _, err := (&Trust{Keys: []*PublicKey{pub}}).check(a, mustJSON(t, noSig)); !errors.Is(err, ErrUntrusted) {
				t.Errorf("unsigned record: %v, want ErrUntrusted", err)
			}
			mustVerify(t, dst)
		})
	}
}

func mustJSON(t *testing.T, r *Result) []byte {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A solve's look-up pulls a record's manifests, not its chunks, uses a record only
// when the remote has every chunk, and fetches chunks when a disk is materialized.
func TestRemotesLookup(t *testing.T) {
	for _, k := range remoteKinds {
		t.Run(k.name, func(t *testing.T) {
			tr := k.open(t)
			r := openRemote(t, tr.url)
			key, pub := testKey(t, "a")
			src, a, res := seedRemote(t, r, key)

			dst := newStore(t)
			var warnings []error
			rs := &Remotes{Store: dst, Remotes: []*Remote{r}, Trust: Trust{Keys: []*PublicKey{pub}},
				Warn: func(err error) { warnings = append(warnings, err) }}
			dst.SetFetch(rs.Fetch)
			got, err := rs.Lookup(t.Context(), a)
			if err != nil {
				t.Fatal(err)
			}
			snap := got.Outputs[0].Digest
			m, err := src.Manifest(snap)
			if err != nil {
				t.Fatal(err)
			}
			if !dst.Has(snap) || !dst.Has(res.Log) || dst.Has(m.Chunks[0].Digest) {
				t.Error("look-up: want the manifest and log pulled, not the chunks")
			}
			if _, err := dst.GetAction(a); !errors.Is(err, ErrNotFound) {
				t.Errorf("a record whose chunks are remote entered the store: %v", err)
			}
			disk := filepath.Join(t.TempDir(), "disk")
			if err := dst.Materialize(t.Context(), snap, disk); err != nil {
				t.Fatal(err)
			}
			if !dst.Has(m.Chunks[0].Digest) {
				t.Error("materialize did not fetch the chunks")
			}
			mustVerify(t, dst)

			// Completeness: a chunk gone from the remote makes the record unusable.
			os.Remove(filepath.Join(tr.root, filepath.FromSlash(objectKey(m.Chunks[1].Digest))))
			fresh := newStore(t)
			rs.Store = fresh
			if _, err := rs.Lookup(t.Context(), a); !errors.Is(err, ErrNotFound) {
				t.Errorf("look-up of an incomplete record: %v, want a miss", err)
			}
			if len(warnings) != 1 || !errors.Is(warnings[0], ErrIncomplete) {
				t.Errorf("warnings: %v, want one about a missing blob", warnings)
			}
			mustVerify(t, fresh)
		})
	}
}

// A server that is down makes a look-up warn once and miss.
func TestRemotesDown(t *testing.T) {
	s := servertest.StartNginx(t)
	r := openRemote(t, s.URL+"/c")
	s.Kill()
	var warnings []error
	rs := &Remotes{Store: newStore(t), Remotes: []*Remote{r}, Trust: Trust{Unsigned: true},
		Warn: func(err error) { warnings = append(warnings, err) }}
	for range 2 {
		if _, err := rs.Lookup(t.Context(), ActionID{1}); !errors.Is(err, ErrNotFound) {
			t.Errorf("look-up on a server that is down: %v, want a miss", err)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0].Error(), "going on without remote") {
		t.Errorf("warnings: %v, want one", warnings)
	}
}

// A push cut short by the server's death is completed by the next one.
func TestPushInterrupted(t *testing.T) {
	s := servertest.StartNginx(t)
	r := openRemote(t, s.URL+"/c")
	src := newStore(t)
	rnd := rand.New(rand.NewPCG(3, 4))
	var ids []ActionID
	for range 8 {
		a, _ := buildAction(t, src, rnd, 8<<20)
		ids = append(ids, a)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error)
	go func() {
		_, err := Push(ctx, r, src, ids, []string{}, nil)
		done <- err
	}()
	objects := filepath.Join(s.Root, "c", objectsDir)
	for countFilesIn(objects) < 20 {
		select {
		case err := <-done:
			t.Fatalf("push finished before the kill: %v", err)
		default:
		}
	}
	s.Kill()
	if err := <-done; err == nil {
		t.Fatal("push to a killed server succeeded")
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	rep, err := Push(t.Context(), r, src, ids, []string{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The first push may have been cut between two actions (whose records then
	// skip all their blobs) or inside one (whose sent blobs are skipped).
	if rep.SkippedObject+rep.SkippedAction == 0 || rep.Actions == 0 || rep.Actions+rep.SkippedAction != len(ids) {
		t.Errorf("second push: %+v, want it to skip what the first sent and send the rest", rep)
	}
	dst := newStore(t)
	if _, err := Pull(t.Context(), dst, r, ids, []string{}, &Trust{Unsigned: true}); err != nil {
		t.Fatal(err)
	}
	mustVerify(t, dst)
}

func countFilesIn(dir string) int {
	n := 0
	filepath.WalkDir(dir, func(_ string, de os.DirEntry, err error) error {
		if err == nil && !de.IsDir() {
			n++
		}
		return nil
	})
	return n
}
