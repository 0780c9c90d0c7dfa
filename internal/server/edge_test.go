package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// TestEdgeLimitsOnBothListeners: the gateway and the API both read bodies
// under the node's minimum rate and body budget, and both refuse oversized
// headers: a body that stops arriving is 408 body_too_slow on either
// listener (the API's JSON decoder does not turn it into a 400), a body
// over the budget is 503 body_budget, headers over 64 KiB are 431.
func TestEdgeLimitsOnBothListeners(t *testing.T) {
	t.Parallel()
	srv, err := server.Start(context.Background(), server.Config{
		DataDir: t.TempDir(), CacheDir: cacheDir, Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0",
		Logger:     slog.New(slog.DiscardHandler),
		BodyBudget: 256 << 10, // 128 KiB per app, 112 KiB of it for large bodies
		BodyRate:   throttle.BodyRate{Grace: 100 * time.Millisecond, MinRate: 1 << 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(context.Background()) })

	// raw sends a request's headers and the first part of its body, and
	// reads the answer.
	raw := func(base, head, part string) (code int, closed bool, retry, errCode string) {
		t.Helper()
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "%s\r\nHost: test\r\n\r\n%s", head, part)
		conn.SetReadDeadline(time.Now().Add(30 * time.Second)) // a hung server fails, not hangs
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", head, err)
		}
		defer resp.Body.Close()
		var body apierror.Body
		b, _ := io.ReadAll(resp.Body)
		if json.Unmarshal(b, &body) == nil && body.Error != nil {
			errCode = body.Error.Code
		}
		return resp.StatusCode, resp.Close, resp.Header.Get("Retry-After"), errCode
	}

	slow := []struct{ base, head string }{
		{srv.GatewayURL(), "POST /_nimbus/events/shop/orders HTTP/1.1\r\nContent-Type: application/cloudevents+json\r\nContent-Length: 1000"},
		{srv.APIURL(), "POST /api/v1/apps/shop/deploy HTTP/1.1\r\nAuthorization: Bearer " + srv.AdminToken() + "\r\nContent-Length: 1000"},
	}
	for _, c := range slow {
		if code, closed, _, got := raw(c.base, c.head, "{"); code != 408 || got != "body_too_slow" || !closed {
			t.Errorf("%s: a body that stops: %d %s close=%v", c.head, code, got, closed)
		}
	}

	// Refused at once, before a byte of it is sent.
	code, closed, retry, got := raw(srv.GatewayURL(), "POST /_nimbus/events/shop/orders HTTP/1.1\r\nContent-Type: application/cloudevents+json\r\nContent-Length: 200000", "")
	if code != 503 || got != "body_budget" || retry != "1" || !closed {
		t.Errorf("a body over the budget: %d %s Retry-After=%q close=%v", code, got, retry, closed)
	}

	for _, base := range []string{srv.GatewayURL(), srv.APIURL()} {
		if code, _, _, _ := raw(base, "GET /x HTTP/1.1\r\nX-Big: "+strings.Repeat("a", 80<<10), ""); code != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("%s: headers over 64 KiB: %d", base, code)
		}
	}
}
