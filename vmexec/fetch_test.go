package vmexec

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
)

// TestFetch: a fetched file is downloaded once per cache, kept as a blob, and a
// copy that is corrupt or was replaced is never used.
func TestFetch(t *testing.T) {
	content := []byte("the release tarball\n")
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.Write(content)
	}))
	defer srv.Close()
	store, err := cas.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	x := &Executor{Store: store}
	sum := sha256.Sum256(content)
	j := &graph.Fetch{URL: srv.URL + "/f.tar", Digest: "sha256:" + hex.EncodeToString(sum[:])}

	fetch := func(what string, wantRequests int32) string {
		t.Helper()
		p, err := x.fetch(t.Context(), j)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if b, _ := os.ReadFile(p); string(b) != string(content) {
			t.Fatalf("%s: fetch gave %q, want %q", what, b, content)
		}
		if n := requests.Load(); n != wantRequests {
			t.Fatalf("%s: %d downloads, want %d", what, n, wantRequests)
		}
		return p
	}
	p := fetch("first fetch", 1)
	fetch("second fetch, from the cache", 1)

	// The copy handed to a job is replaced: it is written again from the blob.
	os.WriteFile(p, []byte("something else entirely"), 0o644)
	fetch("after the copy was replaced", 1)

	// The blob itself is corrupt: verification catches it and the file is downloaded again.
	rec, err := store.GetAction(fetchID(j.Digest))
	if err != nil {
		t.Fatal(err)
	}
	o, _ := rec.Output("file")
	bi, err := store.Stat(o.Digest)
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(bi.Path, 0o644)
	os.WriteFile(bi.Path, []byte("garbage"), 0o644)
	fetch("after the blob was corrupted", 2)

	// Content that does not match the pin is an error, and nothing is stored for it.
	bad := &graph.Fetch{URL: srv.URL + "/other", Digest: "sha256:" + strings.Repeat("0", 64)}
	if _, err := x.fetch(t.Context(), bad); err == nil || !strings.Contains(err.Error(), "the definition pins") {
		t.Fatalf("fetch with a wrong pin: %v", err)
	}
	if _, err := store.GetAction(fetchID(bad.Digest)); err == nil {
		t.Error("a record was stored for content that did not match its pin")
	}
}
