package manifest

import (
	"fmt"
	"sort"
	"strings"
)

// maxErrors caps how many errors one Parse reports; past it, a last entry says
// how many more there were. A manifest with more problems than this is better
// fixed from the top.
const maxErrors = 20

// Position is a place in a manifest file. Line and Col are 1-based; Col is 0
// when only the line is known (YAML syntax errors).
type Position struct {
	// File is the manifest's name as shown to users: the path relative to the
	// current directory when the file is below it, else the absolute path
	// (Load), or the name given to Parse.
	File string
	Line int
	Col  int
}

// String formats the position as file:line:col (file:line without a column).
func (p Position) String() string {
	switch {
	case p.Line == 0:
		return p.File
	case p.Col == 0:
		return fmt.Sprintf("%s:%d", p.File, p.Line)
	default:
		return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
	}
}

// FieldError is one problem in a manifest.
type FieldError struct {
	Pos Position
	// Field is the path of the field, such as functions.hello.memory or
	// functions.hello.routes[0]; empty for problems with the file itself
	// (YAML syntax).
	Field string
	// Msg says what is wrong and how to fix it.
	Msg string
}

// Error formats the error as "file:line:col: field: message".
func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Pos.String() + ": " + e.Msg
	}
	return e.Pos.String() + ": " + e.Field + ": " + e.Msg
}

// Errors is every problem found in one manifest, sorted by position. Parse
// and Load return it (as error) when a manifest is not valid; use errors.As to
// get at the individual FieldErrors.
type Errors []*FieldError

// Error joins the errors, one per line.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Unwrap returns the individual errors, so errors.As(err, &fieldErr) finds the
// first one.
func (es Errors) Unwrap() []error {
	out := make([]error, len(es))
	for i, e := range es {
		out[i] = e
	}
	return out
}

// finish sorts errs by position and caps their number. It returns nil when
// there are none.
func finish(errs []*FieldError) error {
	if len(errs) == 0 {
		return nil
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i].Pos, errs[j].Pos
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	if len(errs) > maxErrors {
		more := len(errs) - maxErrors
		last := errs[maxErrors]
		errs = append(errs[:maxErrors:maxErrors], &FieldError{
			Pos: last.Pos,
			Msg: fmt.Sprintf("too many errors: %d more not shown; fix the ones above first", more),
		})
	}
	return Errors(errs)
}

// suggest returns the candidate closest to s when it is close enough to be a
// likely typo, or "".
func suggest(s string, candidates []string) string {
	best, bestD := "", 1<<30
	ls := strings.ToLower(strings.ReplaceAll(s, "-", "_"))
	for _, c := range candidates {
		d := editDistance(ls, c)
		if d < bestD {
			best, bestD = c, d
		}
	}
	// Allow one edit for short names, two for longer ones, and never more
	// than a third of the word: "meory" -> memory, but "env" is no typo of "dir".
	limit := 1
	if len(s) >= 5 {
		limit = 2
	}
	if bestD <= limit && bestD*3 <= len(s)+1 {
		return best
	}
	return ""
}

// editDistance is the optimal string alignment distance (Levenshtein plus
// transposition of adjacent characters) between a and b.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 1 << 20 // not a typo of any field name; keep the cost bounded
	}
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
