package lang

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"

	"vmb.dev/vmb/graph"
)

// PlaceholderExecutor is the executor identity used when the caller gives none,
// until the build VM's appliance exists: keys made with it are stable, but they
// name no appliance, so no result of the real build VM will ever match them.
const PlaceholderExecutor = "placeholder (no appliance)"

// Options configures Compile.
type Options struct {
	// Executor is the identity of the executor (graph.ExecutorID: the appliance
	// digest and the agent protocol version); it enters every key. "" means
	// PlaceholderExecutor.
	Executor string
	// StatCache is the file where digests of local inputs are cached by path, size,
	// mtime, ctime and inode, so that re-hashing an unchanged tree reads no file;
	// "" keeps no cache. lang creates the file and its directory if need be.
	StatCache string
	// DebugKeys, if not nil, receives the preimage of every node as it is keyed
	// (the CLI sets it when VMB_DEBUG_KEYS=1).
	DebugKeys io.Writer
	// ResolveImage, if not nil, returns the digest ("sha256:<hex>") an image
	// reference names now (a registry's tag, an OCI layout's tag), dir being the
	// build repository a relative path is in. lang does no I/O of its own for it:
	// it calls it only to say, in the error that refuses an unpinned image-in,
	// which digest to pin. The CLI sets it (vmexec.ResolveImage).
	ResolveImage func(ctx context.Context, dir, ref string) (string, error)
	// Tags are values injected into the definitions, "key=value" each, into
	// fields marked @tag(key) (CUE's tag injection; vmb solve -t key=value). They
	// are definitions like any other: a tag's value enters keys as the fields it
	// sets do.
	Tags []string
	// GraphCache is the directory where compiled graphs are kept, keyed by all
	// they depend on (graphcache.go), so that compiling an unchanged repository
	// evaluates no CUE; "" keeps none. lang creates it if need be. A compile with
	// DebugKeys set neither reads nor writes it: it keys every node to print it.
	GraphCache string
	// DebugGraphCache, if not nil, receives a line saying whether the graph came
	// from the graph cache, and if not why not (the CLI sets it when
	// VMB_DEBUG_GRAPH_CACHE=1).
	DebugGraphCache io.Writer
}

// Compile loads the build repository in dir and compiles every image into a graph
// of keyed nodes. It returns Errors listing every problem, each at file:line:col,
// and no graph, if the definitions are invalid. Hashing local inputs stops when
// ctx is done.
func Compile(ctx context.Context, dir string, opt Options) (*graph.Graph, error) {
	return compile(ctx, dir, opt, racyWindow)
}

// compile is Compile, a file changed in the last racy being too recent for the
// stat cache and the graph cache to trust (tests set 0).
func compile(ctx context.Context, dir string, opt Options, racy time.Duration) (*graph.Graph, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("build repository %s: not a directory", dir)
	}
	if opt.Executor == "" {
		opt.Executor = PlaceholderExecutor
	}
	h := newHasher(ctx, opt.StatCache)
	h.racy = racy
	defer h.save() // a cache that cannot be written only makes the next run slower
	debug := func(format string, args ...any) {
		if opt.DebugGraphCache != nil {
			fmt.Fprintf(opt.DebugGraphCache, "vmb: graph cache: "+format+"\n", args...)
		}
	}
	var gc *graphCache
	switch {
	case opt.GraphCache == "":
	case opt.DebugKeys != nil:
		debug("not used: keys are printed as they are computed")
	default:
		if gc = openGraphCache(abs, opt, h); gc == nil {
			debug("not used: vmb's executable cannot be read")
			break
		}
		g, err := gc.lookup()
		if err == nil {
			debug("hit %s", gc.path)
			return g, nil
		}
		debug("miss %s: %v", gc.path, err)
	}
	start := time.Now()
	c, err := compileFresh(ctx, abs, opt, h)
	if err != nil {
		return nil, err
	}
	if gc != nil {
		var inputs []inputDep
		for p, hd := range c.hashed {
			rel, _ := filepath.Rel(abs, p)
			inputs = append(inputs, inputDep{Path: filepath.ToSlash(rel), Digest: hd.d})
		}
		slices.SortFunc(inputs, func(a, b inputDep) int { return strings.Compare(a.Path, b.Path) })
		// One not stored is compiled again next time.
		if err := gc.store(c.g, c.l.cueDirs, inputs, start, racy); err != nil {
			debug("not stored: %v", err)
		} else {
			debug("stored %s", gc.path)
		}
	}
	return c.g, nil
}

