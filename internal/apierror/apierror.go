package apierror

import (
	"encoding/json"
	"net/http"
)

// Error is an API error.
type Error struct {
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
	// Details carries structured extras (for example every manifest error).
	Details any `json:"details,omitempty"`
	// Header holds headers the answer carries besides the error code
	// (Retry-After, Nimbus-Flow); nil for none.
	Header http.Header `json:"-"`
	Err    error       `json:"-"`
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

// Write sends err as a JSON error response, as From maps it (an error it
// does not know is a 500 with code "internal").
func Write(w http.ResponseWriter, err error) {
	e := From(err)
	for k, vs := range e.Header {
		w.Header()[k] = vs
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
