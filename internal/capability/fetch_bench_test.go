package capability_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/capability/captest"
)

// BenchmarkFetch is the host side of nimbus.Fetch (grant check, network
// guard at dial, limits, metrics, trace header) against a plain net/http
// client calling the same loopback server, both with keep-alive. The
// guard allows 127.0.0.2/32, where the server listens.
//
//	go test -run '^$' -bench Fetch ./internal/capability
func BenchmarkFetch(b *testing.B) {
	up := captest.Echo(b, "127.0.0.2")
	url := "http://" + up.String() + "/"
	ctx := context.Background()
	b.Run("guarded", func(b *testing.B) {
		svc := capability.New(capability.Config{Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
			Egress: capability.EgressConfig{AllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}})
		defer svc.Fetch.CloseIdleConnections()
		grants := []string{"http:GET http://" + up.String()}
		call := fetchCaller(grants...)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if i%capability.DefaultFetchMaxRequests == 0 {
				call = fetchCaller(grants...) // a new invocation: the per-invocation request cap starts again
			}
			resp, err := svc.Fetch.Fetch(ctx, call, capability.FetchRequest{Method: http.MethodGet, URL: url})
			if err != nil || resp.Status != 200 {
				b.Fatalf("fetch: %v", err)
			}
		}
	})
	b.Run("raw", func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{}}
		defer client.CloseIdleConnections()
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			resp, err := client.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
	})
}
