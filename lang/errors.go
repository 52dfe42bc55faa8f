package lang

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
)

// Error is one problem in a build repository, at a position of the user's text.
type Error struct {
	Pos string // file:line:col, the file relative to the repository; "" if unknown
	Msg string
	// See lists the other places of the user's text the error involves (the
	// template field a value conflicts with, the line that applies the template),
	// as "file:line:col, file:line:col"; "" if none.
	See string
}

func (e Error) Error() string {
	msg := e.Msg
	if e.See != "" {
		msg += " (see " + e.See + ")"
	}
	if e.Pos == "" {
		return msg
	}
	return e.Pos + ": " + msg
}

// Errors is every problem found; a repository with any compiles to nothing.
type Errors []Error

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// errorList collects errors with positions made relative to the repository.
type errorList struct {
	dir  string
	tmpl templates // where the user's files define and use templates
	errs Errors
}

func (l *errorList) pos(p token.Pos) string {
	if !p.IsValid() {
		return ""
	}
	file := p.Filename()
	if rel, err := filepath.Rel(l.dir, file); err == nil && !strings.HasPrefix(rel, "..") {
		file = rel
	}
	return fmt.Sprintf("%s:%d:%d", filepath.ToSlash(file), p.Line(), p.Column())
}

func (l *errorList) addf(p token.Pos, format string, args ...any) {
	l.errs = append(l.errs, Error{Pos: l.pos(p), Msg: fmt.Sprintf(format, args...)})
}

// addCUE adds every error of a CUE evaluation, each at the first of its positions
// that lies in the user's files, so that an error in a value built from a stdlib
// template points at the user's line. The errors of one empty disjunction (a value
// that is none of a field's alternatives) become one line.
func (l *errorList) addCUE(err error, fallback token.Pos) {
	var group []errors.Error // errors of one path and position, in a row
	flush := func() {
		if len(group) > 0 {
			pos := l.cuePos(group[0], fallback)
			var see []string
			for _, e := range group {
				for _, p := range l.userPositions(e) {
					if s := l.pos(p); p != pos && !slices.Contains(see, s) {
						see = append(see, s)
					}
				}
			}
			sort.Slice(see, func(i, j int) bool { return posLess(see[i], see[j]) })
			l.errs = append(l.errs, Error{Pos: l.pos(pos), Msg: condense(group), See: strings.Join(see, ", ")})
			group = nil
		}
	}
	all := errors.Errors(err)
	// "error in call to list.Concat" follows from an error in the call's arguments
	// (a template's parameter); it says nothing more when that error is reported.
	consequence := func(e errors.Error) bool {
		format, _ := e.Msg()
		return strings.HasPrefix(format, "error in call to ")
	}
	causes := slices.ContainsFunc(all, func(e errors.Error) bool { return !consequence(e) })
	for _, e := range all {
		if format, _ := e.Msg(); strings.HasSuffix(format, "errors in empty disjunction:") || causes && consequence(e) {
			continue // a disjunction's alternatives follow, one error each
		}
		if len(group) > 0 && (!slices.Equal(e.Path(), group[0].Path()) || l.cuePos(e, fallback) != l.cuePos(group[0], fallback)) {
			flush()
		}
		group = append(group, e)
	}
	flush()
}

// dropErrors returns err without the errors drop reports, nil if none is left.
func dropErrors(err error, drop func(errors.Error) bool) error {
	var out errors.Error
	for _, e := range errors.Errors(err) {
		if !drop(e) {
			out = errors.Append(out, e)
		}
	}
	if out == nil {
		return nil
	}
	return out
}

// cuePos returns where an error is: of its positions in the user's files, the
// first that is neither in a template nor a use of one (in a value built from a
// template, the user's value: the entry of a comprehension, not the template it
// fills), else the first outside templates, else the first, else fallback.
func (l *errorList) cuePos(e errors.Error, fallback token.Pos) token.Pos {
	ps := l.userPositions(e)
	for _, p := range ps {
		if !l.tmpl.inDefinition(p) && !slices.Contains(l.tmpl.uses, p) {
			return p
		}
	}
	for _, p := range ps {
		if !l.tmpl.inDefinition(p) {
			return p
		}
	}
	return l.userPos(ps, fallback)
}

