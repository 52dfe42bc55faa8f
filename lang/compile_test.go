package lang

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/rogpeppe/go-internal/txtar"

	"vmb.dev/vmb/graph"
)

var update = flag.Bool("update", false, "rewrite golden files")

// writeRepo writes files (name -> content) into a new directory.
func writeRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func mustCompile(t testing.TB, dir string) *graph.Graph {
	t.Helper()
	g, err := Compile(dir, Options{Executor: "test"})
	if err != nil {
		t.Fatalf("compile %s:\n%v", dir, err)
	}
	return g
}

// keys returns the keys of an image's nodes, in order.
func keys(t testing.TB, g *graph.Graph, image string) []string {
	t.Helper()
	im, ok := g.Image(image)
	if !ok {
		t.Fatalf("no image %q", image)
	}
	var ks []string
	for _, n := range graph.Chain(im.Final()) {
		ks = append(ks, n.Key.Short())
	}
	return ks
}

const baseRepo = `package build

#Common: {
	disks: root: "128MiB"
	...
}

images: web: #Common & {
	steps: [
		{job: "label", disk: "root", type: "gpt"},
		{job: "partition", disk: "root", partitions: [{size: "rest", name: "root", guid: "linux"}]},
		{job: "format", place: "root:1", fs: "ext4", label: "root"},
		{job: "copy-in", src: "files/motd", dest: "root:1:/etc/motd"},
		{job: "run", root: "root:1", command: "echo hi > /hi"},
		{job: "export", disk: "root", format: "qcow2", dest: "web.qcow2"},
	]
}
`

var baseFiles = map[string]string{"build.cue": baseRepo, "files/motd": "hello\n"}

