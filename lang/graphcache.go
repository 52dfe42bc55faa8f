package lang

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"cuelang.org/go/cue"
	"lukechampine.com/blake3"

	"vmb.dev/vmb/graph"
	"vmb.dev/vmb/internal/atomicfile"
	"vmb.dev/vmb/stdlib"
)

// The graph cache keeps the graph a repository compiled to, so that compiling it
// again unchanged evaluates no CUE: cmd/go's action cache, for one action.
//
// An entry is one file, in Options.GraphCache, named by the hex BLAKE3-256 of its
// slot: the repository's absolute path, the executor and the tags. A slot holds one
// graph, the last one compiled; a compile of changed definitions replaces it. The
// entry holds the key its graph was compiled under: the BLAKE3-256 of a preimage of
// readable lines (graphCache.preimage; the entry keeps them, so that a miss can say
// which line changed) naming
//
//	vmb's identity     the digest of the running executable, which embeds the stdlib
//	                   and the compiler; the stdlib's digest; CUE's language version
//	                   and graph.KeyVersion
//	the options        the repository, the executor, the tags
//	the CUE files      each directory the package and the packages it imports of its
//	                   own module were loaded from, with every *.cue file there and
//	                   its content's digest; the digest of the tree cue.mod, or none
//	the local inputs   each src the graph hashed, with its digest
//
// A look-up reads the entry's directories and inputs, digests them as they are now
// through the stat cache (an unchanged file is not read), and takes the graph only
// if the key comes out equal. Anything else, a missing, damaged, unreadable or
// foreign entry included, is a miss: the repository is compiled as if there were
// no cache. The graph depends on no other file: vmb does not enable CUE's @embed.
//
// A compile stores its graph only when it had no errors, and only when no CUE file
// (nor cue.mod, nor a directory listed) changed (its ctime) within racyWindow of
// the compile's start: the digests are taken after CUE read the files, and a file
// CUE read then changed would otherwise be stored under its new content's key.
// Nor is the graph of a repository whose cue.mod holds a symlink stored: a tree's
// digest names a symlink's target, not what CUE reads through it.
//
// The file: the line graphCacheMagic, the length (uvarint) of a gob-encoded
// entryHead, the head, then a gob-encoded entryBody whose BLAKE3-256 the head
// holds, checked before a byte of it is decoded.

// graphCacheMagic is the first line of an entry, and of its key's preimage.
const graphCacheMagic = "vmb graph cache v1"

// graphCacheUnused is how long an entry no compile has used is kept.
const graphCacheUnused = 30 * 24 * time.Hour

// graphCache is the cache of one compile: where its slot is and what goes into keys.
type graphCache struct {
	path   string  // the entry's file
	dir    string  // the repository, absolute
	opt    Options // Executor set
	h      *hasher
	self   string // the executable's digest
	stdlib string // the stdlib's digest
}

// entryHead is what a look-up reads to decide: the key and the dependencies it
// was computed from.
type entryHead struct {
	Key      [32]byte
	Preimage []byte     // what Key hashes, for a miss to say which line changed
	Dirs     []string   // directories of CUE files, slash-separated, relative to the repository
	Inputs   []inputDep // local inputs the graph hashed
	BodySum  [32]byte
}

type inputDep struct {
	Path   string // slash-separated, relative to the repository
	Digest string
}

// entryBody is the graph, nodes by index. Jobs are listed once however many nodes
// have the same (steps made from one template often do).
type entryBody struct {
	Jobs   []entryJob
	Nodes  []entryNode
	Images []entryImage
}

type entryJob struct {
	Kind   string
	Params []byte // the job's JSON
}

// entryNode is a node. Its key is the hash of its preimage.
type entryNode struct {
	Job      int // index in Jobs
	Parent   int // index in Nodes, -1 for none
	Inputs   []graph.Input
	Preimage []byte
	Image    string
	Step     int
	Name     string
	Pos      string
}

type entryImage struct {
	Name  string
	From  string
	Disks []graph.Disk
	Steps []entryStep
	Pos   string
}

type entryStep struct {
	Node  int
	Index int
	Name  string
	Pos   string
}

