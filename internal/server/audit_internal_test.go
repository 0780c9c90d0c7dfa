package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/gateway"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// TestAuditSummariesAreBounded: however many kinds of refusal or denial a
// window sees, the audit log gets at most maxGroups entries for them and
// one that counts the rest.
func TestAuditSummariesAreBounded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Options{DataDir: t.TempDir(), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	log, err := audit.Open(ctx, st.Committer())
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{reg: registry.New(st.Registry(), st), logger: quiet}

	routes := &routeDenials{log: log, s: s, now: func() time.Time { return time.Unix(0, 0) }, maxGroups: 3, groups: map[gateway.AuthDenial]*denialCount{}}
	for i := range 10 { // 10 routes, each refused twice
		for range 2 {
			routes.OnAuthDenied(gateway.AuthDenial{App: "shop", Function: "f", Route: fmt.Sprintf("GET /r%d", i), Status: 401, Code: "unauthorized"})
		}
	}
	routes.flush()
	funcs := &auditDenials{log: log, s: s, repeats: map[denialKind]uint64{}, maxGroups: 3}
	for i := range 10 { // 10 grants, each denied three times
		for range 3 {
			funcs.record(capability.Denial{App: "shop", Function: "f", Invocation: "inv", Kind: "capability", What: fmt.Sprintf("kv:b%d", i)})
		}
	}
	funcs.flush()

	entries, err := log.List(ctx, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Action+" "+e.Target+" "+e.Detail)
	}
	want := []string{
		"route.denied shop/f 2 requests refused (401 unauthorized) on GET /r0 from 1970-01-01T00:00:00Z to 1970-01-01T00:00:00Z",
		"route.denied shop/f 2 requests refused (401 unauthorized) on GET /r1 from 1970-01-01T00:00:00Z to 1970-01-01T00:00:00Z",
		"route.denied shop/f 2 requests refused (401 unauthorized) on GET /r2 from 1970-01-01T00:00:00Z to 1970-01-01T00:00:00Z",
		"route.denied  14 more requests refused on routes past the first 3 of the window, from 1970-01-01T00:00:00Z",
		"capability.denied kv:b0 invocation inv",
		"capability.denied kv:b1 invocation inv",
		"capability.denied kv:b2 invocation inv",
		"capability.denied kv:b0 2 more denials in the window since the first",
		"capability.denied kv:b1 2 more denials in the window since the first",
		"capability.denied kv:b2 2 more denials in the window since the first",
		"capability.denied  21 more denials of functions, of kinds past the first 3 of the window",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// A new window starts empty.
	routes.flush()
	funcs.flush()
	if after, _ := log.List(ctx, audit.Filter{}); len(after) != len(entries) {
		t.Fatalf("empty windows wrote %d entries", len(after)-len(entries))
	}
}
