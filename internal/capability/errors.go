package capability

import (
	"errors"
	"fmt"
	"net/netip"
)

// Errors the services return, wrapped with what failed and, where there is
// one, the cause (errors.Is matches both). Every error a service returns
// matches exactly one of them; an adapter maps them to its own status codes
// by type (the wasm ABI: sdk/go/wire's codes).
var (
	// ErrDenied: the caller is not granted what the call needs (a
	// *DeniedError), or nothing can grant it (the dead-letter topic).
	ErrDenied = errors.New("capability denied")
	// ErrBadArgument: an argument is malformed (a bucket or topic name, a
	// key, a TTL, an event, a log level).
	ErrBadArgument = errors.New("bad argument")
	// ErrTooLarge: a value or an event is over its limit.
	ErrTooLarge = errors.New("too large")
	// ErrUnavailable: the service cannot answer now: it has no backend in
	// this process, the context ended, or the backend failed (then the
	// failure is logged).
	ErrUnavailable = errors.New("service unavailable")
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("key not found")
	// ErrRevisionMismatch: a compare-and-swap failed (a
	// *RevisionMismatchError).
	ErrRevisionMismatch = errors.New("revision mismatch")
	// ErrNoBucket: the app has no bucket of that name.
	ErrNoBucket = errors.New("no such bucket")
	// ErrNoTopic: the app has no topic of that name.
	ErrNoTopic = errors.New("no such topic")
	// ErrBlocked: an outbound request's destination resolves to an address
	// the network guard refuses (loopback, private, link-local, ...; a
	// *BlockedError), whatever the function is granted.
	ErrBlocked = errors.New("destination blocked by the network guard")
	// ErrTimeout: an outbound request did not complete within its timeout.
	ErrTimeout = errors.New("timed out")
)

// BlockedError is a connection the network guard refused. It matches
// ErrBlocked. Its message names the host and the class of address, not
// the address: a function must not learn the node's internal network from
// its errors (the node's log has the address).
type BlockedError struct {
	// Host is the host as the request named it.
	Host string
	// Addr is the address refused.
	Addr netip.AddrPort
	// Reason is the class of address ("loopback", "private (RFC 1918)", ...).
	Reason string
}

func (e *BlockedError) Error() string {
	if e.Reason == reasonOwn {
		return fmt.Sprintf("connection to %s refused: it is an address this Nimbus node listens on; call other functions through events or publish", e.Host)
	}
	return fmt.Sprintf("connection to %s refused: it resolves to a %s address, which functions may not reach (an operator may allow a range with --egress-allow-cidr)", e.Host, e.Reason)
}

// Is makes a BlockedError match ErrBlocked.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// DeniedError is a call its caller is not granted. It matches ErrDenied.
// Its message names the grant to add in nimbus.yaml.
type DeniedError struct {
	// Op is the operation, named as its host function ("kv_put").
	Op string
	// Function is the calling function ("" outside an invocation).
	Function string
	// Need is the grant that would allow the call.
	Need Grant
	// ReadOnly is set when the function holds the read-only form of a
	// write grant it needs.
	ReadOnly bool
}

func (e *DeniedError) Error() string {
	note := ""
	if e.ReadOnly {
		ro := e.Need
		ro.Access = AccessRead
		note = fmt.Sprintf(" (it has %q, which is read-only)", ro.String())
	}
	return fmt.Sprintf("nimbus.%s denied: capability %q is not granted to function %q%s; add `capabilities: [%s]` to the function in nimbus.yaml",
		e.Op, e.Need.String(), e.Function, note, e.Need.String())
}

// Is makes a DeniedError match ErrDenied.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// RevisionMismatchError is a compare-and-swap that failed because the key
// is at another revision. It matches ErrRevisionMismatch.
type RevisionMismatchError struct {
	// Current is the key's revision (0: the key does not exist).
	Current uint64
	// Err is the store's error.
	Err error
}

func (e *RevisionMismatchError) Error() string {
	return fmt.Sprintf("revision mismatch: the key is at revision %d", e.Current)
}

// Is makes a RevisionMismatchError match ErrRevisionMismatch.
func (e *RevisionMismatchError) Is(target error) bool { return target == ErrRevisionMismatch }

func (e *RevisionMismatchError) Unwrap() error { return e.Err }

// fail returns an error for op that matches kind and, when cause is not
// nil, cause.
func fail(op string, kind, cause error) error {
	if cause == nil {
		return fmt.Errorf("%s: %w", op, kind)
	}
	return fmt.Errorf("%s: %w: %w", op, kind, cause)
}