// openGraphCache returns the cache of a compile of dir with opt, or nil when there
// can be none (vmb's own executable cannot be read).
func openGraphCache(dir string, opt Options, h *hasher) *graphCache {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	self, err := h.digest(exe)
	if err != nil {
		return nil
	}
	var slot strings.Builder
	fmt.Fprintf(&slot, "vmb graph slot\nrepo %q\nexecutor %q\n", dir, opt.Executor)
	for _, t := range opt.Tags {
		fmt.Fprintf(&slot, "tag %q\n", t)
	}
	sum := blake3.Sum256([]byte(slot.String()))
	return &graphCache{
		path: filepath.Join(opt.GraphCache, hex.EncodeToString(sum[:])),
		dir:  dir, opt: opt, h: h, self: self, stdlib: stdlibDigest(),
	}
}

// stdlibDigest is the digest of the embedded stdlib: its files' names and contents.
func stdlibDigest() string {
	var t graph.TreeDigest
	fs.WalkDir(stdlib.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			b, _ := stdlib.FS.ReadFile(p)
			sum := blake3.Sum256(b)
			t.File(p, 0o644, hex.EncodeToString(sum[:]))
		}
		return nil
	})
	return t.Sum()
}

// errUnsettled: a dependency changed too recently for its digest to be trusted.
var errUnsettled = errors.New("changed during the compile")

// preimage returns the lines the key of a graph with these dependencies hashes.
// A look-up (settled zero) takes every digest now. A store takes the CUE files'
// digests now but requires that no CUE file, directory listed or entry of cue.mod
// changed (its ctime) after settled (errUnsettled), and takes the inputs' digests
// as the graph used them.
func (gc *graphCache) preimage(dirs []string, inputs []inputDep, settled time.Time) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s\nvmb %s\nstdlib %s\ncue %s\n%s\nrepo %q\nexecutor %q\n",
		graphCacheMagic, gc.self, gc.stdlib, cue.LanguageVersion(), graph.KeyVersion, gc.dir, gc.opt.Executor)
	for _, t := range gc.opt.Tags {
		fmt.Fprintf(&b, "tag %q\n", t)
	}
	check := func(p string, fi fs.FileInfo) error {
		if settled.IsZero() {
			return nil
		}
		// Any change sets the ctime, which, unlike the mtime, no one sets back.
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok || !time.Unix(0, st.Ctim.Nano()).Before(settled) {
			return fmt.Errorf("%s: %w", p, errUnsettled)
		}
		return nil
	}
	for _, d := range dirs {
		abs := filepath.Join(gc.dir, filepath.FromSlash(d))
		fi, err := os.Stat(abs)
		if err != nil {
			return nil, err
		}
		if err := check(abs, fi); err != nil {
			return nil, err
		}
		ents, err := os.ReadDir(abs)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "cuedir %q\n", d)
		for _, e := range ents { // sorted by name
			if !strings.HasSuffix(e.Name(), ".cue") || e.IsDir() {
				continue
			}
			p := filepath.Join(abs, e.Name())
			fi, err := os.Stat(p)
			if err != nil {
				return nil, err
			}
			if err := check(p, fi); err != nil {
				return nil, err
			}
			if !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("%s: not a regular file", p)
			}
			d, err := gc.h.file(p, fi)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(&b, "cuefile %q %s\n", e.Name(), d)
		}
	}
	mod := filepath.Join(gc.dir, "cue.mod")
	switch _, err := os.Lstat(mod); {
	case os.IsNotExist(err):
		b.WriteString("cuemod none\n")
	case err != nil:
		return nil, err
	default:
		if !settled.IsZero() {
			err := filepath.WalkDir(mod, func(p string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				fi, err := d.Info()
				if err != nil {
					return err
				}
				if fi.Mode()&fs.ModeSymlink != 0 {
					// Its digest would be its target's name, not what CUE reads there.
					return fmt.Errorf("%s: a symlink in cue.mod", p)
				}
				return check(p, fi)
			})
			if err != nil {
				return nil, err
			}
		}
		d, err := gc.h.digest(mod)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "cuemod %s\n", d)
	}
	for _, in := range inputs {
		d := in.Digest // a compile's: the digest its graph was keyed with
		if settled.IsZero() {
			var err error
			if d, err = gc.h.digest(filepath.Join(gc.dir, filepath.FromSlash(in.Path))); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&b, "input %q %s\n", in.Path, d)
	}
	return b.Bytes(), nil
}

