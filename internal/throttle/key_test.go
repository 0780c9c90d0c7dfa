package throttle

import (
	"net/http"
	"net/url"
	"testing"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		expr, canonical string
		ok              bool
	}{
		{"", "", true},
		{"event.subject", "event.subject", true},
		{"event.source", "event.source", true},
		{"event.type", "event.type", true},
		{"event.tenantid", "event.tenantid", true},
		{"header.x-tenant", "header.X-Tenant", true},
		{"header.X-Tenant", "header.X-Tenant", true},
		{"query.name", "query.name", true},
		{"query.Name", "query.Name", true},
		{"event.id", "", false},
		{"event.data", "", false},
		{"event.Subject", "", false},
		{"event.", "", false},
		{"header.", "", false},
		{"header.bad name", "", false},
		{"query.a&b", "", false},
		{"query.", "", false},
		{"subject", "", false},
		{"body.x", "", false},
	}
	for _, tt := range tests {
		k, err := ParseKey(tt.expr)
		if (err == nil) != tt.ok {
			t.Errorf("ParseKey(%q): err %v, want ok %v", tt.expr, err, tt.ok)
			continue
		}
		if got := k.String(); tt.ok && got != tt.canonical {
			t.Errorf("ParseKey(%q).String() = %q, want %q", tt.expr, got, tt.canonical)
		}
	}
}

func TestKeyFromRequestAndEvent(t *testing.T) {
	h := http.Header{"X-Tenant": {"acme", "other"}, "Ce-Subject": {"eu/42"}}
	attrs := map[string]string{"subject": "eu/7", "tenantid": "t9"}
	attr := func(n string) string { return attrs[n] }
	tests := []struct {
		expr, query, fromRequest, fromEvent string
	}{
		{"header.x-tenant", "", "acme", ""},
		{"header.X-Missing", "", "", ""},
		{"query.user", "a=1&user=bob%20smith&user=x", "bob smith", ""},
		{"query.user", "us%65r=enc", "enc", ""},
		{"query.user", "user", "", ""},
		{"query.user", "user=%zz&user=ok", "ok", ""},
		{"event.subject", "", "eu/42", "eu/7"},
		{"event.tenantid", "", "", "t9"},
		{"", "user=x", "", ""},
	}
	for _, tt := range tests {
		k, err := ParseKey(tt.expr)
		if err != nil {
			t.Fatal(err)
		}
		if got := k.FromRequest(h, tt.query); got != tt.fromRequest {
			t.Errorf("%q.FromRequest(%q) = %q, want %q", tt.expr, tt.query, got, tt.fromRequest)
		}
		if got := k.FromEvent(attr); got != tt.fromEvent {
			t.Errorf("%q.FromEvent = %q, want %q", tt.expr, got, tt.fromEvent)
		}
	}
}

func TestKeyFromRequestAllocs(t *testing.T) {
	k, _ := ParseKey("header.X-Tenant")
	q, _ := ParseKey("query.user")
	h := http.Header{"X-Tenant": {"acme"}}
	if n := testing.AllocsPerRun(100, func() {
		_ = k.FromRequest(h, "")
		_ = q.FromRequest(h, "a=1&user=bob")
	}); n != 0 {
		t.Fatalf("%v allocations per key", n)
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"", "event.subject", "header.x-tenant", "query.a", "event.id", "header.", "query.%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		k, err := ParseKey(expr)
		if err != nil {
			return
		}
		// Canonical forms parse to themselves.
		k2, err := ParseKey(k.String())
		if err != nil || k2 != k {
			t.Fatalf("ParseKey(%q) = %q, which reparses to %q, %v", expr, k.String(), k2.String(), err)
		}
	})
}

// FuzzQueryValue checks the allocation-free query scan against
// url.ParseQuery's first value.
func FuzzQueryValue(f *testing.F) {
	for _, s := range []string{"a=1&b=2", "a=%20&a=2", "a", "%61=x", "a=%zz&a=ok", "a=1;b=2", "&&a=+"} {
		f.Add(s, "a")
	}
	f.Fuzz(func(t *testing.T, raw, name string) {
		vs, err := url.ParseQuery(raw)
		if err != nil {
			return // ParseQuery keeps going past bad pairs; its first error ends our comparison
		}
		if got, want := queryValue(raw, name), vs.Get(name); got != want {
			t.Fatalf("queryValue(%q, %q) = %q, url.ParseQuery gives %q", raw, name, got, want)
		}
	})
}