// compileFresh compiles the repository in abs, evaluating its CUE.
func compileFresh(ctx context.Context, abs string, opt Options, h *hasher) (*compiler, error) {
	errs := &errorList{dir: abs}
	l, ok := loadRepo(abs, opt.Tags, errs)
	if !ok {
		return nil, errs.err()
	}
	c := &compiler{
		ctx: ctx, l: l, errs: errs, opt: opt, g: &graph.Graph{Dir: abs},
		images: map[string]cue.Value{}, done: map[string]*compiled{},
		hash:  h,
		image: l.schema.LookupPath(cue.ParsePath("#Image")),
		jobs:  l.schema.LookupPath(cue.ParsePath("#Jobs")),
	}
	imgs := l.root.LookupPath(cue.ParsePath("images"))
	if !imgs.Exists() {
		if err := l.root.Err(); err != nil {
			errs.addCUE(err, token.NoPos)
		} else {
			errs.addf(l.root.Pos(), "no images: the package must have an images field (images: NAME: {disks: ..., steps: [...]})")
		}
		return nil, errs.err()
	}
	it, err := imgs.Fields()
	if err != nil {
		errs.addCUE(err, imgs.Pos())
		return nil, errs.err()
	}
	var names []string
	for it.Next() {
		names = append(names, it.Selector().Unquoted())
		c.images[it.Selector().Unquoted()] = it.Value()
	}
	sort.Strings(names)
	for _, name := range names {
		c.compile(name, "", token.NoPos)
	}
	if err := errs.err(); err != nil {
		return nil, err
	}
	for _, name := range names {
		c.g.Images = append(c.g.Images, c.done[name].im)
	}
	return c, nil
}

type compiler struct {
	ctx    context.Context
	l      *loaded
	errs   *errorList
	opt    Options
	g      *graph.Graph
	images map[string]cue.Value
	done   map[string]*compiled
	busy   []string // the images being compiled, each from the next
	hash   *hasher
	hashed map[string]hashed // by path: an input several steps copy is hashed once
	image  cue.Value         // #Image
	jobs   cue.Value         // #Jobs
}

type hashed struct {
	d   string
	err error
}

// digest returns the digest of the local input at p, once per compile.
func (c *compiler) digest(p string) (string, error) {
	if h, ok := c.hashed[p]; ok {
		return h.d, h.err
	}
	d, err := c.hash.digest(p)
	if c.hashed == nil {
		c.hashed = map[string]hashed{}
	}
	c.hashed[p] = hashed{d, err}
	return d, err
}

type compiled struct {
	failed bool // the image has errors
	im     *graph.Image
	final  *graph.Node
	st     *state
}

