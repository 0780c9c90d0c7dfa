// Package server wires one Nimbus node together: the store (embedded NATS
// JetStream), the wasm runtime, the scheduler, the gateway and the control
// plane API, and it owns their lifetimes. `nimbus up` is a thin shell over
// Start; tests start servers in process the same way.
//
// It also holds the deploy orchestration, because it needs all the parts:
// a deploy loads (compiles and validates) every module first, so a broken
// one is rejected before anything changes, then records the revision in the
// registry, then activates it in the scheduler and the gateway.
package server
