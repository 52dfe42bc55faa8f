package lang

import (
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/build"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/load"
	"cuelang.org/go/cue/token"

	"vmb.dev/vmb/stdlib"
)

// stdlibDir is where the stdlib appears to CUE, inside the repository's cue.mod.
var stdlibDir = filepath.Join("cue.mod", "pkg", stdlib.ModulePath)

// defaultModule is the module file of a repository without one. Its language
// version is the newest the CUE vmb is built with evaluates (cue.LanguageVersion),
// as cue mod init writes it, so that a file cue accepts with a module file of its
// own is accepted without one; a repository's own cue.mod/module.cue decides for
// it, as it does for cue.
var defaultModule = fmt.Sprintf("module: \"vmb.local\"\nlanguage: version: %q\n", cue.LanguageVersion())

// loaded is a repository evaluated by CUE, with the stdlib's schema beside it.
type loaded struct {
	dir    string
	root   cue.Value // the user's package
	schema cue.Value // the stdlib package vmb.dev/vmb
	// cueDirs are the directories, relative to dir and slash-separated, that CUE
	// files of the user's package and of the packages of its module it imports
	// were loaded from, sorted: what the graph cache keys on besides cue.mod.
	cueDirs []string
}

// loadRepo loads the CUE package in dir with the stdlib overlaid as an importable
// package, and evaluates it.
func loadRepo(dir string, tags []string, errs *errorList) (*loaded, bool) {
	overlay := map[string]load.Source{}
	err := fs.WalkDir(stdlib.FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := stdlib.FS.ReadFile(p)
		overlay[filepath.Join(dir, stdlibDir, p)] = load.FromBytes(b)
		return err
	})
	if err != nil {
		errs.addf(token.NoPos, "stdlib: %v", err)
		return nil, false
	}
	if _, err := os.Stat(filepath.Join(dir, "cue.mod", "module.cue")); err != nil {
		overlay[filepath.Join(dir, "cue.mod", "module.cue")] = load.FromString(defaultModule)
	}
	if cues, _ := filepath.Glob(filepath.Join(dir, "*.cue")); len(cues) == 0 {
		errs.addf(token.NoPos, "%s: no .cue files: a build repository is a directory holding a CUE package", dir)
		return nil, false
	}
	cfg := &load.Config{Dir: dir, Overlay: overlay, Tags: tags}
	insts := load.Instances([]string{".", stdlib.ModulePath + "/vmb"}, cfg)
	for _, inst := range insts {
		if inst.Err == nil {
			continue
		}
		if tag, ok := strings.CutPrefix(inst.Err.Error(), "no tag for "); ok {
			errs.addf(token.NoPos, "-t %s: no field takes this tag (a field marked @tag(NAME) takes -t NAME=VALUE)", strings.Trim(tag, `"`))
		} else {
			errs.addCUE(inst.Err, token.NoPos)
		}
		return nil, false
	}
	ctx := cuecontext.New()
	vs, err := ctx.BuildInstances(insts)
	if err != nil {
		errs.addCUE(err, token.NoPos)
		return nil, false
	}
	// root.Err() would report the error of any one image: Compile reports each
	// image's errors as it compiles it, so that one bad image hides no other's.
	root, schema := vs[0], vs[1]
	for _, f := range insts[0].Files {
		errs.tmpl.scan(f)
	}
	if err := schema.Err(); err != nil {
		panic(fmt.Sprintf("lang: the stdlib does not evaluate: %v", err))
	}
	return &loaded{dir: dir, root: root, schema: schema, cueDirs: cueDirs(dir, insts[0])}, true
}

// cueDirs returns the directories inst and the packages it imports were loaded
// from, with every directory between them and dir (a package's files in a parent
// directory are part of it), leaving out cue.mod (keyed whole) and what is not
// under dir.
func cueDirs(dir string, inst *build.Instance) []string {
	seen := map[*build.Instance]bool{}
	set := map[string]bool{}
	var walk func(*build.Instance)
	walk = func(inst *build.Instance) {
		if seen[inst] {
			return
		}
		seen[inst] = true
		rel, err := filepath.Rel(dir, inst.Dir)
		if err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) &&
			rel != "cue.mod" && !strings.HasPrefix(rel, "cue.mod"+string(filepath.Separator)) {
			for ; rel != "." && !set[filepath.ToSlash(rel)]; rel = filepath.Dir(rel) {
				set[filepath.ToSlash(rel)] = true
			}
			set["."] = true
		}
		for _, imp := range inst.Imports {
			walk(imp)
		}
	}
	walk(inst)
	dirs := slices.Collect(maps.Keys(set))
	slices.Sort(dirs)
	return dirs
}

// span is the text of one definition in a user's file, from its label to its end.
type span struct{ start, end token.Pos }

func (s span) contains(p token.Pos) bool {
	return p.Filename() == s.start.Filename() && s.start.Offset() <= p.Offset() && p.Offset() < s.end.Offset()
}

// templates are where a user's files define templates and where they use them.
type templates struct {
	defs []span      // the definitions (#T, _#T), at any depth
	uses []token.Pos // the references to a definition (#T, vmb.#T) outside them
}

func (t *templates) scan(f *ast.File) {
	ast.Walk(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Field:
			if name, _, err := ast.LabelName(n.Label); err == nil && isDefinition(name) {
				t.defs = append(t.defs, span{n.Pos(), n.End()})
				return false
			}
		case *ast.Ident:
			if isDefinition(n.Name) {
				t.uses = append(t.uses, n.Pos())
			}
		case *ast.SelectorExpr:
			if name, _, err := ast.LabelName(n.Sel); err == nil && isDefinition(name) {
				t.uses = append(t.uses, n.Pos())
				return false
			}
		}
		return true
	}, nil)
}

func isDefinition(name string) bool {
	return strings.HasPrefix(name, "#") || strings.HasPrefix(name, "_#")
}

// inDefinition reports whether p lies in a definition.
func (t *templates) inDefinition(p token.Pos) bool {
	return slices.ContainsFunc(t.defs, func(s span) bool { return s.contains(p) })
}
