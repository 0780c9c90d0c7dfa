package model

import (
	"strings"
	"testing"
)

func TestPlanSpecTopicsAndBucketsAreContentAddressed(t *testing.T) {
	fns := []Function{{Name: "f", Runtime: "wasm", Module: strings.Repeat("a", 64), MemoryBytes: 1 << 20,
		TimeoutMS: 1000, Concurrency: 1, MaxInstances: 1, MaxRequestBytes: 1, MaxResponseBytes: 1}}
	plain, err := Plan("app", fns)
	if err != nil {
		t.Fatal(err)
	}
	same, err := PlanSpec("app", Spec{Functions: fns})
	if err != nil || same.ID != plain.ID {
		t.Fatalf("an app without topics or buckets changed id: %v, %s vs %s", err, same.ID, plain.ID)
	}
	withBucket, err := PlanSpec("app", Spec{Functions: fns, Buckets: []Bucket{{Name: "counts", MaxValueBytes: 1024, History: 1}}})
	if err != nil || withBucket.ID == plain.ID || len(withBucket.Buckets) != 1 {
		t.Fatalf("a bucket did not change the revision: %v", err)
	}
	otherLimit, _ := PlanSpec("app", Spec{Functions: fns, Buckets: []Bucket{{Name: "counts", MaxValueBytes: 2048, History: 1}}})
	if otherLimit.ID == withBucket.ID {
		t.Fatal("a bucket option change kept the revision id")
	}
	// Order of declaration does not matter.
	a, _ := PlanSpec("app", Spec{Functions: fns, Topics: []Topic{{Name: "a"}, {Name: "b"}}})
	b, _ := PlanSpec("app", Spec{Functions: fns, Topics: []Topic{{Name: "b"}, {Name: "a"}}})
	if a.ID != b.ID {
		t.Fatal("topic order changed the revision id")
	}
	if _, err := PlanSpec("app", Spec{Functions: fns, Topics: []Topic{{Name: "a"}, {Name: "a"}}}); err == nil {
		t.Fatal("a duplicate topic was accepted")
	}
}
