// Package layers holds no code. Its test reads the import rules from the
// table in docs/dev/architecture.md ("Which package may import which") and
// fails when a package of this module imports one of ours that its row does
// not allow, or when a package has no row. The rules therefore live in one
// place, the document a newcomer reads, and cannot drift from the code.
//
// Only non-test files count: tests may import test helpers and the packages
// they drive end to end.
package layers
