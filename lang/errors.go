package lang

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"cuelang.org/go/cue/errors"
	"cuelang.org/go/cue/token"
)

// Error is one problem in a build repository, at a position of the user's text.
type Error struct {
	Pos string // file:line:col, the file relative to the repository; "" if unknown
	Msg string
}

func (e Error) Error() string {
	if e.Pos == "" {
		return e.Msg
	}
	return e.Pos + ": " + e.Msg
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
// template points at the user's line.
func (l *errorList) addCUE(err error, fallback token.Pos) {
	list := errors.Errors(err)
	for i := 0; i < len(list); i++ {
		e := list[i]
		format, args := e.Msg()
		msg := fmt.Sprintf(format, args...)
		path := strings.Join(e.Path(), ".")
		p := l.userPos(append([]token.Pos{e.Position()}, errors.Positions(e)...), fallback)
		// CUE reports a value outside an enumeration as an "empty disjunction"
		// followed by one conflict per alternative; say it once, as a user would.
		if strings.Contains(msg, "empty disjunction") {
			var pairs [][2]string
			for i+1 < len(list) && strings.Join(list[i+1].Path(), ".") == path {
				f, a := list[i+1].Msg()
				if !strings.HasPrefix(f, "conflicting values %s and %s") || len(a) < 2 {
					break
				}
				i++
				pairs = append(pairs, [2]string{fmt.Sprint(a[0]), fmt.Sprint(a[1])})
				p = l.userPos(append([]token.Pos{list[i].Position()}, errors.Positions(list[i])...), p)
			}
			if m := disjunctionMsg(path, pairs); m != "" {
				msg = m
			}
		}
		if path != "" {
			msg = path + ": " + msg
		}
		l.errs = append(l.errs, Error{Pos: l.pos(p), Msg: msg})
	}
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

// disjunctionMsg says which value matched none of the alternatives: the one value
// that every conflict names.
func disjunctionMsg(path string, pairs [][2]string) string {
	if len(pairs) == 0 {
		return ""
	}
	// The user's value is the one every conflict names.
	count := map[string]int{}
	for _, pr := range pairs {
		count[pr[0]]++
		if pr[1] != pr[0] {
			count[pr[1]]++
		}
	}
	value := pairs[0][1]
	if len(pairs) > 1 && count[pairs[0][0]] == len(pairs) {
		value = pairs[0][0]
	}
	var alts []string
	for _, pr := range pairs {
		alt := pr[0]
		if alt == value {
			alt = pr[1]
		}
		if strings.HasPrefix(alt, "=~") || alt == "int" {
			last := path[strings.LastIndexByte(path, '.')+1:]
			if last == "size" || last == "offset" || strings.HasPrefix(path, "disks") {
				return fmt.Sprintf("%s is not a size: want a number of bytes or a string such as \"2GiB\"", value)
			}
		}
		alts = append(alts, alt)
	}
	return fmt.Sprintf("%s is not one of %s", value, strings.Join(alts, ", "))
}
