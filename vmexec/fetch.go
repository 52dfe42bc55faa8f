package vmexec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
)

// A fetched file is a blob in the cas, found by its pinned digest through an action
// record (fetchID) whose one output, "file", is the blob: downloaded once per cache,
// carried by cache sync, verified on every read like every blob. For the job disk,
// fetch writes it out to scratch/fetch/<algorithm>-<hex> from the blob each time,
// checking the pinned digest again on the way, so that a corrupt or replaced copy
// is never used: it is downloaded again.

// fetchID is the record that maps a pinned digest ("sha256:<hex>") to its blob.
func fetchID(pin string) cas.ActionID { return cas.ActionID(cas.Sum([]byte("vmb fetch " + pin))) }

// pinHash returns the hash a pin names: sha256, else BLAKE3-256.
func pinHash(algo string) hash.Hash {
	if algo == "sha256" {
		return sha256.New()
	}
	return cas.NewHasher()
}

// fetch returns the path of a file holding the content of a fetch job's URL,
// checked against its pinned digest: from the cas if it is there and sound, else
// downloaded and stored.
func (x *Executor) fetch(ctx context.Context, j *graph.Fetch) (string, error) {
	algo, want, _ := strings.Cut(j.Digest, ":")
	dir, err := x.Store.Scratch("fetch")
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, algo+"-"+want)
	if rec, err := x.Store.GetAction(fetchID(j.Digest)); err == nil {
		if o, ok := rec.Output("file"); ok {
			err := atomicfile.Write(p, 0o644, func(w io.Writer) error {
				r, err := x.Store.Open(o.Digest)
				if err != nil {
					return err
				}
				defer r.Close()
				return copyPinned(w, r, algo, want) // r itself fails at EOF on a corrupt blob
			})
			if err == nil {
				return p, nil
			}
			// Corrupt, or not what the pin says: download it again.
		}
	}
	req, err := http.NewRequestWithContext(ctx, "GET", j.URL, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", j.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("fetch %s: %s", j.URL, resp.Status)
	}
	err = atomicfile.Write(p, 0o644, func(w io.Writer) error { return copyPinned(w, resp.Body, algo, want) })
	if err == nil {
		err = x.storeFetched(j, p)
	}
	if err != nil {
		return "", fmt.Errorf("fetch %s: %w", j.URL, err)
	}
	return p, nil
}

// storeFetched stores the downloaded file at p as a blob, and the record that finds
// it by the job's pin.
func (x *Executor) storeFetched(j *graph.Fetch, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	d, _, err := x.Store.Put(f)
	if err != nil {
		return err
	}
	return x.Store.PutAction(fetchID(j.Digest), &cas.Result{
		Outputs: []cas.Output{{Name: "file", Kind: cas.KindBlob, Digest: d}}, Executor: "vmb fetch " + j.URL})
}

// copyPinned copies r to w and checks that what it copied hashes to the pinned hex
// digest want under algo.
func copyPinned(w io.Writer, r io.Reader, algo, want string) error {
	h := pinHash(algo)
	if _, err := io.Copy(io.MultiWriter(w, h), r); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("content has %s:%s, the definition pins %s:%s", algo, got, algo, want)
	}
	return nil
}
