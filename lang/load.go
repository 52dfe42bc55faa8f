package lang

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/cuecontext"
	"cuelang.org/go/cue/load"
	"cuelang.org/go/cue/token"

	"vmb.dev/vmb/stdlib"
)

// stdlibDir is where the stdlib appears to CUE, inside the repository's cue.mod.
var stdlibDir = filepath.Join("cue.mod", "pkg", stdlib.ModulePath)

// loaded is a repository evaluated by CUE, with the stdlib's schema beside it.
type loaded struct {
	dir    string
	root   cue.Value // the user's package
	schema cue.Value // the stdlib package vmb.dev/vmb
}

// loadRepo loads the CUE package in dir with the stdlib overlaid as an importable
// package, and evaluates it.
func loadRepo(dir string, errs *errorList) (*loaded, bool) {
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
		overlay[filepath.Join(dir, "cue.mod", "module.cue")] = load.FromString("module: \"vmb.local\"\nlanguage: version: \"v0.12.0\"\n")
	}
	if cues, _ := filepath.Glob(filepath.Join(dir, "*.cue")); len(cues) == 0 {
		errs.addf(token.NoPos, "%s: no .cue files: a build repository is a directory holding a CUE package", dir)
		return nil, false
	}
	cfg := &load.Config{Dir: dir, Overlay: overlay}
	insts := load.Instances([]string{".", stdlib.ModulePath + "/vmb"}, cfg)
	for _, inst := range insts {
		if inst.Err != nil {
			errs.addCUE(inst.Err, token.NoPos)
			return nil, false
		}
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
	if err := schema.Err(); err != nil {
		panic(fmt.Sprintf("lang: the stdlib does not evaluate: %v", err))
	}
	return &loaded{dir: dir, root: root, schema: schema}, true
}
