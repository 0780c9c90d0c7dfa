// Package registry holds the catalogue of apps and their revisions: what is
// deployed, which revision takes traffic, and the history that rollback walks.
//
// A revision is immutable and content-addressed: its id is the sha256 of the
// canonical JSON of its functions, each of which names its module by sha256.
// Deploying the same app twice yields the same id, which is how a no-op
// deploy is detected. Records live in a JetStream KV bucket (see package
// store); writes use compare-and-set on the bucket revision so two deploys of
// one app cannot interleave.
package registry
