package registry

import (
	"context"
	"errors"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// TestTenantOwnsApp: an app belongs to the tenant that created it; a caller
// acting for another tenant can neither deploy, roll back nor delete it,
// and nothing is stored by its attempt; a node-wide caller can.
func TestTenantOwnsApp(t *testing.T) {
	e := newEnv(t)
	a := model.WithTenant(context.Background(), "team-a")
	b := model.WithTenant(context.Background(), "team-b")
	if _, _, err := e.reg.Deploy(a, "shop", []model.Function{e.fn("f", "/a")}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.reg.Deploy(context.Background(), "legacy", []model.Function{e.fn("g", "/g")}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"shop": "team-a", "legacy": model.DefaultTenant} {
		app, err := e.reg.App(context.Background(), name)
		if err != nil || app.TenantName() != want {
			t.Fatalf("%s: tenant %v %v, want %s", name, app, err, want)
		}
	}
	var te *model.TenantError
	if _, _, err := e.reg.Deploy(b, "shop", []model.Function{e.fn("f2", "/a")}); !errors.As(err, &te) || te.Tenant != "team-a" {
		t.Fatalf("deploy by team-b: %v", err)
	}
	if revs, _ := e.reg.Revisions(context.Background(), "shop"); len(revs) != 1 {
		t.Fatalf("a refused deploy stored a revision: %d", len(revs))
	}
	if _, _, err := e.reg.Deploy(a, "shop", []model.Function{e.fn("f3", "/a")}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.reg.Rollback(b, "shop", ""); !errors.As(err, &te) {
		t.Fatalf("rollback by team-b: %v", err)
	}
	if err := e.reg.Delete(b, "shop"); !errors.As(err, &te) {
		t.Fatalf("delete by team-b: %v", err)
	}
	if err := e.reg.Delete(model.WithTenant(context.Background(), "default"), "shop"); !errors.As(err, &te) {
		t.Fatalf("delete by tenant default: %v", err)
	}
	if _, err := e.reg.Rollback(context.Background(), "shop", ""); err != nil {
		t.Fatalf("node-wide rollback: %v", err)
	}
	if err := e.reg.Delete(context.Background(), "shop"); err != nil {
		t.Fatalf("node-wide delete: %v", err)
	}
}

// TestDeletedAppNameStaysWithItsTenant: a deleted app's buckets, secrets
// and logs stay, so its name does too: another tenant cannot deploy it
// (and inherit that data); its own tenant and a node-wide caller can, and
// the app is its tenant's again.
func TestDeletedAppNameStaysWithItsTenant(t *testing.T) {
	e := newEnv(t)
	a := model.WithTenant(context.Background(), "team-a")
	b := model.WithTenant(context.Background(), "team-b")
	if _, _, err := e.reg.Deploy(a, "shop", []model.Function{e.fn("f", "/a")}); err != nil {
		t.Fatal(err)
	}
	if err := e.reg.Delete(a, "shop"); err != nil {
		t.Fatal(err)
	}
	var te *model.TenantError
	if _, _, err := e.reg.Deploy(b, "shop", []model.Function{e.fn("f", "/b")}); !errors.As(err, &te) || te.Tenant != "team-a" {
		t.Fatalf("deploy of a deleted app's name by team-b: %v, want a TenantError naming team-a", err)
	}
	if _, err := e.reg.App(context.Background(), "shop"); !errors.Is(err, ErrAppNotFound) {
		t.Fatalf("the refused deploy created the app: %v", err)
	}
	// A node-wide caller deploys it back into team-a, not into default.
	if _, _, err := e.reg.Deploy(context.Background(), "shop", []model.Function{e.fn("f", "/a")}); err != nil {
		t.Fatal(err)
	}
	if app, err := e.reg.App(context.Background(), "shop"); err != nil || app.TenantName() != "team-a" {
		t.Fatalf("redeployed app: %+v %v, want tenant team-a", app, err)
	}
	if err := e.reg.Delete(context.Background(), "shop"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.reg.Deploy(a, "shop", []model.Function{e.fn("f", "/a")}); err != nil {
		t.Fatalf("its own tenant deploys it again: %v", err)
	}
}
