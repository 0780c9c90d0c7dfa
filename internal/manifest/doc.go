// Package manifest reads and validates nimbus.yaml, the file that declares an
// app: its name and its functions, each with a runtime, a module (the built
// artifact), an optional build command, limits, environment, capabilities and
// HTTP routes.
//
// It sits at the very start of a deploy:
//
//	nimbus.yaml -> manifest.Load -> build.Build -> upload -> registry.Function
//
// Guarantees:
//   - Validation happens once, here. A *Manifest returned without error is
//     complete: every default is filled in, every value is in range, module
//     paths are absolute and stay inside the manifest's directory, and the
//     app's routes are valid net/http ServeMux patterns that do not conflict.
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
