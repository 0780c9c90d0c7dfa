// Package server wires one Nimbus node together: the store (embedded NATS
// JetStream), the wasm runtime, the scheduler, the gateway and the control
// plane API, and it owns their lifetimes. `nimbus up` is a thin shell over
// Start; tests start servers in process the same way.
//
// It holds no domain rules: it is wiring over an ordered list of components
// (component.go: buckets, scheduler, active set, gateway, dispatcher, cron,
// bucket triggers) that a revision is provisioned into and retired from. A
// deploy asks every component to Validate the planned revision (a broken
// module, an unknown runtime, a conflicting route, a bad schedule refuse it
// before anything changes), records it in the registry, then Provisions it
// into each component in order. A restart Provisions every stored app and
// logs, rather than fails on, an app a component refuses.
package server
