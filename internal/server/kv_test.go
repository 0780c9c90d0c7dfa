package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
)

// TestKVAPIErrors: what the KV API answers for what docs/api.md and
// docs/kv.md promise: a key that breaks the syntax names the rule it
// breaks, an app that is not deployed is app_not_found (a bucket the app
// does not declare is bucket_not_found), and a value of exactly 1MiB, the
// default max_value_size, is accepted while one byte more is refused.
func TestKVAPIErrors(t *testing.T) {
	t.Parallel()
	wagi := guesttest.MustBuild(t, wagiDir, guesttest.Command)
	srv := start(t, t.TempDir())
	ctx := context.Background()
	if _, err := srv.PutArtifact(ctx, wagi); err != nil {
		t.Fatal(err)
	}
	// The manifest's defaults: max_value_size 1MiB, history 1.
	spec := model.Spec{Functions: []model.Function{fn("cgi", wagi)}, Buckets: []model.Bucket{{Name: "counts", History: 1, MaxValueBytes: 1 << 20}}}
	if _, _, err := srv.Deploy(ctx, "shop", spec); err != nil {
		t.Fatal(err)
	}
	do := func(method, path string, body []byte) (int, *apierror.Error) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.APIURL()+path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+srv.AdminToken())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 400 {
			return resp.StatusCode, nil
		}
		var eb apierror.Body
		if err := json.Unmarshal(b, &eb); err != nil || eb.Error == nil {
			t.Fatalf("%s %s: %d %q is not an API error", method, path, resp.StatusCode, b)
		}
		return resp.StatusCode, eb.Error
	}
	keys := "/api/v1/apps/shop/buckets/counts/keys/"

	for key, want := range map[string]string{
		"a b":                    "contains ' ' at byte 1",
		"a..b":                   "contains '..' (an empty token) at byte 1",
		".a":                     "starts with '.'",
		"a.":                     "ends with '.'",
		"_kv.x":                  "starts with _kv",
		strings.Repeat("k", 513): "513 bytes, over the limit of 512",
		"caf\u00e9":              "contains 'é' at byte 3",
		strings.Repeat("k", 512): "",
	} {
		for _, method := range []string{"PUT", "GET", "DELETE"} {
			status, e := do(method, keys+url.PathEscape(key), []byte("v"))
			if want == "" {
				if status >= 400 && !(method == "GET" && e.Code == "key_not_found") {
					t.Errorf("%s a 512-byte key: %d %+v", method, status, e)
				}
				continue
			}
			if status != 400 || e.Code != "invalid_request" || !strings.Contains(e.Message, want) || !strings.Contains(e.Message, "keys are 1 to 512 bytes") {
				t.Errorf("%s key %.20q: %d %+v, want 400 invalid_request saying %q and the rule", method, key, status, e, want)
			}
		}
	}
	if status, e := do("GET", "/api/v1/apps/shop/buckets/counts/keys?prefix=a..", nil); status != 400 || !strings.Contains(e.Message, "'..'") {
		t.Errorf("list with prefix a..: %d %+v", status, e)
	}

	// An app that is not deployed, and a bucket the app does not declare.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/apps/nope/buckets/counts/keys/k"},
		{"PUT", "/api/v1/apps/nope/buckets/counts/keys/k"},
		{"DELETE", "/api/v1/apps/nope/buckets/counts/keys/k"},
		{"GET", "/api/v1/apps/nope/buckets/counts/keys"},
	} {
		if status, e := do(c.method, c.path, []byte("v")); status != 404 || e.Code != "app_not_found" || !strings.Contains(e.Message, `app "nope" is not deployed`) {
			t.Errorf("%s %s: %d %+v, want 404 app_not_found", c.method, c.path, status, e)
		}
	}
	if status, e := do("GET", "/api/v1/apps/shop/buckets/other/keys/k", nil); status != 404 || e.Code != "bucket_not_found" {
		t.Errorf("undeclared bucket: %d %+v, want 404 bucket_not_found", status, e)
	}

	// Values: 1MiB exactly is accepted, one byte more is not.
	if status, e := do("PUT", keys+"big", bytes.Repeat([]byte("x"), 1<<20)); status != 200 {
		t.Errorf("PUT a value of exactly 1MiB: %d %+v", status, e)
	}
	if status, e := do("PUT", keys+"big", bytes.Repeat([]byte("x"), 1<<20+1)); status != 413 || e.Code != "value_too_large" {
		t.Errorf("PUT a value of 1MiB+1: %d %+v, want 413 value_too_large", status, e)
	}
}
