// Package wasmrw rewrites WebAssembly binaries at load time, before wazero
// compiles them. It does two things, both optional:
//
//   - Interruption (Options.Interrupt): it adds one imported function and one
//     mutable i32 global (the fuel counter), and inserts at every loop header,
//     and at the entry of every function whose body does not begin with a
//     loop, code that decrements the counter and, when it reaches zero, calls
//     the import and stores its result as the new counter. The host's import
//     checks the invocation's deadline and aborts the call when it has
//     passed; its exit to Go also gives the Go scheduler and garbage
//     collector a safepoint. Every execution path that runs for long passes a
//     loop header or a function entry, so a guest is stopped within a bounded
//     number of instructions of the check failing, without wazero's
//     WithCloseOnContextDone, whose exit to Go at every loop header costs Go
//     guests (whose compiler turns every branch into a loop) a large factor.
//   - Data segment merging (Options.MergeDataGap): adjacent active data
//     segments of memory 0 with constant offsets are merged, gaps filled with
//     zeros, so instantiation applies tens of segments rather than the tens of
//     thousands Go's linker emits (one per run of 8 zero bytes).
//
// Adding an imported function shifts the index of every defined function by
// one; the rewriter renumbers every reference: call, return_call and
// ref.func instructions in code and constant expressions, exports, the start
// function, element segments and the "name" custom section. The instruction
// decoder knows the immediates of every opcode of WebAssembly 2.0, the 0xFC
// (saturating truncation, bulk memory, tables), 0xFD (SIMD) and 0xFE
// (threads) prefixes and tail calls; an unknown opcode is an error, never a
// guess.
//
// The output is a deterministic function of the input and the options, so
// a compilation cache keyed by module hash keeps working: it holds the
// rewritten modules.
package wasmrw
