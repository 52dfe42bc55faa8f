package lang

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// stable is a repository; the cases of TestKeysStable write it other ways.
var stable = map[string]string{
	"files/x.txt": "hello\n",
	"a.cue": `package k

#Disk: {
	disks: root: "128MiB"
	...
}

images: a: #Disk & {
	steps: [
		{job: "label", disk: "root", type: "gpt"},
		{job: "partition", disk: "root", partitions: [{size: "rest", name: "root", guid: "linux"}]},
		{job: "format", place: "root:1", fs: "ext4"},
		{job: "copy-in", src: "files/x.txt", dest: "root:1:/x.txt", mode: "0600"},
		{job: "run", root: "root:1", command: "echo hi", env: {A: "1", B: "2"}},
		{job: "export", disk: "root", format: "qcow2", dest: "a.qcow2"},
	]
}
images: b: {from: "a", steps: [{job: "hash", disk: "root", dest: "b.b3"}]}
`,
}

// repl replaces old by new in s, once; a test whose edit does not apply must fail,
// not pass by comparing a repository with itself.
func repl(s, old, new string) string {
	if !strings.Contains(s, old) {
		panic(fmt.Sprintf("%q is not in the repository", old))
	}
	return strings.Replace(s, old, new, 1)
}

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

// TestKeysStable: writing the same definitions another way changes no key.
func TestKeysStable(t *testing.T) {
	want := keys(t, stable)
	if len(want["a"]) != 7 || len(want["b"]) != 1 {
		t.Fatalf("unexpected graph: %v", want)
	}
	for name, files := range map[string]map[string]string{
		"reformatted": with(stable, map[string]string{"a.cue": `package k
#Disk: {disks: {root: "128MiB"}, ...}
images: {
	a: #Disk & {steps: [{
		job: "label"
		disk: "root"
		type: "gpt"
	}, {job: "partition", disk: "root", partitions: [{
		size: "rest"
		name: "root"
		guid: "linux"
	}]}, {job: "format", place: "root:1", fs: "ext4"},
		{job: "copy-in", src: "files/x.txt", dest: "root:1:/x.txt", mode: "0600"},
		{job: "run", root: "root:1", command: "echo hi", env: A: "1", env: B: "2"},
		{job: "export", disk: "root", format: "qcow2", dest: "a.qcow2"}]}
	b: from: "a"
	b: steps: [{job: "hash", disk: "root", dest: "b.b3"}]
}
`}),
		"commented": with(stable, map[string]string{"a.cue": "// A repository.\n" +
			strings.ReplaceAll(stable["a.cue"], "\t\t{", "\t\t// a step\n\t\t{") + "// the end\n"}),
		"reordered": with(stable, map[string]string{"a.cue": `package k

images: b: {steps: [{dest: "b.b3", disk: "root", job: "hash"}], from: "a"}
images: a: #Disk & {
	steps: [
		{type: "gpt", disk: "root", job: "label"},
		{partitions: [{guid: "linux", name: "root", size: "rest"}], disk: "root", job: "partition"},
		{fs: "ext4", place: "root:1", job: "format"},
		{mode: "0600", dest: "root:1:/x.txt", src: "files/x.txt", job: "copy-in"},
		{env: {B: "2", A: "1"}, command: "echo hi", root: "root:1", job: "run"},
		{dest: "a.qcow2", format: "qcow2", disk: "root", job: "export"},
	]
}

#Disk: {disks: root: "128MiB", ...}
`}),
		"moved to another file": with(stable, map[string]string{
			"a.cue":    repl(stable["a.cue"], "#Disk: {\n\tdisks: root: \"128MiB\"\n\t...\n}\n", ""),
			"disk.cue": "package k\n\n#Disk: {\n\tdisks: root: \"128MiB\"\n\t...\n}\n",
		}),
		"named steps": with(stable, map[string]string{"a.cue": repl(stable["a.cue"],
			`{job: "format",`, `{name: "make the root filesystem", job: "format",`)}),
		"default written out": with(stable, map[string]string{"a.cue": repl(stable["a.cue"],
			`command: "echo hi",`, `command: "echo hi", workdir: "/", network: false, mode: "chroot",`)}),
		"paths written otherwise": with(stable, map[string]string{"a.cue": repl(repl(stable["a.cue"],
			`src: "files/x.txt", dest: "root:1:/x.txt", mode: "0600"`, `src: "./files//x.txt", dest: "root:1://x.txt", mode: "600"`),
			`dest: "a.qcow2"`, `dest: "./a.qcow2"`)}),
		"guid as a GUID": with(stable, map[string]string{"a.cue": repl(stable["a.cue"],
			`guid: "linux"`, `guid: "0fc63daf-8483-4772-8e79-3d69d8477de4"`)}),
		"size in bytes": with(stable, map[string]string{"a.cue": repl(stable["a.cue"],
			`"128MiB"`, `134217728`)}),
	} {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(want, keys(t, files)); diff != "" {
				t.Errorf("keys changed (-before +after):\n%s", diff)
			}
		})
	}
}

