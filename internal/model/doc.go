// Package model is the shared vocabulary of Nimbus: what a function, a
// route, a trigger, a flow policy, a topic and a bucket are, and what makes
// a revision valid and content-addressed.
//
// It imports nothing of ours and nothing that stores or serves, so every
// layer can speak it: the manifest parser produces a Spec, the registry
// stores the Revision that Plan makes of it, and the scheduler, gateway,
// events and host capabilities read the Function they are given. (wazero
// keeps its shared interfaces in a dependency-free api package for the same
// reason: no import cycles and no storage in a reader's path.)
//
// Validation lives here once. Plan and PlanSpec check names, limits and
// routes and return the canonical revision, whichever way it arrived (a
// manifest, the API, a test); the manifest package adds positions (file,
// line, column) to the same rules, and the registry trusts what Plan
// accepted.
package model
