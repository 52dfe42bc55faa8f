package cas

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"vmb.dev/vmb/internal/servertest"
)

// BenchmarkRemoteThroughput pushes and pulls one record (a 128 MiB disk snapshot of
// random, incompressible data) to and from nginx, against curl putting and getting one
// file of the same bytes to the same server: the ratios are what to read.
//
//	go test -run '^$' -bench RemoteThroughput -benchtime 5x ./cas
func BenchmarkRemoteThroughput(b *testing.B) {
	if _, err := exec.LookPath("curl"); err != nil {
		b.Skip("no curl")
	}
	srv := servertest.StartNginx(b)
	src := newStore(b)
	disk := filepath.Join(b.TempDir(), "disk")
	if err := os.WriteFile(disk, randBytes(rand.New(rand.NewPCG(5, 6)), 128<<20), 0o644); err != nil {
		b.Fatal(err)
	}
	snap, _, err := src.IngestDisk(b.Context(), disk, IngestOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var a ActionID
	copy(a[:], randBytes(rand.New(rand.NewPCG(7, 7)), Size))
	if err := src.PutAction(a, &Result{Outputs: []Output{{Name: "root", Kind: KindSnapshot, Digest: snap}}, Executor: "bench"}); err != nil {
		b.Fatal(err)
	}
	open := func(prefix string) *Remote {
		r, err := OpenRemote(b.Context(), srv.URL+"/"+prefix)
		if err != nil {
			b.Fatal(err)
		}
		return r
	}
	// What a push sends, once, for the size of curl's file.
	rep, err := Push(b.Context(), open("first"), src, []ActionID{a}, []string{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(b.TempDir(), "same-bytes")
	if err := os.WriteFile(file, randBytes(rand.New(rand.NewPCG(7, 8)), int(rep.Bytes)), 0o644); err != nil {
		b.Fatal(err)
	}
	curl := func(args ...string) {
		if out, err := exec.Command("curl", append([]string{"-sSf"}, args...)...).CombinedOutput(); err != nil {
			b.Fatalf("curl %v: %v\n%s", args, err, out)
		}
	}
	b.Run("vmb-push", func(b *testing.B) {
		b.SetBytes(rep.Bytes)
		for i := 0; b.Loop(); i++ {
			if _, err := Push(b.Context(), open(fmt.Sprint("push", i)), src, []ActionID{a}, []string{}, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("curl-put", func(b *testing.B) {
		b.SetBytes(rep.Bytes)
		for i := 0; b.Loop(); i++ {
			curl("-T", file, fmt.Sprintf("%s/curl/%d", srv.URL, i))
		}
	})
	b.Run("vmb-pull", func(b *testing.B) {
		b.SetBytes(rep.Bytes)
		for b.Loop() {
			if _, err := Pull(b.Context(), newStore(b), open("first"), []ActionID{a}, []string{}, &Trust{Unsigned: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The same pull from a directory remote: what is the store's, not the network's.
	dir, err := OpenRemote(b.Context(), filepath.Join(b.TempDir(), "remote"))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := Push(b.Context(), dir, src, []ActionID{a}, []string{}, nil); err != nil {
		b.Fatal(err)
	}
	b.Run("vmb-pull-dir", func(b *testing.B) {
		b.SetBytes(rep.Bytes)
		for b.Loop() {
			if _, err := Pull(b.Context(), newStore(b), dir, []ActionID{a}, []string{}, &Trust{Unsigned: true}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("curl-get", func(b *testing.B) {
		b.SetBytes(rep.Bytes)
		curl("-T", file, srv.URL+"/curl/get")
		for b.Loop() {
			curl("-o", filepath.Join(b.TempDir(), "got"), srv.URL+"/curl/get")
		}
	})
}
