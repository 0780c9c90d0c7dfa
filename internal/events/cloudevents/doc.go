// Package cloudevents is the CloudEvents 1.0 envelope of Nimbus events: the
// Event type, its validation, the JSON event format (single and batch) and
// the HTTP protocol binding in its three content modes (binary, structured,
// batched), written to CloudEvents 1.0.2.
//
// Where it sits: the gateway's event ingress calls ReadRequest on every
// publish, then hands the events to internal/events, which appends them to
// the topic's stream (in the JSON event format, AppendJSON) and later
// delivers them to trigger functions with WriteRequest (binary mode). It
// depends on the standard library only.
//
//	client -> gateway (ReadRequest) -> events (AppendJSON, JetStream)
//	       -> trigger -> scheduler -> runtime (WriteRequest: ce-* headers, body = data)
//
// Guarantees:
//   - Every event ReadRequest or UnmarshalJSON returns has passed Validate:
//     specversion "1.0", non-empty id, source and type, well-formed URIs,
//     media type, RFC 3339 time, extension names of lower-case letters and
//     digits, strings free of control characters.
//   - A rejected request gets one error naming the attribute (and, in a
//     batch, the event's index) and how to fix it, for example
//     `cloudevents: event 3: attribute "id": missing: ...`. Typed errors let
//     the HTTP edge answer 413 (*TooLargeError), 415 (ErrUnsupportedFormat)
//     or 400 (*MalformedError).
//   - Memory is bounded by Limits, not by what a request claims: the body is
//     read up to the limit, and parsing allocates a small constant factor of
//     the bytes actually received. JSON nesting is capped at 10,000 levels,
//     extensions per event (64), events per batch (10,000).
//   - The JSON format round-trips: AppendJSON then UnmarshalJSON gives back
//     an equal event (JSON data is kept as its JSON text, without
//     surrounding white space).
//
// Interoperability is tested against the official CloudEvents Go SDK
// (github.com/cloudevents/sdk-go/v2) in both directions. Where the SDK
// departs from the binding, this package accepts what the SDK sends: sdk-go
// does not percent-encode header values, so a '%' that does not start a
// %XX escape is read literally; it does not percent-decode either, so
// values written by WriteRequest that needed encoding (space, '"', '%',
// non-ASCII) reach an sdk-go reader still encoded.
//
// Extension names longer than the 20 characters the spec recommends (a
// SHOULD) are accepted, because sdk-go sends them.
package cloudevents
