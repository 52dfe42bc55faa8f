package lang

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"vmb.dev/vmb/graph"
)

// cacheRepo is a repository with what a graph depends on: two files, a package of
// its own module it imports, a local file and a tree copied in, a tag.
var cacheRepo = map[string]string{
	"files/x.txt":   "hello\n",
	"files/tree/y":  "why\n",
	"sub/sub.cue":   "package sub\n\nmode: \"0600\"\n",
	"files/ignored": "not a .cue file",
	"a.cue": `package k

import "vmb.local/sub"

label: *"one" | string @tag(label)

#Disk: {
	disks: root: "128MiB"
	...
}

images: a: #Disk & {
	steps: [
		{job: "label", disk: "root", type: "gpt"},
		{job: "partition", disk: "root", partitions: [{size: "rest", name: "root", guid: "linux"}]},
		{job: "format", place: "root:1", fs: "ext4", "label": label},
		{job: "copy-in", src: "files/x.txt", dest: "root:1:/x.txt", mode: sub.mode},
		{job: "copy-in", src: "files/tree", dest: "root:1:/srv"},
		{job: "run", root: "root:1", command: "echo hi", env: {A: "1", B: "2"}, name: "greet"},
		{job: "export", disk: "root", format: "qcow2", dest: "a.qcow2"},
	]
}
`,
	"b.cue": `package k

images: b: {from: "a", steps: [{job: "hash", disk: "root", dest: "b.b3"}]}
`,
}

// flatGraph is what a graph says, pointers turned into keys, for go-cmp.
type flatGraph struct {
	Dir    string
	Nodes  []flatNode
	Images []flatImage
}

type flatNode struct {
	Key, Parent      graph.Key
	Label, Pos, Name string
	Image            string
	Step             int
	Job              graph.Job
	Inputs           []graph.Input
	Executor         string
	Preimage         string
}

type flatImage struct {
	Name, From, Pos string
	Disks           []graph.Disk
	Steps           []flatStep
}

type flatStep struct {
	Key              graph.Key
	Index            int
	Name, Pos, Label string
}

func flatten(g *graph.Graph) flatGraph {
	f := flatGraph{Dir: g.Dir}
	for _, n := range g.Nodes {
		fn := flatNode{Key: n.Key, Label: n.Label(), Pos: n.Pos, Name: n.Name, Image: n.Image, Step: n.Step,
			Job: n.Job, Inputs: n.Inputs, Executor: n.Executor, Preimage: string(n.Preimage)}
		if n.Parent != nil {
			fn.Parent = n.Parent.Key
		}
		if m, ok := g.Node(n.Key); !ok || m != n {
			fn.Label += " (not found by its key)"
		}
		f.Nodes = append(f.Nodes, fn)
	}
	for _, im := range g.Images {
		fi := flatImage{Name: im.Name, From: im.From, Pos: im.Pos, Disks: im.Disks}
		for _, s := range im.Steps {
			fi.Steps = append(fi.Steps, flatStep{Key: s.Node.Key, Index: s.Index, Name: s.Name, Pos: s.Pos, Label: s.Label(im.Name)})
		}
		f.Images = append(f.Images, fi)
	}
	return f
}

