package lang

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"

	"vmb.dev/vmb/graph"
)

var update = flag.Bool("update", false, "rewrite the golden files under ../testdata")

const testExecutor = "test-executor agent/0"

// exampleTags are the -t values an example needs: debian's base image is one.
var exampleTags = map[string][]string{
	"debian": {"base=registry.example/debian:bookworm@sha256:" + strings.Repeat("0123456789abcdef", 4)},
}

// TestExamples compiles every repository of testdata/examples and compares its
// graph, as vmb graph prints it, with testdata/golden/NAME.{json,dot,txt}.
func TestExamples(t *testing.T) {
	dirs, err := filepath.Glob("../testdata/examples/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			g, err := Compile(context.Background(), dir, Options{Executor: testExecutor, Tags: exampleTags[name]})
			if err != nil {
				t.Fatal(err)
			}
			for ext, write := range map[string]func(io.Writer, ...string) error{
				"json": g.WriteJSON, "dot": g.WriteDOT, "txt": g.WriteText,
			} {
				var b bytes.Buffer
				if err := write(&b); err != nil {
					t.Fatal(err)
				}
				golden(t, filepath.Join("../testdata/golden", name+"."+ext), b.String())
			}
		})
	}
}

func golden(t *testing.T, file, got string) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s (-want +got):\n%s", file, diff)
	}
}

