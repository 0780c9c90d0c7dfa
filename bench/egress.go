package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nimbus-dev/nimbus/internal/guesttest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/store"
)

// egressPerRequest is how many fetches or secret reads the guest makes in
// one request of the egress scenario (the host allows 100 fetches per
// invocation).
const egressPerRequest = 50

// egressSecret is the value the scenario's secret holds: the size of a
// typical API key.
var egressSecret = []byte("sk_live_0123456789abcdefghijklmnopqrstuv")

// runEgress: the cost of one outbound call and one secret read made by a
// Go guest, per call. The guest makes egressPerRequest of them in one
// request; the time of an empty request (n=0) is subtracted and the rest
// divided by egressPerRequest, so the figure is the call alone, not the
// invocation around it. Baselines, in the same run: the same GET with a
// plain net/http client (keep-alive) to the same loopback server; for
// secrets, the raw JetStream KV read of a record of the same size (what a
// read costs at least, since reads are not cached), and the AES-256-GCM
// open of the value alone. The guard allows 127.0.0.2/32, where the
// upstream listens.
func runEgress(ctx context.Context, b *bench) ([]row, error) {
	up, err := egressUpstream()
	if err != nil {
		return nil, err
	}
	defer up.Close()
	upURL := "http://" + up.Addr + "/"

	progress("   building bench/testdata/capguest (reactor)")
	wasm, err := guesttest.Build(filepath.Join(b.root, "bench/testdata/capguest"), guesttest.Reactor)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(b.tmp, "egress-")
	if err != nil {
		return nil, err
	}
	srv, err := server.Start(ctx, server.Config{
		DataDir: filepath.Join(dir, "data"), Listen: "127.0.0.1:0", APIListen: "127.0.0.1:0", Version: "bench",
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		EgressAllowCIDRs: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")},
		MasterKeyFile:    filepath.Join(dir, "keys", "master.key"),
	})
	if err != nil {
		return nil, err
	}
	defer srv.Close(context.Background())
	if _, err := srv.PutArtifact(ctx, wasm); err != nil {
		return nil, err
	}
	fn := benchFunction(wasm)
	fn.TimeoutMS = 30_000
	fn.Capabilities = []string{"http:GET http://" + up.Addr, "secret:BENCH_KEY"}
	fn.Routes = []model.Route{{Method: http.MethodGet, Path: "/fetch"}, {Method: http.MethodGet, Path: "/secret"}}
	if _, _, err := srv.Deploy(ctx, "egress", model.Spec{Functions: []model.Function{fn}}); err != nil {
		return nil, err
	}
	if _, err := srv.Secrets().Set(ctx, "egress", "BENCH_KEY", egressSecret); err != nil {
		return nil, err
	}
	raw, err := newRawRecord(ctx, b, len(egressSecret))
	if err != nil {
		return nil, err
	}
	defer raw.st.Close()
	aead, sealed, nonce := rawAEAD()

	client := loadClient(1)
	defer client.CloseIdleConnections()
	gw := srv.GatewayURL()
	// perOp runs op sequentially for d and returns its mean time in µs.
	perOp := func(d time.Duration, op func(context.Context) (time.Duration, error)) (float64, error) {
		res, err := measure(ctx, 1, d, maxRequests, op)
		if err != nil {
			return 0, err
		}
		return res.Elapsed.Seconds() * 1e6 / float64(res.Requests), nil
	}
	get := func(url string) func(context.Context) (time.Duration, error) {
		return func(ctx context.Context) (time.Duration, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
			if err != nil {
				return 0, err
			}
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return 0, fmt.Errorf("GET %s: %d %s", url, resp.StatusCode, body)
			}
			return 0, nil
		}
	}
	fetchURL := fmt.Sprintf("%s/fetch?n=%d&url=%s", gw, egressPerRequest, upURL)
	secretURL := fmt.Sprintf("%s/secret?n=%d&name=BENCH_KEY", gw, egressPerRequest)
	emptyURL := gw + "/fetch?n=0"
	// Warm up: the instance, the connections, the data key cache.
	for _, u := range []string{fetchURL, secretURL, emptyURL} {
		if _, err := perOp(200*time.Millisecond, get(u)); err != nil {
			return nil, fmt.Errorf("warm up: %w", err)
		}
	}
	d := b.opts.duration / 2
	var guestFetch, rawFetch, guestSecret, rawKV, rawOpen []float64
	for i := range b.opts.runs {
		empty, err := perOp(d, get(emptyURL))
		if err != nil {
			return nil, err
		}
		f, err := perOp(d, get(fetchURL))
		if err != nil {
			return nil, err
		}
		rf, err := perOp(d, get(upURL))
		if err != nil {
			return nil, err
		}
		s, err := perOp(d, get(secretURL))
		if err != nil {
			return nil, err
		}
		rk, err := perOp(d, func(ctx context.Context) (time.Duration, error) {
			_, err := raw.st.Security().Get(ctx, raw.key)
			return 0, err
		})
		if err != nil {
			return nil, err
		}
		ro, err := perOp(d/4, func(context.Context) (time.Duration, error) {
			_, err := aead.Open(nil, nonce, sealed, []byte("egress/BENCH_KEY"))
			return 0, err
		})
		if err != nil {
			return nil, err
		}
		guestFetch = append(guestFetch, (f-empty)/egressPerRequest)
		rawFetch = append(rawFetch, rf)
		guestSecret = append(guestSecret, (s-empty)/egressPerRequest)
		rawKV = append(rawKV, rk)
		rawOpen = append(rawOpen, ro)
		progress("   run %d: fetch %.1f µs (raw %.1f), secret %.1f µs (raw KV %.1f, open %.2f), empty request %.0f µs",
			i+1, guestFetch[i], rf, guestSecret[i], rk, ro, empty)
	}
	return []row{
		newRow("egress", fmt.Sprintf("nimbus.Fetch GET from a Go guest, per call (%d per request, empty request subtracted)", egressPerRequest), "µs",
			guestFetch, "net/http client GET, keep-alive, same loopback server", rawFetch),
		newRow("egress", fmt.Sprintf("nimbus.Secret from a Go guest, per read (%d per request, empty request subtracted)", egressPerRequest), "µs",
			guestSecret, "raw jetstream.KeyValue get of a record of the same size", rawKV),
		newRow("egress", "nimbus.Secret per read, against the decryption alone", "µs",
			guestSecret, "raw AES-256-GCM open of the value", rawOpen),
	}, nil
}