// userPositions returns the positions of e in the user's files, without repeats.
func (l *errorList) userPositions(e errors.Error) []token.Pos {
	var out []token.Pos
	for _, p := range append([]token.Pos{e.Position()}, errors.Positions(e)...) {
		if p.IsValid() && !strings.Contains(p.Filename(), stdlibDir) && !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// condense renders the errors of one path and position. Conflicts of one value with
// several alternatives read "fs: "ext9" is none of "ext2", "ext3", ..."; a value out of
// a known pattern's bound says what the pattern means.
func condense(group []errors.Error) string {
	prefix := ""
	if p := group[0].Path(); len(p) > 0 {
		prefix = strings.Join(p, ".") + ": "
	}
	msgs := make([]string, len(group))
	var pairs [][2]string // the two sides of each conflict
	for i, e := range group {
		format, args := e.Msg()
		msgs[i] = fmt.Sprintf(format, args...)
		if strings.Contains(msgs[i], "%!") || msgs[i] == "" {
			// A wrapped error (a module file's) keeps its text in Error only.
			msgs[i] = strings.TrimPrefix(e.Error(), prefix)
		}
		if (strings.HasPrefix(format, "conflicting values %s and %s") || strings.HasPrefix(format, "invalid value %v (out of bound %s)")) && len(args) >= 2 {
			pairs = append(pairs, [2]string{fmt.Sprint(args[0]), describeBound(fmt.Sprint(args[1]))})
		}
	}
	if format, args := group[0].Msg(); len(group) == 1 && strings.HasPrefix(format, "conflicting values %s and %s (mismatched types %s and %s)") && len(args) == 4 {
		// One side is the user's value, the other the schema's: a type, a
		// definition or a struct of the stdlib.
		user, want := 0, 1
		if schemaLike(fmt.Sprint(args[0])) && !schemaLike(fmt.Sprint(args[1])) {
			user, want = 1, 0
		}
		return fmt.Sprintf("%s%v is of type %v, want %v", prefix, args[user], args[2+user], args[2+want])
	}
	if format, _ := group[0].Msg(); len(group) == 1 && format == "field not allowed" {
		if why := notAllowed(group[0].Path()); why != "" {
			return prefix + why
		}
	}
	if len(pairs) == 1 && len(group) == 1 && strings.HasPrefix(msgs[0], "invalid value") {
		return fmt.Sprintf("%s%s is not %s", prefix, pairs[0][0], pairs[0][1])
	}
	if len(pairs) == len(group) && len(group) > 1 {
		// The value is the side every conflict shares.
		value := pairs[0][0]
		if pairs[1][0] != value && pairs[1][1] != value {
			value = pairs[0][1]
		}
		var alts []string
		for _, p := range pairs {
			alt := p[1]
			if alt == value {
				alt = describeBound(p[0])
			}
			if p[0] != value && p[1] != value {
				return prefix + strings.Join(msgs, "; ")
			}
			if !slices.Contains(alts, alt) {
				alts = append(alts, alt)
			}
		}
		if slices.Contains(alts, bounds[sizeBound]) {
			return fmt.Sprintf("%s%s is not a size: a number of bytes, or digits and KiB, MiB, GiB or TiB, such as \"512MiB\"", prefix, value)
		}
		return fmt.Sprintf("%s%s is none of: %s", prefix, value, strings.Join(alts, ", "))
	}
	return prefix + strings.Join(msgs, "; ")
}

// notAllowed says why a field at path p may not be: the rule it breaks.
func notAllowed(p []string) string {
	switch {
	case len(p) == 4 && p[0] == "images" && p[2] == "disks":
		return fmt.Sprintf("%q is not %s", p[3], bounds[`=~"^[a-z][a-z0-9_-]*$"`])
	case len(p) == 3 && p[0] == "images":
		return fmt.Sprintf("field not allowed: the stdlib's templates are closed; a template adds parameters to one "+
			"by embedding it ({vmb.#GPTDisk, %s: ...}), not with &", p[2])
	}
	return ""
}

func schemaLike(v string) bool {
	return strings.Contains(v, "#") || strings.HasPrefix(v, "{") || v == "int" || v == "string" || v == "bool"
}

const sizeBound = `=~"^[0-9]+(KiB|MiB|GiB|TiB)?$"` // #Size's pattern in the stdlib

// bounds names the stdlib's patterns for messages.
var bounds = map[string]string{
	`=~"^[0-9]+(KiB|MiB|GiB|TiB)?$"`:          `a size (digits and an optional KiB, MiB, GiB or TiB, such as "512MiB")`,
	`=~"^[a-z][a-z0-9_-]*(:[0-9]+)?(:/.*)?$"`: `a place ("disk", "disk:N" or "disk:N:/path")`,
	`=~"^[a-z][a-z0-9_-]*(:[0-9]+)?$"`:        `a disk or partition ("disk" or "disk:N")`,
	`=~"^[a-z][a-z0-9_-]*(:[0-9]+)?:/.*$"`:    `a path on a disk ("disk:N:/path" or "disk:/path")`,
	`=~"^[a-z][a-z0-9_-]*$"`:                  `a disk name (a lower-case letter, then lower-case letters, digits, - or _)`,
	`=~"^[0-7]{3,4}$"`:                        `an octal mode such as "0644"`,
	`=~"^(sha256|blake3):[0-9a-f]{64}$"`:      `a digest: want "sha256:<64 hex>" or "blake3:<64 hex>" (lower-case hex)`,
	`=~"^https?://"`:                          `an http or https URL`,
	`=~"^[0-9]+:[0-9]+$"`:                     `an owner "UID:GID" in numbers, such as "0:0"`,
}

func describeBound(b string) string {
	if d, ok := bounds[b]; ok {
		return d
	}
	return b
}

// userPos returns the first valid position outside the stdlib, else fallback.
func (l *errorList) userPos(ps []token.Pos, fallback token.Pos) token.Pos {
	for _, p := range ps {
		if p.IsValid() && !strings.Contains(p.Filename(), stdlibDir) {
			return p
		}
	}
	return fallback
}

func (l *errorList) err() error {
	if len(l.errs) == 0 {
		return nil
	}
	// One error per position and message, in file order.
	seen := map[Error]bool{}
	var out Errors
	for _, e := range l.errs {
		if !seen[e] {
			seen[e] = true
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return posLess(out[i].Pos, out[j].Pos) })
	return out
}

// posLess orders "file:line:col" positions by file, then line and column as numbers.
func posLess(a, b string) bool {
	fa, la, ca := splitPos(a)
	fb, lb, cb := splitPos(b)
	if fa != fb {
		return fa < fb
	}
	if la != lb {
		return la < lb
	}
	return ca < cb
}

func splitPos(p string) (file string, line, col int) {
	parts := strings.Split(p, ":")
	if len(parts) < 3 {
		return p, 0, 0
	}
	fmt.Sscan(parts[len(parts)-2], &line)
	fmt.Sscan(parts[len(parts)-1], &col)
	return strings.Join(parts[:len(parts)-2], ":"), line, col
}
