package server_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/registry"
)

// TestComponentsRefuseBeforeAnythingIsRecorded: a deploy that the model or a
// component refuses (a route over the gateway's own CloudEvents ingress, a
// schedule that does not parse, a trigger on an undeclared bucket) is
// refused with a 4xx and leaves no trace in the registry.
func TestComponentsRefuseBeforeAnythingIsRecorded(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := srv.PutArtifact(ctx, hello); err != nil {
		t.Fatal(err)
	}
	dlq := []model.Topic{{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}
	cronFn := fn("tick", hello)
	cronFn.Triggers = []model.Trigger{{Name: "t", Kind: model.TriggerCron, Cron: "not a schedule",
		MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	bucketFn := fn("watch", hello)
	bucketFn.Triggers = []model.Trigger{{Name: "b", Kind: model.TriggerBucket, Bucket: "nowhere",
		MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	for _, tc := range []struct {
		name   string
		spec   model.Spec
		status int
		code   string
		says   string
	}{
		// Neither pattern is more specific than the other: the gateway's
		// table refuses it (the route that once bricked a data dir).
		{"overlaps the events ingress", model.Spec{Functions: []model.Function{fn("hello", hello, "POST /{tenant}/events/orders/{id}")}},
			http.StatusConflict, "route_conflict", "/_nimbus/"},
		// Under the reserved prefix: the model refuses it, even where it
		// would be more specific than the ingress and win its traffic.
		{"under the events ingress", model.Spec{Functions: []model.Function{fn("hello", hello, "/_nimbus/events/x/y")}},
			http.StatusBadRequest, "invalid_revision", "reserved"},
		{"is the events ingress", model.Spec{Functions: []model.Function{fn("hello", hello, "POST /_nimbus/events/{app}/{topic}")}},
			http.StatusBadRequest, "invalid_revision", "reserved"},
		{"bad schedule", model.Spec{Functions: []model.Function{cronFn}, Topics: dlq},
			http.StatusBadRequest, "invalid_revision", "tick/t"},
		{"undeclared bucket", model.Spec{Functions: []model.Function{bucketFn}, Topics: dlq},
			http.StatusBadRequest, "invalid_revision", "nowhere"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := srv.Deploy(ctx, "refused", tc.spec)
			ae := apierror.From(err) // as the API answers it
			if err == nil || ae.Status != tc.status || ae.Code != tc.code || !strings.Contains(ae.Message, tc.says) {
				t.Fatalf("deploy: %v, want %d %s saying %q", err, tc.status, tc.code, tc.says)
			}
			if _, err := srv.Registry().App(ctx, "refused"); !errors.Is(err, registry.ErrAppNotFound) {
				t.Fatalf("a refused deploy was recorded: %v", err)
			}
		})
	}
	// The ingress still answers.
	if code, _, _ := get(t, srv.GatewayURL()+"/_nimbus/events/x/y"); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET on the events ingress = %d, want 405", code)
	}
}

// TestNodeStartsWhenAComponentRefusesAStoredApp: revisions recorded before
// the components checked them (written here straight to the registry) are
// refused by one component at restore; the node still starts, serves the
// other apps, and serves the rest of the refused app up to that
// component. Two apps whose routes overlap (recorded before routes had
// owners) are both served.
func TestNodeStartsWhenAComponentRefusesAStoredApp(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	dir := t.TempDir()
	srv := start(t, dir)
	ctx := context.Background()
	deploy(t, srv, "good", [][]byte{hello}, fn("hello", hello, "GET /hello/{name}"))
	// Records as an older node made them: the registry checks routes
	// itself (model.FindConflict), not with this node's gateway.
	srv.Registry().SetRouteCheck(nil)

	// A route over the gateway's ingress: the gateway refuses it.
	if _, _, err := srv.Registry().DeploySpec(ctx, "badroute", model.Spec{
		Functions: []model.Function{fn("hello", hello, "POST /{tenant}/events/orders/{id}")}}); err != nil {
		t.Fatal(err)
	}
	// A route of another app that takes some of good's traffic (more
	// specific), recorded before routes had owners: both apps are served
	// as ServeMux ranks them, and the overlap is logged.
	shadow := fn("hello", hello, "GET /hello/nimbus")
	shadow.Env = map[string]string{"GREETING": "shadowed"}
	if _, _, err := srv.Registry().DeploySpec(ctx, "shadow", model.Spec{Functions: []model.Function{shadow}}); err != nil {
		t.Fatal(err)
	}
	// A schedule that does not parse: the cron source refuses it; its
	// routes come before it and are served.
	f := fn("hello", hello, "GET /badcron/{name}")
	f.Triggers = []model.Trigger{{Name: "t", Kind: model.TriggerCron, Cron: "not a schedule",
		MaxAttempts: 3, BackoffMS: 10, MaxBackoffMS: 100, DeadLetter: model.DeadLetterTopic}}
	if _, _, err := srv.Registry().DeploySpec(ctx, "badcron", model.Spec{Functions: []model.Function{f},
		Topics: []model.Topic{{Name: model.DeadLetterTopic, MaxEventBytes: 1 << 20, RetentionMS: 3_600_000}}}); err != nil {
		t.Fatal(err)
	}
	srv.Close(ctx)

	srv = start(t, dir) // fails the test if the node does not start
	if code, body, _ := get(t, srv.GatewayURL()+"/hello/there"); code != 200 || body != "hello, there\n" {
		t.Fatalf("good app after restart: %d %q", code, body)
	}
	if code, body, _ := get(t, srv.GatewayURL()+"/hello/nimbus"); code != 200 || body != "shadowed, world\n" {
		t.Fatalf("the overlapping app after restart: %d %q", code, body)
	}
	if code, _, _ := get(t, srv.GatewayURL()+"/badcron/x"); code != 200 {
		t.Fatalf("routes of the app whose cron trigger was refused: %d", code)
	}
	// The refused app is fixed by a deploy that the components accept.
	deploy(t, srv, "badroute", [][]byte{hello}, fn("hello", hello, "GET /fixed/{name}"))
	if code, _, _ := get(t, srv.GatewayURL()+"/fixed/x"); code != 200 {
		t.Fatalf("fixed app: %d", code)
	}
}

// TestRoutesBelongToOneApp: with app a serving GET /probe/{name}, app b
// cannot deploy a route that would take any of its requests, whichever
// pattern is more specific (409 naming a and its route), and a keeps
// serving. Once b deploys without a route, a may take it; b's rollback to
// the revision that had it is then refused the same way.
func TestRoutesBelongToOneApp(t *testing.T) {
	t.Parallel()
	hello := guesttest.MustBuild(t, helloDir, guesttest.Reactor)
	srv := start(t, t.TempDir())
	ctx := context.Background()
	deploy(t, srv, "a", [][]byte{hello}, fn("probe", hello, "GET /probe/{name}"))
	deploy(t, srv, "b", nil, fn("hello", hello, "GET /b/{name}"))

	for _, route := range []string{"GET /probe/b", "/{x}/{name}", "HEAD /probe/{id}", "/probe/"} {
		_, _, err := srv.Deploy(ctx, "b", model.Spec{Functions: []model.Function{fn("hello", hello, route)}})
		if err == nil {
			t.Fatalf("b deployed %q over a's GET /probe/{name}", route)
		}
		ae := apierror.From(err)
		if ae.Status != http.StatusConflict || ae.Code != "route_conflict" ||
			!strings.Contains(ae.Message, `route "GET /probe/{name}" of function probe (app a)`) {
			t.Errorf("b deploys %q: %v, want 409 route_conflict naming a's route", route, err)
		}
	}
	if code, body, _ := get(t, srv.GatewayURL()+"/probe/b"); code != 200 || body != "hello, b\n" {
		t.Fatalf("a after b's refused deploys: %d %q", code, body)
	}

	// The hand-over: b drops /b/..., then a may serve it.
	deploy(t, srv, "b", nil, fn("hello", hello, "GET /c/{name}"))
	deploy(t, srv, "a", nil, fn("probe", hello, "GET /probe/{name}", "GET /b/{name}"))
	_, err := srv.Rollback(ctx, "b", "")
	if err == nil {
		t.Fatal("b rolled back onto a's route")
	}
	if ae := apierror.From(err); ae.Status != http.StatusConflict || !strings.Contains(ae.Message, "(app a)") {
		t.Fatalf("b's rollback onto a's route: %v, want 409 naming app a", err)
	}
	if code, _, _ := get(t, srv.GatewayURL()+"/b/x"); code != 200 {
		t.Fatalf("a's new route after b's refused rollback: %d", code)
	}
}