// compile compiles image name (and, first, the image it is from). by is the image
// whose from names it, and ref where, for errors.
func (c *compiler) compile(name, by string, ref token.Pos) *compiled {
	if r, ok := c.done[name]; ok {
		return r
	}
	v, ok := c.images[name]
	if !ok {
		c.errs.addf(ref, "images.%s.from: no image %q", by, name)
		return nil
	}
	if i := slices.Index(c.busy, name); i >= 0 {
		cycle := append(slices.Clone(c.busy[i:]), name)
		c.errs.addf(ref, "images.%s.from: image %q is its own ancestor: %s (each image is from the next)", by, name, strings.Join(cycle, " -> "))
		return nil
	}
	c.busy = append(c.busy, name)
	defer func() { c.busy = c.busy[:len(c.busy)-1] }()
	errsBefore := len(c.errs.errs)

	orig := v // positions in the user's file; the unified value may report the stdlib's
	v = v.Unify(c.image)
	unknown := c.unknownFields(name, v, orig)
	err := v.Validate()
	if err != nil {
		// A closed template (the stdlib's) refuses an unknown field too: it is
		// reported once, by unknownFields.
		err = dropErrors(err, func(e errors.Error) bool {
			format, _ := e.Msg()
			p := e.Path()
			return format == "field not allowed" && len(p) == 3 && slices.Contains(unknown, p[2])
		})
		c.errs.addCUE(err, orig.Pos())
	}
	if err != nil || len(unknown) > 0 || c.unsetParams(name, v, orig) {
		c.done[name] = &compiled{failed: true, im: &graph.Image{Name: name}, st: newState()}
		return c.done[name]
	}
	im := &graph.Image{Name: name, Pos: c.errs.pos(orig.Pos())}
	st := newState()
	var parent *graph.Node
	baseFailed := false
	if from := v.LookupPath(cue.ParsePath("from")); from.Exists() {
		base, err := from.String()
		b := (*compiled)(nil)
		if err != nil {
			c.errs.addCUE(err, from.Pos())
		} else if b = c.compile(base, name, from.Pos()); b != nil {
			im.From, parent, st = base, b.final, b.st.clone()
		}
		baseFailed = b == nil || b.failed
	}

	add := func(j graph.Job, inputs []graph.Input, step int, stepName string, pos token.Pos) {
		n := graph.NewNode(c.opt.Executor, parent, j, inputs)
		n.Image, n.Step, n.Name, n.Pos = name, step, stepName, c.errs.pos(pos)
		if c.opt.DebugKeys != nil {
			fmt.Fprintf(c.opt.DebugKeys, "vmb: key %s of %s:\n%s\n", n.Key, n.Label(), n.Preimage)
		}
		parent = c.g.Add(n)
		im.Steps = append(im.Steps, graph.Step{Node: parent, Index: step, Name: stepName, Pos: c.errs.pos(pos)})
	}

	// Declared disks, sorted by name so that their order in the file is not key material.
	disks := v.LookupPath(cue.ParsePath("disks"))
	var dnames []string
	dvals := map[string]cue.Value{}
	if it, err := disks.Fields(); err == nil {
		for it.Next() {
			dnames = append(dnames, it.Selector().Unquoted())
			dvals[it.Selector().Unquoted()] = it.Value()
		}
	}
	sort.Strings(dnames)
	for _, d := range dnames {
		var size graph.Size
		if err := dvals[d].Decode(&size); err != nil {
			c.errs.addf(c.userPos(dvals[d], orig), "images.%s.disks.%s: %v", name, d, err)
			continue
		}
		j := &graph.CreateDisk{Disk: d, Size: size}
		if err := st.apply(j, ""); err != nil {
			c.errs.addf(c.userPos(dvals[d], orig), "images.%s.disks.%s: %v", name, d, err)
			continue
		}
		add(j, nil, -1, "", c.userPos(dvals[d], orig))
	}

	steps, err := v.LookupPath(cue.ParsePath("steps")).List()
	if err != nil {
		c.errs.addCUE(err, v.Pos())
	}
	for i := 0; err == nil && steps.Next(); i++ {
		sv := steps.Value()
		j, stepName, inputs, ok := c.step(sv, fmt.Sprintf("images.%s.steps[%d]", name, i), orig)
		if !ok {
			continue
		}
		if baseFailed || len(c.errs.errs) > errsBefore {
			// After an invalid step (or base) the state is unknown: checking later
			// steps against it would report errors the user did not make.
			continue
		}
		pos := c.userPos(sv, orig)
		if err := st.apply(j, fmt.Sprintf("steps[%d] (%s) at %s", i, j.Kind(), c.errs.pos(pos))); err != nil {
			c.errs.addf(pos, "images.%s.steps[%d] (%s): %v", name, i, j.Kind(), err)
			continue
		}
		add(j, inputs, i, stepName, pos)
	}
	im.Disks = st.diskList()
	r := &compiled{im: im, final: parent, st: st, failed: baseFailed || len(c.errs.errs) > errsBefore}
	c.done[name] = r
	return r
}

// userPos returns v's position if it is in the user's files, else the image's.
func (c *compiler) userPos(v, image cue.Value) token.Pos {
	ps := []token.Pos{v.Pos()}
	if p := ps[0]; p.IsValid() && !strings.Contains(p.Filename(), stdlibDir) {
		return p // the common case, and the cheap one
	}
	if op, args := v.Expr(); op == cue.AndOp {
		for _, a := range args {
			ps = append(ps, a.Pos())
		}
	}
	// A value passed through a template (a step of #GPTDisk's then) may report the
	// stdlib's position; its fields keep the user's.
	if it, err := v.Fields(); err == nil {
		for it.Next() {
			ps = append(ps, it.Value().Pos())
		}
	}
	return c.errs.userPos(ps, image.Pos())
}

// step checks a step, called where in errors, against its job's schema and decodes it.
func (c *compiler) step(sv cue.Value, where string, image cue.Value) (graph.Job, string, []graph.Input, bool) {
	pos := c.userPos(sv, image)
	kind, err := sv.LookupPath(cue.ParsePath("job")).String()
	if err != nil {
		c.errs.addf(pos, "%s: job: want one of %s", where, strings.Join(graph.Kinds, ", "))
		return nil, "", nil, false
	}
	job := graph.NewJob(kind)
	schema := c.jobs.LookupPath(cue.MakePath(cue.Str(kind)))
	if job == nil || !schema.Exists() {
		c.errs.addf(pos, "%s: unknown job %q (want one of %s)", where, kind, strings.Join(graph.Kinds, ", "))
		return nil, "", nil, false
	}
	where += " (" + kind + ")"
	u := sv.Unify(schema)
	if err := u.Validate(cue.Concrete(true)); err != nil {
		before := len(c.errs.errs)
		c.errs.addCUE(err, pos)
		for k := before; k < len(c.errs.errs); k++ {
			c.errs.errs[k].Msg = where + ": " + trimPath(c.errs.errs[k].Msg)
		}
		return nil, "", nil, false
	}
	if err := u.Decode(job); err != nil {
		c.errs.addf(pos, "%s: %v", where, err)
		return nil, "", nil, false
	}
	if p, ok := job.(*graph.Partition); ok && !c.partitionSizes(p, u, where, image) {
		return nil, "", nil, false
	}
	name, _ := u.LookupPath(cue.ParsePath("name")).String()
	inputs, ok := c.inputs(job, u, where, pos)
	return job, name, inputs, ok
}