// TestErrors compiles each repository of testdata/errors/*.txtar and compares the
// errors with the archive's "want" file: one file:line:col: message a line.
func TestErrors(t *testing.T) {
	files, err := filepath.Glob("../testdata/errors/*.txtar")
	if err != nil || len(files) == 0 {
		t.Fatalf("no error cases: %v", err)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			var want *txtar.File
			for i, f := range ar.Files {
				if f.Name == "want" {
					want = &ar.Files[i]
					continue
				}
				writeFile(t, filepath.Join(dir, f.Name), string(f.Data))
			}
			if want == nil {
				t.Fatal("the archive has no want file")
			}
			_, err = Compile(context.Background(), dir, Options{Executor: testExecutor})
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("Compile = %v, want Errors", err)
			}
			got := err.Error() + "\n"
			if strings.Contains(got, "cue.mod") {
				t.Errorf("an error points into the stdlib, not at the user's text:\n%s", got)
			}
			for _, e := range errs {
				if e.Pos == "" {
					t.Errorf("error without a position: %s", e.Msg)
				}
			}
			if *update {
				want.Data = []byte(got)
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if diff := cmp.Diff(string(want.Data), got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// compileFiles compiles a repository made of files.
func compileFiles(t *testing.T, files map[string]string) *graph.Graph {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		writeFile(t, filepath.Join(dir, name), data)
	}
	g, err := Compile(context.Background(), dir, Options{Executor: testExecutor})
	if err != nil {
		t.Fatalf("%v", err)
	}
	if g.Dir != dir {
		t.Errorf("graph.Dir = %q, want %q", g.Dir, dir)
	}
	return g
}

// keys compiles a repository made of files and returns every image's node keys,
// in order, the create-disk nodes of declared disks first.
func keys(t *testing.T, files map[string]string) map[string][]graph.Key {
	t.Helper()
	g := compileFiles(t, files)
	out := map[string][]graph.Key{}
	for _, im := range g.Images {
		for _, s := range im.Steps {
			out[im.Name] = append(out[im.Name], s.Node.Key)
		}
	}
	return out
}

// TestTemplates: the stdlib templates compile to the layouts BUILD.md documents.
func TestTemplates(t *testing.T) {
	g := compileFiles(t, map[string]string{"build.cue": `package build

import "vmb.dev/vmb"

images: gpt: vmb.#GPTDisk & {size: "1GiB", rootfs: "xfs"}
images: dos: vmb.#MsdosDisk & {size: "64MiB", fs: "ext2", then: [{job: "hash", disk: "root", dest: "h"}]}
images: fs: vmb.#FilesystemImage & {size: "32MiB", disk: "data", fs: "fat32"}
`})
	want := map[string][]string{
		"gpt": {"create-disk root 1.0 GiB", "label root gpt", "partition root (2)", "format root:1 fat32", "format root:2 xfs"},
		"dos": {"create-disk root 64.0 MiB", "label root msdos", "partition root (1)", "format root:1 ext2", "hash root -> h"},
		"fs":  {"create-disk data 32.0 MiB", "format data fat32"},
	}
	for name, steps := range want {
		im, ok := g.Image(name)
		if !ok {
			t.Fatalf("no image %s", name)
		}
		var got []string
		for _, n := range graph.Chain(im.Final()) {
			got = append(got, n.Job.Describe())
		}
		if diff := cmp.Diff(steps, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
	gpt, _ := g.Image("gpt")
	parts := gpt.Steps[2].Node.Job.(*graph.Partition).Partitions
	if parts[0].GUID != graph.GUIDAliases["efi"] || parts[1].GUID != graph.GUIDAliases["linux"] || parts[1].Size != 0 {
		t.Errorf("gpt partitions: %+v", parts)
	}
}

// TestLanguageVersion: a repository without a module file is evaluated with the
// language version of the CUE vmb is built with, so that what cue accepts with a
// module file of its own (struct comparison, stable since v0.15.0) vmb accepts
// without one; a repository's own module file decides for it.
func TestLanguageVersion(t *testing.T) {
	build := `package build

_gpt: {type: "gpt"} == {type: "gpt"}
images: a: {disks: root: "64MiB", steps: [if _gpt {job: "label", disk: "root", type: "gpt"}]}
`
	g := compileFiles(t, map[string]string{"build.cue": build})
	if im, _ := g.Image("a"); im == nil || len(im.Steps) != 2 {
		t.Fatalf("image a: %+v, want its disk and the label step", im)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "build.cue"), build)
	writeFile(t, filepath.Join(dir, "cue.mod", "module.cue"), "module: \"example.com/old\"\nlanguage: version: \"v0.12.0\"\n")
	if _, err := Compile(context.Background(), dir, Options{Executor: testExecutor}); err == nil {
		t.Errorf("a module file of language v0.12.0: struct comparison compiled, want an error")
	}
	writeFile(t, filepath.Join(dir, "cue.mod", "module.cue"), "module: \"example.com/new\"\nlanguage: version: \"v9.0.0\"\n")
	if _, err := Compile(context.Background(), dir, Options{Executor: testExecutor}); err == nil || !strings.Contains(err.Error(), `language version "v9.0.0" declared in module.cue is too new`) {
		t.Errorf("a module file of language v9.0.0: Compile = %v, want an error that says so", err)
	}
}

// TestUnpinnedImage checks that an image-in without a digest is refused with the
// digest Options.ResolveImage says it names, ready to paste, and that the
// resolver is given the repository and the ref as written.
func TestUnpinnedImage(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.cue"), `package x

images: a: {
	disks: root: "64MiB"
	steps: [
		{job: "format", place: "root", fs: "ext4"},
		{job: "image-in", ref: "127.0.0.1:5000/debian:12", dest: "root:/"},
		{job: "image-in", ref: "oci:images/gone", dest: "root:/"},
	]
}
`)
	const d = "sha256:4bb7e8ae3d4bd3e8c4e3ff3e2b6a2f1d0c5e9f8a7b6c5d4e3f2a1b0c9d8e7f6a"
	resolve := func(_ context.Context, repo, ref string) (string, error) {
		if repo != dir {
			t.Errorf("resolver given repository %q, want %q", repo, dir)
		}
		if ref == "oci:images/gone" {
			return "", errors.New("no such directory")
		}
		return d, nil
	}
	_, err := Compile(context.Background(), dir, Options{Executor: testExecutor, ResolveImage: resolve})
	want := `a.cue:7:26: images.a.steps[1] (image-in): ref "127.0.0.1:5000/debian:12" is not pinned: it names ` + d + ` now; pin it with ref: "127.0.0.1:5000/debian:12@` + d + `"
a.cue:8:26: images.a.steps[2] (image-in): ref "oci:images/gone" is not pinned, and resolving it failed: no such directory`
	if err == nil {
		t.Fatal("Compile accepted an unpinned image")
	}
	if diff := cmp.Diff(want, err.Error()); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

// TestPinnedImage checks that a pinned image-in is keyed by its digest as the
// input "image", and its platform; not by the registry its ref names.
func TestPinnedImage(t *testing.T) {
	const d = "sha256:4bb7e8ae3d4bd3e8c4e3ff3e2b6a2f1d0c5e9f8a7b6c5d4e3f2a1b0c9d8e7f6a"
	key := func(ref string) *graph.Node {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "a.cue"), `package x

images: a: {
	disks: root: "64MiB"
	steps: [
		{job: "format", place: "root", fs: "ext4"},
		{job: "image-in", ref: "`+ref+`", dest: "root:/"},
	]
}
`)
		g, err := Compile(context.Background(), dir, Options{Executor: testExecutor})
		if err != nil {
			t.Fatal(err)
		}
		return g.Images[0].Steps[len(g.Images[0].Steps)-1].Node
	}
	a, b := key("127.0.0.1:5000/debian:12@"+d), key("mirror.example/debian@"+d)
	if a.Key != b.Key {
		t.Errorf("the same image from two registries has two keys:\n%s\n%s", a.Preimage, b.Preimage)
	}
	if !strings.Contains(string(a.Preimage), "input image "+d+"\n") || !strings.Contains(string(a.Preimage), `param platform="linux/amd64"`) {
		t.Errorf("preimage lacks the image's digest or platform:\n%s", a.Preimage)
	}
}