// egressServer is the loopback upstream of the egress scenario.
type egressServer struct {
	Addr string
	srv  *http.Server
}

func (e *egressServer) Close() { e.srv.Close() }

func egressUpstream() (*egressServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		return nil, fmt.Errorf("egress upstream on 127.0.0.2 (loopback): %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return &egressServer{Addr: ln.Addr().String(), srv: srv}, nil
}

// rawRecord is a store opened like the node's with one record in its
// security bucket, as large as a secret record of a value of n bytes.
type rawRecord struct {
	st  *store.Store
	key string
}

func newRawRecord(ctx context.Context, b *bench, n int) (*rawRecord, error) {
	dir, err := os.MkdirTemp(b.tmp, "rawsecret-")
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Options{DataDir: dir, Logger: b.logger})
	if err != nil {
		return nil, err
	}
	// A secret record is JSON of the version, the time and base64 of
	// nonce || ciphertext || tag; this value has that size.
	rec := fmt.Sprintf(`{"version":1,"updated_at":"%s","sealed":"%s"}`, time.Now().UTC().Format(time.RFC3339Nano),
		strings.Repeat("A", (12+n+16+2)/3*4))
	key := "secrets.egress.s.BENCH_KEY"
	if _, err := st.Security().Put(ctx, key, []byte(rec)); err != nil {
		st.Close()
		return nil, err
	}
	return &rawRecord{st: st, key: key}, nil
}

// rawAEAD seals the scenario's secret with a fresh AES-256-GCM key.
func rawAEAD() (cipher.AEAD, []byte, []byte) {
	key := make([]byte, 32)
	rand.Read(key)
	block, _ := aes.NewCipher(key)
	aead, _ := cipher.NewGCM(block)
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	return aead, aead.Seal(nil, nonce, egressSecret, []byte("egress/BENCH_KEY")), nonce
}
