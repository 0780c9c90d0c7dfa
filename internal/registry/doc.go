// Package registry is the catalogue of apps and their revisions in a
// JetStream KV bucket: what is deployed, which revision takes traffic, and
// the history that rollback walks. The revision itself (functions, routes,
// triggers, topics, buckets) is package model's; registry only stores it.
//
// A revision is immutable and content-addressed (model.Plan): deploying the
// same app twice yields the same id, which is how a no-op deploy is
// detected. Writes to an app's head use compare-and-set on the bucket
// revision, so two deploys of one app cannot interleave.
package registry