// TestGraphCache: a graph from the cache is the graph a fresh compile makes, for
// the repository unchanged (a hit) and after each kind of change (a miss, but for
// a file touched and not changed).
func TestGraphCache(t *testing.T) {
	dir := t.TempDir()
	for name, data := range cacheRepo {
		writeFile(t, filepath.Join(dir, name), data)
	}
	state := t.TempDir()
	base := Options{Executor: testExecutor, StatCache: filepath.Join(state, "stat-cache.json")}
	withCache := func(opt Options) Options {
		opt.GraphCache = filepath.Join(state, "graph")
		return opt
	}
	// hit reports whether opt would take the graph from the cache now.
	hit := func(opt Options) bool {
		h := newHasher(t.Context(), opt.StatCache)
		h.racy = 0
		gc := openGraphCache(dir, withCache(opt), h)
		if gc == nil {
			t.Fatal("no graph cache: the test binary cannot be read")
		}
		g, _ := gc.lookup()
		return g != nil
	}
	// check compiles through the cache, expecting a hit or not, and compares the
	// graph with a fresh compile's; then the cache must hit. changed says whether
	// the keys must differ from the last check's: an edit that changes nothing
	// would test nothing.
	var last []graph.Key
	var why string // what the compile through the cache said, VMB_DEBUG_GRAPH_CACHE's lines
	check := func(what string, opt Options, wantHit, changed bool) {
		t.Helper()
		if got := hit(opt); got != wantHit {
			t.Errorf("%s: hit %v, want %v", what, got, wantHit)
		}
		var debug strings.Builder
		copt := withCache(opt)
		copt.DebugGraphCache = &debug
		cached, err := compile(t.Context(), dir, copt, 0)
		why = debug.String()
		if err != nil {
			t.Fatalf("%s: through the cache: %v", what, err)
		}
		fresh, err := compile(t.Context(), dir, opt, 0)
		if err != nil {
			t.Fatalf("%s: fresh: %v", what, err)
		}
		// A job's empty list is omitted from its JSON, and so from its key and
		// from what the build VM gets: empty and nil are the same list here.
		if diff := cmp.Diff(flatten(fresh), flatten(cached), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: graph through the cache (-fresh +cached):\n%s", what, diff)
		}
		if !hit(opt) {
			t.Errorf("%s: no hit after a compile stored its graph", what)
		}
		var keys []graph.Key
		for _, n := range fresh.Nodes {
			keys = append(keys, n.Key)
		}
		if last != nil && changed == cmp.Equal(last, keys) {
			t.Errorf("%s: keys changed %v, want %v", what, !changed, changed)
		}
		last = keys
	}
	edit := func(name, data string) {
		t.Helper()
		writeFile(t, filepath.Join(dir, name), data)
	}

	check("first compile", base, false, true)
	check("unchanged", base, true, false)
	edit("a.cue", repl(cacheRepo["a.cue"], `command: "echo hi"`, `command: "echo ho"`))
	check("a .cue file edited", base, false, true)
	if !strings.Contains(why, "\t+ cuefile \"a.cue\" ") || !strings.Contains(why, "stored ") {
		t.Errorf("a .cue file edited: the miss does not say so:\n%s", why)
	}
	edit("c.cue", "package k\n\nimages: c: {from: \"a\", steps: [{job: \"hash\", disk: \"root\", dest: \"c.b3\"}]}\n")
	check("a .cue file added", base, false, true)
	if err := os.Remove(filepath.Join(dir, "c.cue")); err != nil {
		t.Fatal(err)
	}
	check("a .cue file removed", base, false, true)
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "a.cue"), later, later); err != nil {
		t.Fatal(err)
	}
	check("a .cue file touched", base, true, false)
	edit("files/ignored", "changed, and no .cue file")
	check("a file nothing reads changed", base, true, false)
	edit("sub/sub.cue", "package sub\n\nmode: \"0644\"\n")
	check("an imported package edited", base, false, true)
	edit("files/x.txt", "hello, world\n")
	check("a copied file changed", base, false, true)
	if !strings.Contains(why, "\t+ input \"files/x.txt\" blake3:") {
		t.Errorf("a copied file changed: the miss does not say so:\n%s", why)
	}
	edit("files/tree/z", "zed\n")
	check("a file added to a copied tree", base, false, true)
	edit("files/tree/y", "Y\n")
	check("a file of a copied tree changed", base, false, true)
	// The default module, written out: a miss, and the same keys.
	edit("cue.mod/module.cue", defaultModule)
	check("cue.mod written", base, false, false)
	tagged := base
	tagged.Tags = []string{"label=two"}
	check("a tag", tagged, false, true)
	other := base
	other.Executor = "other-executor agent/0"
	check("the executor", other, false, true)
}

// TestGraphCacheMiss: an entry that is damaged, truncated or not an entry is a
// miss, never an error; definitions with errors store nothing and report what a
// compile without the cache reports; a file changed within the racy window of the
// compile's start stores nothing; a compile that prints keys (DebugKeys) reads
// and writes no entry.
func TestGraphCacheMiss(t *testing.T) {
	dir := t.TempDir()
	for name, data := range cacheRepo {
		writeFile(t, filepath.Join(dir, name), data)
	}
	state := t.TempDir()
	opt := Options{Executor: testExecutor, StatCache: filepath.Join(state, "stat-cache.json"), GraphCache: filepath.Join(state, "graph")}
	fresh, err := compile(t.Context(), dir, Options{Executor: testExecutor}, 0)
	if err != nil {
		t.Fatal(err)
	}
	entry := func() string {
		t.Helper()
		ents, err := os.ReadDir(opt.GraphCache)
		if err != nil || len(ents) != 1 {
			t.Fatalf("want one entry: %v, %v", ents, err)
		}
		return filepath.Join(opt.GraphCache, ents[0].Name())
	}
	if _, err := compile(t.Context(), dir, opt, 0); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(entry())
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-100] ^= 1
	for what, data := range map[string][]byte{
		"a byte of the graph flipped": flipped,
		"truncated":                   good[:len(good)/2],
		"empty":                       {},
		"not an entry":                []byte("vmb graph cache v1\n\xff\xff\xff\xff"),
	} {
		if err := os.WriteFile(entry(), data, 0o644); err != nil {
			t.Fatal(err)
		}
		g, err := compile(t.Context(), dir, opt, 0)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if diff := cmp.Diff(flatten(fresh), flatten(g), cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s: graph (-fresh +cached):\n%s", what, diff)
		}
		if b, _ := os.ReadFile(entry()); string(b) != string(good) {
			t.Errorf("%s: the compile did not store its graph again", what)
		}
	}

	// Errors: the same through the cache, and nothing stored.
	edit := repl(cacheRepo["a.cue"], `fs: "ext4"`, `fs: "ext5"`)
	writeFile(t, filepath.Join(dir, "a.cue"), edit)
	_, want := compile(t.Context(), dir, Options{Executor: testExecutor}, 0)
	_, got := compile(t.Context(), dir, opt, 0)
	if want == nil || got == nil || got.Error() != want.Error() {
		t.Errorf("errors through the cache:\n%v\nwant:\n%v", got, want)
	}
	if b, _ := os.ReadFile(entry()); string(b) != string(good) {
		t.Errorf("a compile with errors changed the entry")
	}

	// A file changed just now: compiled, not stored.
	writeFile(t, filepath.Join(dir, "a.cue"), cacheRepo["a.cue"]+"\n// changed\n")
	if _, err := compile(t.Context(), dir, opt, time.Hour); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(entry()); string(b) != string(good) {
		t.Errorf("a compile of a file changed within the racy window stored its graph")
	}

	// DebugKeys: every key printed, nothing stored.
	var keys strings.Builder
	dbg := opt
	dbg.DebugKeys = &keys
	if _, err := compile(t.Context(), dir, dbg, 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(entry()); string(b) != string(good) {
		t.Errorf("a compile with DebugKeys stored its graph")
	}
	if n := strings.Count(keys.String(), "vmb: key "); n != len(fresh.Nodes) {
		t.Errorf("DebugKeys printed %d keys, want %d", n, len(fresh.Nodes))
	}
}

