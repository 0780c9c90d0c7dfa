// Package manifest reads and validates nimbus.yaml, the file that declares an
// app: its name, its event topics and key-value buckets, and its functions,
// each with a runtime, a module (the built artifact), an optional build
// command, limits, environment, capabilities (log, kv:<bucket>[:read],
// publish:<topic>; see capability.Parse), HTTP routes, triggers (a topic, a
// cron schedule or a bucket's changes, with retries and a dead-letter topic)
// and flow control (concurrency, per-key limits, rate, debounce, priority).
//
// It sits at the very start of a deploy:
//
//	nimbus.yaml -> manifest.Load -> build.Build -> upload -> model.Function
//	                                                         (+ model.Topic, model.Bucket)
//
// Guarantees:
//   - Validation happens once, here. A *Manifest returned without error is
//     complete: every default is filled in, every value is in range, module
//     paths are absolute and stay inside the manifest's directory, and the
//     app's routes are valid net/http ServeMux patterns that do not conflict,
//     every topic and bucket a trigger or capability names is declared, cron
//     schedules and time zones parse (with package cron), and trigger names
//     are unique per function. An app with any topic or trigger has the
//     dead-letter topic, declared or not.
//     Code downstream trusts it.
//   - Every error names the file, line and column and the field path
//     (functions.hello.memory), says what is wrong and how to fix it. All
//     errors are reported at once (up to a cap), sorted by position, as
//     Errors.
//   - Parsing never panics on any input (FuzzParse).
//
// The format is documented in docs/manifest.md and described by the JSON
// Schema in docs/manifest.schema.json; tests keep the schema and this parser
// in agreement.
package manifest
