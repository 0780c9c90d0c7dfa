// Package policy is the operator's governance of what tenants deploy and
// use: rules checked on every deploy and rollback, written in CEL (the
// Common Expression Language, the one Kubernetes admission policies use),
// and per-tenant quotas (apps, functions, key-value bytes, requests per
// second).
//
// The operator writes both in one file given to `nimbus up --policy
// FILE` (Load). A rule is a name, a boolean CEL expression over the
// revision being deployed, and a message; a deploy is refused when any
// rule is false (a *DeniedError naming every rule it broke, with its
// message). The expression sees the variables app, tenant, functions,
// topics and buckets (Input, docs/security.md); field names are checked
// when the file is loaded, so a typo refuses the node's start with the
// file, line and column rather than every deploy later.
//
// Guarantees: a Policy is immutable after Load and safe for concurrent
// use; evaluation is bounded (CostLimit) and has no side effects; a rule
// that cannot be evaluated refuses the deploy (fails closed). What is
// already running is not re-checked when the policy changes: rules gate
// changes, not restarts.
//
// The package sits beside the wiring: it imports the model and the
// capability grammar (to expose http grants as hosts), and the server
// calls it from its deploy path and its quota checks; `nimbus validate
// --policy` calls it offline.
package policy
