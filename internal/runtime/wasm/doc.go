// Package wasm is the WebAssembly runtime of Nimbus, on wazero.
package wasm