// trimPath drops the CUE path prefix "images.x.steps.N." from a message.
func trimPath(msg string) string {
	if i := strings.Index(msg, ".steps."); i >= 0 {
		rest := msg[i+len(".steps."):]
		if j := strings.IndexByte(rest, '.'); j >= 0 {
			return rest[j+1:]
		}
	}
	return msg
}

// inputs hashes the local files a job reads.
func (c *compiler) inputs(job graph.Job, u cue.Value, where string, pos token.Pos) ([]graph.Input, bool) {
	uses := job.Uses()
	if p := uses.Pinned; p != nil {
		if p.Digest == "" {
			c.unpinned(uses.Remote, u, where, pos)
			return nil, false
		}
		return []graph.Input{*p}, true
	}
	srcp := uses.Src
	if srcp == nil {
		return nil, true
	}
	src := *srcp
	*srcp = path.Clean(src) // one spelling, one key: "files/" is "files"
	p := src
	if !filepath.IsAbs(p) {
		p = filepath.Join(c.l.dir, filepath.FromSlash(src))
	}
	field := "src" // the field that names it: an image-in's archive is in its ref
	if !u.LookupPath(cue.ParsePath(field)).Exists() {
		field = "ref"
	}
	if fp := u.LookupPath(cue.ParsePath(field)).Pos(); fp.IsValid() && !strings.Contains(fp.Filename(), stdlibDir) {
		pos = fp
	}
	if rel, err := filepath.Rel(c.l.dir, p); err != nil || strings.HasPrefix(rel, "..") || path.IsAbs(src) {
		c.errs.addf(pos, "%s: %s %q is outside the build repository", where, field, src)
		return nil, false
	}
	d, err := c.digest(p)
	if err != nil {
		if os.IsNotExist(err) {
			c.errs.addf(pos, "%s: %s %q: no such file or directory in the build repository", where, field, src)
		} else {
			c.errs.addf(pos, "%s: %s %q: %v", where, field, src, err)
		}
		return nil, false
	}
	return []graph.Input{{Name: "src", Digest: d}}, true
}

// unpinned reports a remote input (an image reference) without a digest, with
// the digest it resolves to now when Options.ResolveImage can say.
func (c *compiler) unpinned(ref string, u cue.Value, where string, pos token.Pos) {
	if fp := u.LookupPath(cue.ParsePath("ref")).Pos(); fp.IsValid() && !strings.Contains(fp.Filename(), stdlibDir) {
		pos = fp
	}
	if c.opt.ResolveImage == nil {
		c.errs.addf(pos, "%s: ref %q is not pinned: add the digest of its manifest, as in %q", where, ref, ref+"@sha256:<64 hex digits>")
		return
	}
	d, err := c.opt.ResolveImage(c.ctx, c.l.dir, ref)
	if err != nil {
		c.errs.addf(pos, "%s: ref %q is not pinned, and resolving it failed: %v", where, ref, err)
		return
	}
	c.errs.addf(pos, "%s: ref %q is not pinned: it names %s now; pin it with ref: %q", where, ref, d, ref+"@"+d)
}

// partitionSizes refuses a partition of size zero: graph stores "rest" as 0, so
// an explicit 0 (or "0MiB") would silently mean the rest of the disk.
func (c *compiler) partitionSizes(p *graph.Partition, u cue.Value, where string, image cue.Value) bool {
	ok := true
	for i, spec := range p.Partitions {
		size := u.LookupPath(cue.MakePath(cue.Str("partitions"), cue.Index(i), cue.Str("size")))
		if s, err := size.String(); spec.Size != 0 || err == nil && s == "rest" {
			continue
		}
		written := "0"
		if s, err := size.String(); err == nil {
			written = strconv.Quote(s)
		}
		c.errs.addf(c.userPos(size, image), "%s: partitions[%d].size: %s is not a partition's size: give 1MiB or more, or \"rest\" for the rest of the disk", where, i, written)
		ok = false
	}
	return ok
}
