package vmexec_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"vmb.dev/vmb/cas"
	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/lang"
	"vmb.dev/vmb/vmexec"
	"vmb.dev/vmb/vmexec/vmtest"
)

// A source edited between compile and job fails the job: it must not be copied in
// and cached under the key of its old content. The check runs before the VM boots.
func TestSrcChangedSinceCompile(t *testing.T) {
	for _, tc := range []struct{ name, def, edit string }{
		{"copy-in file", `{job: "copy-in", src: "files/a.txt", dest: "d:/a.txt"}`, "files/a.txt"},
		{"copy-in tree", `{job: "copy-in", src: "files", dest: "d:/files"}`, "files/sub/b.txt"},
		{"tar-in", `{job: "tar-in", src: "files/t.tar", dest: "d:/"}`, "files/t.tar"},
		{"dd", `{job: "dd", src: "files/a.txt", disk: "d", offset: 0}`, "files/a.txt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := t.TempDir()
			os.MkdirAll(filepath.Join(repo, "files/sub"), 0o755)
			for _, f := range []string{"files/a.txt", "files/sub/b.txt", "files/t.tar"} {
				os.WriteFile(filepath.Join(repo, f), []byte("as compiled\n"), 0o644)
			}
			def := "package t\nimages: i: {disks: d: \"16MiB\", steps: [{job: \"format\", place: \"d\", fs: \"ext4\"}, " + tc.def + "]}\n"
			os.WriteFile(filepath.Join(repo, "t.cue"), []byte(def), 0o644)

			store, err := cas.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			a := vmtest.Seed(t, store)
			x := &vmexec.Executor{Store: store, Appliance: a, RepoDir: repo, TmpDir: t.TempDir()}
			t.Cleanup(x.Close)
			g, err := lang.Compile(t.Context(), repo, lang.Options{Executor: x.Identity()})
			if err != nil {
				t.Fatal(err)
			}
			var n *graph.Node
			for _, m := range g.Nodes {
				if len(m.Inputs) == 1 {
					n = m
				}
			}
			if n == nil {
				t.Fatalf("no node with a src input for %s", tc.def)
			}
			// The same size: only the content tells.
			os.WriteFile(filepath.Join(repo, tc.edit), []byte("as edited!!\n"), 0o644)
			empty, _ := store.PutBytes((&cas.Manifest{Size: 16 << 20, ChunkSize: cas.DefaultChunkSize}).Encode())
			_, _, err = x.Run(t.Context(), n, map[string]cas.Digest{"d": empty}, os.Stderr)
			if !errors.Is(err, vmexec.ErrSrcChanged) {
				t.Fatalf("run after the source changed: %v, want %v", err, vmexec.ErrSrcChanged)
			}
		})
	}
}
