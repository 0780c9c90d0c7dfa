package model

import (
	"fmt"
	"slices"
	"strings"
)

// Runtime names (Function.Runtime).
const (
	// RuntimeWasm runs WebAssembly (WASI preview 1) modules on wazero. It is
	// the default.
	RuntimeWasm = "wasm"
	// RuntimeProcess is reserved for executables run as long-lived workers
	// (DESIGN.md, Runtimes). No node runs it yet, so it is not in Runtimes
	// and a function naming it is refused.
	RuntimeProcess = "process"
)

// Runtimes are the runtime names a function may give, the default first.
// It is the one list the manifest parser and revision validation share;
// a node runs some of them (its scheduler's runtime.Set) and refuses at
// deploy a function whose runtime it does not run.
func Runtimes() []string { return []string{RuntimeWasm} }

// reservedRuntimes are names kept for runtimes still to come.
var reservedRuntimes = []string{RuntimeProcess}

// CheckRuntime fails when name is not one of Runtimes, with a message
// that says which are.
func CheckRuntime(name string) error {
	known := Runtimes()
	if slices.Contains(known, name) {
		return nil
	}
	if slices.Contains(reservedRuntimes, name) {
		if len(known) == 1 {
			return fmt.Errorf("runtime %q is not available yet: only %q is", name, known[0])
		}
		return fmt.Errorf("runtime %q is not available yet: use one of %s", name, quoteList(known))
	}
	if len(known) == 1 {
		return fmt.Errorf("unknown runtime %q: only %q is available", name, known[0])
	}
	return fmt.Errorf("unknown runtime %q: use one of %s", name, quoteList(known))
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
