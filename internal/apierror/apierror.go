// Package apierror is how every Nimbus HTTP surface (gateway and control
// plane API) reports a failure: a stable machine-readable code, an HTTP
// status, and a message that says what was wrong and how to fix it.
//
// Errors are mapped to HTTP in one place, here, at the edge; packages below
// return ordinary wrapped errors.
package apierror

import (
	"encoding/json"
	"errors"
	"net/http"
)

// Error is an API error.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Details carries structured extras (for example every manifest error).
	Details any   `json:"details,omitempty"`
	Err     error `json:"-"`
}

func (e *Error) Error() string { return e.Message }
func (e *Error) Unwrap() error { return e.Err }

// New makes an Error.
func New(status int, code, message string) *Error {
	return &Error{Status: status, Code: code, Message: message}
}

// Wrap makes an Error whose message is err's.
func Wrap(status int, code string, err error) *Error {
	return &Error{Status: status, Code: code, Message: err.Error(), Err: err}
}

// Header is set, to the error code, on every error answered by the platform
// rather than by a function, so clients can tell the two apart.
const Header = "X-Nimbus-Error"

// Body is the JSON envelope of an error response: {"error": {...}}.
type Body struct {
	Error *Error `json:"error"`
}

// Write sends err as a JSON error response. An error that is not an *Error
// becomes a 500 with code "internal".
func Write(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Status: http.StatusInternalServerError, Code: "internal", Message: err.Error(), Err: err}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Marks the answer as the platform's, not a function's own error body.
	w.Header().Set(Header, e.Code)
	w.WriteHeader(e.Status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(Body{Error: e})
}
