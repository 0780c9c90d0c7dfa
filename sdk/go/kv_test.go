package nimbus

import (
	"errors"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

func TestKVCodeErrors(t *testing.T) {
	tests := []struct {
		code int32
		want error
	}{
		{wire.CodeNotFound, ErrNotFound},
		{wire.CodeRevisionMismatch, ErrRevisionMismatch},
		{wire.CodeNoBucket, ErrBucketNotFound},
		{wire.CodeDenied, ErrDenied},
	}
	for _, tt := range tests {
		if err := Bucket("counts").err("kv put", true, tt.code); !errors.Is(err, tt.want) {
			t.Errorf("code %d: %v, want %v", tt.code, err, tt.want)
		}
	}
	err := Bucket("counts").err("kv get", false, wire.CodeDenied)
	if want := "nimbus: kv get counts: capability not granted: grant it with `capabilities: [kv:counts:read]` in nimbus.yaml"; err.Error() != want {
		t.Fatalf("%q, want %q", err, want)
	}
	var mm error = &RevisionMismatchError{Bucket: "b", Key: "k", Current: 3}
	if !errors.Is(mm, ErrRevisionMismatch) {
		t.Fatal("RevisionMismatchError is not ErrRevisionMismatch")
	}
}

// Outside WebAssembly there is no host: every call is ErrUnavailable, and
// options are checked first.
func TestKVOutsideWasm(t *testing.T) {
	b := Bucket("counts")
	if _, _, err := b.Get("k"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("get: %v", err)
	}
	if _, err := b.Put("k", nil, TTL(time.Second), IfRevision(0)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("put: %v", err)
	}
	if _, err := b.Put("k", nil, TTL(-time.Second)); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("negative TTL: %v", err)
	}
	if err := b.Delete("k", TTL(time.Second)); !errors.Is(err, ErrBadArgument) {
		t.Fatalf("delete with TTL: %v", err)
	}
	if _, err := b.List(""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("list: %v", err)
	}
}