func with(files map[string]string, changes map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range files {
		out[k] = v
	}
	for k, v := range changes {
		if v == "" {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// TestKeyStability: what does not change the build changes no key; what changes
// one step changes its key and every later one, never an earlier one.
func TestKeyStability(t *testing.T) {
	base := keys(t, mustCompile(t, writeRepo(t, baseFiles)), "web")
	if len(base) != 7 {
		t.Fatalf("web has %d nodes, want 7 (a disk and 6 steps)", len(base))
	}
	same := map[string]map[string]string{
		"reformatted with comments": {"build.cue": strings.NewReplacer(
			"\t{job", "\t\t// a step\n\t\t{   job",
			"package build\n", "package build\n\n// A comment.\n",
		).Replace(baseRepo)},
		"fields reordered": {"build.cue": strings.NewReplacer(
			`{job: "label", disk: "root", type: "gpt"}`, `{type: "gpt", disk: "root", job: "label"}`,
			`fs: "ext4", label: "root"`, `label: "root", fs: "ext4"`,
		).Replace(baseRepo)},
		"definition moved to another file": {
			"build.cue":  strings.Replace(baseRepo, "#Common: {\n\tdisks: root: \"128MiB\"\n\t...\n}\n", "", 1),
			"common.cue": "package build\n\n#Common: {\n\tdisks: root: \"128MiB\"\n\t...\n}\n",
		},
		"size written in bytes": {"build.cue": strings.Replace(baseRepo, `"128MiB"`, `134217728`, 1)},
		"step named":            {"build.cue": strings.Replace(baseRepo, `{job: "label",`, `{name: "gpt label", job: "label",`, 1)},
	}
	for name, change := range same {
		for file, content := range change {
			if content == baseFiles[file] {
				t.Fatalf("%s: the change to %s changes nothing", name, file)
			}
		}
		got := keys(t, mustCompile(t, writeRepo(t, with(baseFiles, change))), "web")
		if diff := cmp.Diff(base, got); diff != "" {
			t.Errorf("%s changed keys (-before +after):\n%s", name, diff)
		}
	}

	differ := map[string]struct {
		change map[string]string
		from   int // the first node whose key must change
	}{
		"format label":        {map[string]string{"build.cue": strings.Replace(baseRepo, `label: "root"}`, `label: "ROOT"}`, 1)}, 3},
		"copied file content": {map[string]string{"files/motd": "hellO\n"}, 4},
		"run command":         {map[string]string{"build.cue": strings.Replace(baseRepo, "echo hi", "echo ho", 1)}, 5},
		"export format":       {map[string]string{"build.cue": strings.Replace(baseRepo, `"qcow2"`, `"vmdk"`, 1)}, 6},
		"disk size":           {map[string]string{"build.cue": strings.Replace(baseRepo, `"128MiB"`, `"129MiB"`, 1)}, 0},
	}
	for name, tc := range differ {
		got := keys(t, mustCompile(t, writeRepo(t, with(baseFiles, tc.change))), "web")
		for i := range base {
			if changed := got[i] != base[i]; changed != (i >= tc.from) {
				t.Errorf("%s: node %d changed=%v, want changed from node %d on", name, i, changed, tc.from)
			}
		}
	}

	// Another executor changes every key.
	g, err := Compile(writeRepo(t, baseFiles), Options{Executor: "other"})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys(t, g, "web") {
		if k == base[i] {
			t.Errorf("node %d has the same key under another executor", i)
		}
	}
}

// Images with the same first steps share those nodes; from makes the base's final
// node the parent of the derived image's first.
func TestSharingAndInheritance(t *testing.T) {
	repo := baseRepo + `
images: api: #Common & {
	steps: [
		{job: "label", disk: "root", type: "gpt"},
		{job: "partition", disk: "root", partitions: [{size: "rest", name: "root", guid: "linux"}]},
		{job: "format", place: "root:1", fs: "xfs"},
	]
}
images: web2: {
	from: "web"
	disks: data: "16MiB"
	steps: [{job: "format", place: "data", fs: "ext2"}]
}
images: {
	for i in [1, 2, 3] {
		"m\(i)": {from: "web", steps: [{job: "run", root: "root:1", command: "echo \(i)"}]}
	}
}
`
	g := mustCompile(t, writeRepo(t, with(baseFiles, map[string]string{"build.cue": repo})))
	web, api, web2 := keys(t, g, "web"), keys(t, g, "api"), keys(t, g, "web2")
	if diff := cmp.Diff(web[:3], api[:3]); diff != "" {
		t.Errorf("web and api do not share their first three nodes:\n%s", diff)
	}
	if api[3] == web[3] {
		t.Error("api's xfs format has web's key")
	}
	if diff := cmp.Diff(web, web2[:len(web)]); diff != "" {
		t.Errorf("web2 does not start from web's chain:\n%s", diff)
	}
	if len(web2) != len(web)+2 {
		t.Errorf("web2 has %d nodes, want web's %d + a disk + a step", len(web2), len(web))
	}
	distinct := map[graph.Key]bool{}
	for _, n := range g.Nodes {
		if distinct[n.Key] {
			t.Fatalf("node %s appears twice in the graph", n.Key)
		}
		distinct[n.Key] = true
	}
	// Images made by a comprehension: three, each one node after web's chain.
	for _, m := range []string{"m1", "m2", "m3"} {
		if got := keys(t, g, m); len(got) != len(web)+1 || got[len(web)-1] != web[len(web)-1] {
			t.Errorf("%s: %d nodes, not web's chain and one more", m, len(got))
		}
	}
	// web 7 + api 1 + web2 2 + m1..m3 3.
	if len(g.Nodes) != 13 {
		t.Errorf("graph has %d distinct nodes, want 13", len(g.Nodes))
	}
}

// TestErrors compiles each repository under testdata/errors and compares the errors
// with its want section (go test -update rewrites them).
func TestErrors(t *testing.T) {
	files, _ := filepath.Glob("testdata/errors/*.txtar")
	if len(files) == 0 {
		t.Fatal("no test cases")
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			repo := map[string]string{}
			wantIdx := -1
			for i, f := range ar.Files {
				if f.Name == "want" {
					wantIdx = i
					continue
				}
				repo[f.Name] = string(f.Data)
			}
			_, err = Compile(writeRepo(t, repo), Options{})
			if err == nil {
				t.Fatal("compiled without error")
			}
			if _, ok := err.(Errors); !ok {
				t.Fatalf("error is a %T, want lang.Errors: %v", err, err)
			}
			got := err.Error() + "\n"
			if *update {
				ar.Files[wantIdx].Data = []byte(got)
				os.WriteFile(file, txtar.Format(ar), 0o644)
				return
			}
			if diff := cmp.Diff(string(ar.Files[wantIdx].Data), got); diff != "" {
				t.Errorf("errors differ (-want +got):\n%s", diff)
			}
		})
	}
}

// The stdlib templates compile to the layouts BUILD.md documents.
func TestTemplates(t *testing.T) {
	g := mustCompile(t, writeRepo(t, map[string]string{"build.cue": `package build

import "vmb.dev/vmb"

images: gpt: vmb.#GPTDisk & {size: "1GiB", rootfs: "xfs"}
images: dos: vmb.#MsdosDisk & {size: "64MiB", fs: "ext2", then: [{job: "hash", disk: "root", dest: "h"}]}
images: fs: vmb.#FilesystemImage & {size: "32MiB", disk: "data", fs: "fat32"}
`}))
	want := map[string][]string{
		"gpt": {"create-disk root 1.0 GiB", "label root gpt", "partition root (2)", "format root:1 fat32", "format root:2 xfs"},
		"dos": {"create-disk root 64.0 MiB", "label root msdos", "partition root (1)", "format root:1 ext2", "hash root -> h"},
		"fs":  {"create-disk data 32.0 MiB", "format data fat32"},
	}
	for name, steps := range want {
		im, _ := g.Image(name)
		var got []string
		for _, n := range graph.Chain(im.Final()) {
			got = append(got, graph.Describe(n.Job))
		}
		if diff := cmp.Diff(steps, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", name, diff)
		}
	}
}