// lookup returns the graph of the entry if its key is the key of the repository
// as it is now, else why not.
func (gc *graphCache) lookup() (*graph.Graph, error) {
	raw, err := os.ReadFile(gc.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errors.New("no entry")
	} else if err != nil {
		return nil, err
	}
	head, body, ok := splitEntry(raw)
	if !ok || blake3.Sum256(head.Preimage) != head.Key {
		return nil, errors.New("a damaged entry")
	}
	pre, err := gc.preimage(head.Dirs, head.Inputs, time.Time{})
	if err != nil {
		return nil, err
	}
	if blake3.Sum256(pre) != head.Key {
		return nil, fmt.Errorf("the key changed:\n%s", lineDiff(head.Preimage, pre))
	}
	if blake3.Sum256(body) != head.BodySum {
		return nil, errors.New("a damaged entry")
	}
	g, err := decodeGraph(gc.dir, gc.opt.Executor, body)
	if err != nil {
		return nil, fmt.Errorf("a damaged entry: %w", err)
	}
	// Keep a used entry from the trim, touching it at most once a day.
	if fi, err := os.Stat(gc.path); err == nil && time.Since(fi.ModTime()) > 24*time.Hour {
		now := time.Now()
		os.Chtimes(gc.path, now, now)
	}
	return g, nil
}

// lineDiff lists the lines of was not in now ("-") and of now not in was ("+").
func lineDiff(was, now []byte) string {
	a, b := strings.Split(string(was), "\n"), strings.Split(string(now), "\n")
	var out strings.Builder
	for _, l := range a {
		if !slices.Contains(b, l) {
			fmt.Fprintf(&out, "\t- %s\n", l)
		}
	}
	for _, l := range b {
		if !slices.Contains(a, l) {
			fmt.Fprintf(&out, "\t+ %s\n", l)
		}
	}
	return strings.TrimSuffix(out.String(), "\n")
}

// splitEntry parses an entry's file into its head and the bytes of its body.
func splitEntry(raw []byte) (entryHead, []byte, bool) {
	var head entryHead
	rest, ok := bytes.CutPrefix(raw, []byte(graphCacheMagic+"\n"))
	if !ok {
		return head, nil, false
	}
	n, w := binary.Uvarint(rest)
	if w <= 0 || n > uint64(len(rest)-w) {
		return head, nil, false
	}
	if err := gob.NewDecoder(bytes.NewReader(rest[w : w+int(n)])).Decode(&head); err != nil {
		return head, nil, false
	}
	return head, rest[w+int(n):], true
}

// store writes g as the slot's entry, keyed by its dependencies as they were when
// the compile began (start). It stores nothing when one changed after start-racy.
func (gc *graphCache) store(g *graph.Graph, dirs []string, inputs []inputDep, start time.Time, racy time.Duration) error {
	pre, err := gc.preimage(dirs, inputs, start.Add(-racy))
	if err != nil {
		return err
	}
	body, err := encodeGraph(g)
	if err != nil {
		return err
	}
	head := entryHead{Key: blake3.Sum256(pre), Preimage: pre, Dirs: dirs, Inputs: inputs, BodySum: blake3.Sum256(body)}
	var hb bytes.Buffer
	if err := gob.NewEncoder(&hb).Encode(&head); err != nil {
		return err
	}
	var out bytes.Buffer
	out.Grow(len(graphCacheMagic) + 1 + binary.MaxVarintLen64 + hb.Len() + len(body))
	out.WriteString(graphCacheMagic + "\n")
	out.Write(binary.AppendUvarint(nil, uint64(hb.Len())))
	out.Write(hb.Bytes())
	out.Write(body)
	if err := atomicfile.WriteFile(gc.path, out.Bytes(), 0o644); err != nil {
		return err
	}
	trimGraphCache(filepath.Dir(gc.path), time.Now())
	return nil
}