// TestKeysChange: changing a step's parameter or a copied-in file's bytes changes
// that step's key and every later one (in the image and in images from it), and
// no earlier one.
func TestKeysChange(t *testing.T) {
	before := keys(t, stable)
	for _, tc := range []struct {
		name  string
		files map[string]string
		first int // index of the first node (disks first) whose key must change
	}{
		{"format parameter", with(stable, map[string]string{"a.cue": repl(stable["a.cue"], `fs: "ext4"`, `fs: "ext3"`)}), 3},
		{"env value", with(stable, map[string]string{"a.cue": repl(stable["a.cue"], `B: "2"`, `B: "3"`)}), 5},
		{"one byte of a copied file", with(stable, map[string]string{"files/x.txt": "hellO\n"}), 4},
		{"disk size", with(stable, map[string]string{"a.cue": repl(stable["a.cue"], `"128MiB"`, `"129MiB"`)}), 0},
		{"last step", with(stable, map[string]string{"a.cue": repl(stable["a.cue"], `"qcow2", dest`, `"vmdk", dest`)}), 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			after := keys(t, tc.files)
			for i := range before["a"] {
				if changed := before["a"][i] != after["a"][i]; changed != (i >= tc.first) {
					t.Errorf("node %d: changed %v, want %v", i, changed, i >= tc.first)
				}
			}
			if before["b"][0] == after["b"][0] {
				t.Error("image b, from a, kept its key")
			}
		})
	}
}

// TestKeysExecutor: the executor enters every key.
func TestKeysExecutor(t *testing.T) {
	a := keys(t, stable)
	dir := t.TempDir()
	for name, data := range stable {
		writeFile(t, dir+"/"+name, data)
	}
	for _, exec := range []string{"", "other agent/1"} {
		g, err := Compile(t.Context(), dir, Options{Executor: exec})
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range g.Images[0].Steps {
			if s.Node.Key == a["a"][i] {
				t.Errorf("executor %q: node %d kept the key of executor %q", exec, i, testExecutor)
			}
			if !strings.Contains(string(s.Node.Preimage), "\nexecutor ") {
				t.Errorf("no executor line in %s", s.Node.Preimage)
			}
		}
	}
}

// TestShared: images from one base, and images whose first steps are equal, share
// those nodes.
func TestShared(t *testing.T) {
	files := with(stable, map[string]string{"c.cue": `package k

images: c: #Disk & {steps: [{job: "label", disk: "root", type: "gpt"}, {job: "label", disk: "root", type: "msdos"}]}
`})
	k := keys(t, files)
	if k["c"][0] != k["a"][0] || k["c"][1] != k["a"][1] {
		t.Error("equal first steps of two images are not one node")
	}
	if k["c"][2] == k["a"][2] {
		t.Error("different steps share a key")
	}
}

// TestOutputsPerImage: an image from another may write an output of the same name.
func TestOutputsPerImage(t *testing.T) {
	k := keys(t, with(stable, map[string]string{"c.cue": `package k

images: c: {from: "a", steps: [{job: "export", disk: "root", format: "qcow2", dest: "a.qcow2"}]}
`}))
	if len(k["c"]) != 1 {
		t.Errorf("image c: %d nodes", len(k["c"]))
	}
}
