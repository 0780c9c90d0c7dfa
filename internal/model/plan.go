package model

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Errors of the model. Callers branch on them with errors.Is; the edge (the
// gateway and the API) maps them to HTTP.
var (
	// ErrConflict means a route of the deploy overlaps a route that is
	// already taking traffic; the error is a *ConflictError with the details.
	ErrConflict = errors.New("route conflict")

	// ErrInvalid means the deploy or lookup request is malformed (a bad name,
	// no functions, an invalid route, an ambiguous revision prefix); the
	// message says what to fix.
	ErrInvalid = errors.New("invalid request")
)

// ConflictError is a route of the deploy (App, Function, Route) that
// overlaps a route already taking traffic (OtherApp, OtherFunction,
// OtherRoute), or another route of the same deploy. It matches ErrConflict.
type ConflictError struct {
	App           string
	Function      string
	Route         Route
	OtherApp      string
	OtherFunction string
	OtherRoute    Route
	// Reason is net/http's explanation of the overlap.
	Reason string
}

func (e *ConflictError) Error() string {
	msg := fmt.Sprintf("route %q of function %s (app %s) conflicts with route %q of function %s (app %s)",
		e.Route.Pattern(), e.Function, e.App, e.OtherRoute.Pattern(), e.OtherFunction, e.OtherApp)
	if e.Reason != "" {
		msg += ": " + e.Reason
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrConflict) true.
func (e *ConflictError) Unwrap() error { return ErrConflict }

// PlanSpec is Plan for a whole app. Topics and buckets are sorted by name
// and become part of the revision id; an app without any keeps the id Plan
// gives its functions alone, so revisions made before topics and buckets
// existed keep their ids.
func PlanSpec(app string, spec Spec) (*Revision, error) {
	rev, err := Plan(app, spec.Functions)
	if err != nil {
		return nil, err
	}
	if len(spec.Topics) == 0 && len(spec.Buckets) == 0 {
		return rev, nil
	}
	topics := slices.Clone(spec.Topics)
	slices.SortFunc(topics, func(a, b Topic) int { return strings.Compare(a.Name, b.Name) })
	for i, t := range topics {
		if err := CheckName("topic", t.Name); err != nil {
			return nil, err
		}
		if i > 0 && topics[i-1].Name == t.Name {
			return nil, fmt.Errorf("%w: topic %s is declared twice", ErrInvalid, t.Name)
		}
	}
	buckets := slices.Clone(spec.Buckets)
	slices.SortFunc(buckets, func(a, b Bucket) int { return strings.Compare(a.Name, b.Name) })
	for i, b := range buckets {
		if err := CheckName("bucket", b.Name); err != nil {
			return nil, err
		}
		if i > 0 && buckets[i-1].Name == b.Name {
			return nil, fmt.Errorf("%w: bucket %s is declared twice", ErrInvalid, b.Name)
		}
	}
	b, err := json.Marshal(struct {
		Functions []Function `json:"functions"`
		Topics    []Topic    `json:"topics,omitempty"`
		Buckets   []Bucket   `json:"buckets,omitempty"`
	}{rev.Functions, topics, buckets})
	if err != nil {
		return nil, err
	}
	rev.ID, rev.Topics, rev.Buckets = Digest(b), topics, buckets
	return rev, nil
}

// Plan validates fns and returns the revision Deploy would store, without
// touching the store: functions in canonical form sorted by name, each with
// its Revision, and the revision ID. CreatedAt is zero. It checks neither
// that modules exist nor routes of other apps. Errors wrap ErrInvalid, or
// are a *ConflictError for two overlapping routes of this app.
//
// The function revision is the sha256 of the function's canonical JSON with
// Revision empty; the revision ID is the sha256 of the canonical JSON of the
// sorted functions including their revisions (CreatedAt is not part of it).
func Plan(app string, fns []Function) (*Revision, error) {
	if err := CheckName("app", app); err != nil {
		return nil, err
	}
	if len(fns) == 0 {
		return nil, fmt.Errorf("%w: app %s has no functions", ErrInvalid, app)
	}
	if len(fns) > maxFuncs {
		return nil, fmt.Errorf("%w: app %s has %d functions, over the limit of %d", ErrInvalid, app, len(fns), maxFuncs)
	}
	canon := make([]Function, len(fns))
	for i, f := range fns {
		c, err := canonical(f)
		if err != nil {
			return nil, err
		}
		canon[i] = c
	}
	slices.SortFunc(canon, func(a, b Function) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(canon); i++ {
		if canon[i].Name == canon[i-1].Name {
			return nil, fmt.Errorf("%w: function %s is declared twice", ErrInvalid, canon[i].Name)
		}
	}
	if err := checkOwnRoutes(app, canon); err != nil {
		return nil, err
	}
	for i := range canon {
		b, err := json.Marshal(canon[i]) // Revision is empty here
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", canon[i].Name, err)
		}
		canon[i].Revision = Digest(b)
	}
	b, err := json.Marshal(canon)
	if err != nil {
		return nil, err
	}
	return &Revision{ID: Digest(b), App: app, Functions: canon}, nil
}

// Digest is the content address of b: its sha256 in lower-case hex.
func Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// IsHex reports whether s is lower-case hexadecimal.
func IsHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