// trimGraphCache removes the entries of dir no compile used in graphCacheUnused
// (the repository was moved or removed, the appliance or the tags changed).
func trimGraphCache(dir string, now time.Time) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && !strings.HasPrefix(e.Name(), ".") && now.Sub(fi.ModTime()) > graphCacheUnused {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

func encodeGraph(g *graph.Graph) ([]byte, error) {
	index := make(map[*graph.Node]int, len(g.Nodes))
	jobs := map[struct{ kind, params string }]int{}
	var body entryBody
	body.Nodes = make([]entryNode, len(g.Nodes))
	for i, n := range g.Nodes {
		index[n] = i
		params, err := json.Marshal(n.Job)
		if err != nil {
			return nil, err
		}
		ej := entryJob{Kind: n.Job.Kind(), Params: params}
		jk := struct{ kind, params string }{ej.Kind, string(params)}
		j, ok := jobs[jk]
		if !ok {
			j = len(body.Jobs)
			jobs[jk] = j
			body.Jobs = append(body.Jobs, ej)
		}
		parent := -1
		if n.Parent != nil {
			parent = index[n.Parent]
		}
		body.Nodes[i] = entryNode{Job: j, Parent: parent,
			Inputs: n.Inputs, Preimage: n.Preimage, Image: n.Image, Step: n.Step, Name: n.Name, Pos: n.Pos}
	}
	for _, im := range g.Images {
		ei := entryImage{Name: im.Name, From: im.From, Disks: im.Disks, Pos: im.Pos}
		for _, s := range im.Steps {
			ei.Steps = append(ei.Steps, entryStep{Node: index[s.Node], Index: s.Index, Name: s.Name, Pos: s.Pos})
		}
		body.Images = append(body.Images, ei)
	}
	var b bytes.Buffer
	if err := gob.NewEncoder(&b).Encode(&body); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// decodeGraph decodes an entry's body.
func decodeGraph(dir, executor string, raw []byte) (*graph.Graph, error) {
	var body entryBody
	if err := gob.NewDecoder(bytes.NewReader(raw)).Decode(&body); err != nil {
		return nil, err
	}
	jobs := make([]graph.Job, len(body.Jobs))
	for i, ej := range body.Jobs {
		if jobs[i] = graph.NewJob(ej.Kind); jobs[i] == nil {
			return nil, fmt.Errorf("job %d: unknown kind %q", i, ej.Kind)
		}
		if err := json.Unmarshal(ej.Params, jobs[i]); err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
	}
	g := &graph.Graph{Dir: dir}
	nodes := make([]*graph.Node, len(body.Nodes))
	for i, en := range body.Nodes {
		if en.Job < 0 || en.Job >= len(jobs) {
			return nil, fmt.Errorf("node %d: damaged", i)
		}
		job := copyJob(jobs[en.Job])
		if en.Parent >= i || en.Parent < -1 {
			return nil, fmt.Errorf("node %d: damaged", i)
		}
		n := &graph.Node{Key: graph.HashPreimage(en.Preimage), Job: job, Inputs: en.Inputs, Executor: executor, Preimage: en.Preimage,
			Image: en.Image, Step: en.Step, Name: en.Name, Pos: en.Pos}
		if en.Parent >= 0 {
			n.Parent = nodes[en.Parent]
		}
		if g.Add(n) != n {
			return nil, fmt.Errorf("node %d: key %s twice", i, n.Key)
		}
		nodes[i] = n
	}
	for _, ei := range body.Images {
		im := &graph.Image{Name: ei.Name, From: ei.From, Disks: ei.Disks, Pos: ei.Pos}
		for _, es := range ei.Steps {
			if es.Node < 0 || es.Node >= len(nodes) {
				return nil, fmt.Errorf("image %s: damaged", ei.Name)
			}
			im.Steps = append(im.Steps, graph.Step{Node: nodes[es.Node], Index: es.Index, Name: es.Name, Pos: es.Pos})
		}
		g.Images = append(g.Images, im)
	}
	if !slices.IsSortedFunc(g.Images, func(a, b *graph.Image) int { return strings.Compare(a.Name, b.Name) }) {
		return nil, errors.New("images not sorted")
	}
	return g, nil
}

// copyJob returns a job of its own for a node: a copy of j. What the copy shares
// with j (a partition list, a run's environment) no one changes once compiled.
func copyJob(j graph.Job) graph.Job {
	v := reflect.New(reflect.TypeOf(j).Elem())
	v.Elem().Set(reflect.ValueOf(j).Elem())
	return v.Interface().(graph.Job)
}
