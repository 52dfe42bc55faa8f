package lang

import (
	"fmt"
	"slices"
	"strings"

	"cuelang.org/go/cue"
	"cuelang.org/go/cue/ast"
	"cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
)

// imageFields are the fields of every image (#Image's); any other field of an
// image is a parameter of the template it is made from.
var imageFields = []string{"disks", "from", "steps"}

// template is the template an image is made from, as its errors name it.
type template struct {
	name string    // as the user wrote it: "vmb.#GPTDisk", "#Site"; "" if none
	pos  token.Pos // where the image applies it; the image's position if none
}

// templateOf finds the definition orig (an image as the user wrote it) is made
// from: a conjunct that refers to a definition (vmb.#GPTDisk & {...}, or {#Site, ...}).
func templateOf(orig cue.Value) template {
	_, args := orig.Expr()
	for _, a := range args {
		_, p := a.ReferencePath()
		sels := p.Selectors()
		if len(sels) == 0 || !sels[len(sels)-1].IsDefinition() {
			continue
		}
		name := sels[len(sels)-1].String()
		switch x := a.Source().(type) {
		case *ast.Ident:
			name = x.Name
		case *ast.SelectorExpr:
			if id, ok := x.X.(*ast.Ident); ok {
				name = id.Name + "." + name
			}
		}
		return template{name: name, pos: a.Pos()}
	}
	return template{pos: orig.Pos()}
}

// declared reports whether a field of an image is declared by a template: some
// conjunct of it is written in the stdlib or in a definition of the user's files.
func (c *compiler) declared(f cue.Value) bool {
	ps := []token.Pos{f.Pos()}
	if _, args := f.Expr(); len(args) > 0 {
		for _, a := range args {
			ps = append(ps, a.Pos())
		}
	}
	return slices.ContainsFunc(ps, func(p token.Pos) bool {
		return p.IsValid() && (strings.Contains(p.Filename(), stdlibDir) || c.errs.tmpl.inDefinition(p))
	})
}

// unknownFields reports every field of image name (v: the user's value orig
// unified with #Image) that neither #Image nor its template declares: a misspelt
// parameter, which CUE would otherwise take as a field of the image's own and
// ignore. It returns their names.
func (c *compiler) unknownFields(name string, v, orig cue.Value) []string {
	var known, unknown []string
	unknownPos := map[string]token.Pos{}
	it, err := v.Fields(cue.Optional(true))
	if err != nil {
		return nil // not a struct: Validate says so
	}
	for it.Next() {
		f := it.Selector().Unquoted()
		switch {
		case slices.Contains(imageFields, f):
		case it.Selector().ConstraintType() == cue.OptionalConstraint || c.declared(it.Value()):
			known = append(known, f)
		default:
			unknown = append(unknown, f)
			unknownPos[f] = c.userPos(it.Value(), orig)
		}
	}
	t := templateOf(orig)
	for _, f := range unknown {
		msg := fmt.Sprintf("images.%s.%s: an image has no field %s (fields: %s; a template adds parameters)", name, f, f, strings.Join(imageFields, ", "))
		if t.name != "" {
			msg = fmt.Sprintf("images.%s.%s: %s has no parameter %s (parameters: %s; and an image's %s)", name, f, t.name, f,
				orNone(known), strings.Join(imageFields, ", "))
		}
		if near := closest(f, append(known, imageFields...)); near != "" {
			msg += fmt.Sprintf("; did you mean %s?", near)
		}
		c.errs.addf(unknownPos[f], "%s", msg)
	}
	return unknown
}

// unsetParams reports every parameter of image name's template that is left
// unset, at the line that applies the template, and returns whether there was
// one: what a template makes of an unset parameter (a disk without a size, an
// interpolation of nothing) says nothing more.
func (c *compiler) unsetParams(name string, v, orig cue.Value) bool {
	err := v.Validate(cue.Concrete(true))
	var params []string
	want := map[string]string{}
	for _, e := range errors.Errors(err) {
		p := e.Path()
		format, args := e.Msg()
		if len(p) < 3 || slices.Contains(imageFields, p[2]) || !strings.HasPrefix(format, "incomplete value") {
			continue
		}
		// A list parameter (then) holds steps: they are checked as steps.
		if len(p) > 3 && v.LookupPath(cue.MakePath(cue.Str(p[2]))).IncompleteKind() == cue.ListKind {
			continue
		}
		param := strings.Join(p[2:], ".")
		if _, ok := want[param]; !ok {
			params = append(params, param)
			want[param] = describeIncomplete(args)
		}
	}
	t := templateOf(orig)
	of := ""
	if t.name != "" {
		of = " of " + t.name
	}
	for _, p := range params {
		c.errs.addf(t.pos, "images.%s: parameter %s%s is not set: want %s", name, p, of, want[p])
	}
	return len(params) > 0
}

// describeIncomplete says what an incomplete value's type asks for.
func describeIncomplete(args []any) string {
	if len(args) == 0 {
		return "a value"
	}
	s := fmt.Sprint(args[0])
	if strings.Contains(s, sizeBound) {
		return "a size, such as \"4GiB\""
	}
	return describeBound(s)
}

func orNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// closest returns the name among names a misspelling of s most likely means, or "".
func closest(s string, names []string) string {
	best, bestD := "", len(s)/2+1 // more edits than half the name is another name
	for _, n := range names {
		d := editDistance(s, n)
		if len(n) >= 3 && (strings.HasPrefix(s, n) || strings.HasPrefix(n, s)) {
			d = 1 // efi_size for efi
		}
		if d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