// TestGraphCacheSymlinkInCueMod: cue.mod/pkg linking a package from elsewhere
// (a developer's checkout) is read through the link, which a tree digest does not
// follow: such a repository is compiled afresh every time, never stored.
func TestGraphCacheSymlinkInCueMod(t *testing.T) {
	dir, elsewhere := t.TempDir(), t.TempDir()
	for name, data := range cacheRepo {
		writeFile(t, filepath.Join(dir, name), data)
	}
	writeFile(t, filepath.Join(elsewhere, "lib.cue"), "package lib\n\nmode: \"0600\"\n")
	writeFile(t, filepath.Join(dir, "cue.mod/module.cue"), defaultModule)
	if err := os.MkdirAll(filepath.Join(dir, "cue.mod/pkg/example.com"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "cue.mod/pkg/example.com/lib")); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "a.cue"), repl(cacheRepo["a.cue"], `import "vmb.local/sub"`, `import "example.com/lib:lib"`+"\nimport \"vmb.local/sub\"\n_m: lib.mode"))
	var debug strings.Builder
	opt := Options{Executor: testExecutor, GraphCache: filepath.Join(t.TempDir(), "graph"), DebugGraphCache: &debug}
	if _, err := compile(t.Context(), dir, opt, 0); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(debug.String(), "not stored: ") || !strings.Contains(debug.String(), "a symlink in cue.mod") {
		t.Errorf("a symlink in cue.mod: %s", debug.String())
	}
}

// TestGraphCacheTrim: storing an entry removes those no compile used for
// graphCacheUnused; a hit keeps its entry from that.
func TestGraphCacheTrim(t *testing.T) {
	dir := t.TempDir()
	for name, data := range cacheRepo {
		writeFile(t, filepath.Join(dir, name), data)
	}
	cache := filepath.Join(t.TempDir(), "graph")
	old := time.Now().Add(-graphCacheUnused - time.Hour)
	writeFile(t, filepath.Join(cache, "stale"), "an entry of a repository long gone")
	writeFile(t, filepath.Join(cache, "recent"), "an entry used lately")
	for _, name := range []string{"stale", "recent"} {
		at := old
		if name == "recent" {
			at = time.Now().Add(-graphCacheUnused + time.Hour)
		}
		if err := os.Chtimes(filepath.Join(cache, name), at, at); err != nil {
			t.Fatal(err)
		}
	}
	opt := Options{Executor: testExecutor, GraphCache: cache}
	if _, err := compile(t.Context(), dir, opt, 0); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(cache)
	var names []string
	var entry string
	for _, e := range ents {
		names = append(names, e.Name())
		if len(e.Name()) == 64 {
			entry = filepath.Join(cache, e.Name())
		}
	}
	if len(names) != 2 || entry == "" || !slices.Contains(names, "recent") {
		t.Fatalf("after a store: %q, want the new entry and recent", names)
	}
	// A hit on an entry last used long ago makes it recent.
	if err := os.Chtimes(entry, old, old); err != nil {
		t.Fatal(err)
	}
	var debug strings.Builder
	opt.DebugGraphCache = &debug
	if _, err := compile(t.Context(), dir, opt, 0); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(entry); err != nil || !strings.Contains(debug.String(), "hit ") || time.Since(fi.ModTime()) > time.Hour {
		t.Errorf("a hit on an old entry: %s; %v", debug.String(), err)
	}
}
