package wasm

import (
	"context"
	"errors"
	goruntime "runtime"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
)

// Instructions for hand-written endless guests.
var (
	// spinCalling loops forever calling the (empty) function 0.
	spinCalling = wasmbin.Concat([]byte{0x03, 0x40}, wasmbin.Call(0), []byte{0x0c, 0x00, 0x0b})
	// recurse (function 3, (i32) -> ()) calls itself twice with n-1 until
	// n is 0: no loop, a shallow stack, 2^n calls.
	recurse = wasmbin.Concat(
		wasmbin.LocalGet(0), []byte{0x45, 0x04, 0x40, 0x0f, 0x0b}, // if n == 0 return
		wasmbin.LocalGet(0), wasmbin.I32Const(1), []byte{0x6b}, wasmbin.Call(3),
		wasmbin.LocalGet(0), wasmbin.I32Const(1), []byte{0x6b}, wasmbin.Call(3),
	)
)

// TestInterruptStopsEndlessGuests: the instrumentation (not wazero's
// CloseOnContextDone, which is off) stops a Go guest's endless loop, a
// loop without calls, a loop of calls, and a recursion without loops,
// each at its timeout. How long after the deadline the call returns is
// logged (bench measures it): tests do not assert on timing.
func TestInterruptStopsEndlessGuests(t *testing.T) {
	r := newRuntime(t, Config{})
	// The timeout also bounds a new instance's start, and a Go guest's
	// _initialize under the race detector on a loaded machine can take
	// longer than 50ms: the Go guest gets 3s, the tiny modules 50ms.
	for _, tc := range []struct {
		name     string
		artifact []byte
		path     string
		timeout  time.Duration
	}{
		{"go loop", guests["sdk"], "/loop", 3 * time.Second},
		{"loop", minimalSDK(wasmbin.Concat(wasmbin.LoopForever(), wasmbin.I64Const(0))), "/", 50 * time.Millisecond},
		{"loop of calls", minimalSDK(wasmbin.Concat(spinCalling, wasmbin.I64Const(0))), "/", 50 * time.Millisecond},
		{"deep recursion", minimalSDKWith(wasmbin.Concat(wasmbin.I32Const(62), wasmbin.Call(3), wasmbin.I64Const(0)), recurse), "/", 50 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeout := tc.timeout
			inst := instance(t, load(t, r, runtime.Spec{Artifact: tc.artifact, Limits: runtime.Limits{Timeout: timeout}}))
			start := time.Now()
			_, err := inst.Handle(context.Background(), get(tc.path, ""))
			if !errors.Is(err, runtime.ErrTimeout) {
				t.Fatalf("err = %v, want ErrTimeout", err)
			}
			t.Logf("returned %v after the deadline", time.Since(start)-timeout)
		})
	}
}

// TestSpinningGuestDoesNotStallOthers: a guest spinning in a loop (with a
// timeout of an hour) lets another function's requests run and garbage
// collections complete: its exits to Go at each fuel check are where the Go
// scheduler can stop it (a collection stops the world, the spinner
// included). Without them this test hangs: nothing can preempt wasm code.
// Two Ps, whatever the machine: the spinner holds one. (With one P it
// passes too, but a collection then takes seconds, as it does beside a
// spinning pure-Go goroutine: each hand-over waits for the scheduler's 10
// ms time slice.)
func TestSpinningGuestDoesNotStallOthers(t *testing.T) {
	defer goruntime.GOMAXPROCS(goruntime.GOMAXPROCS(2))
	r := newRuntime(t, Config{})
	spinner := instance(t, load(t, r, runtime.Spec{Artifact: guests["sdk"], Limits: runtime.Limits{Timeout: time.Hour}}))
	other := instance(t, load(t, r, runtime.Spec{Artifact: guests["hello-example"]}))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	log := &sink{}
	req := get("/loop", "")
	req.Log = log
	done := make(chan error, 1)
	go func() {
		_, err := spinner.Handle(ctx, req)
		done <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); !log.has(logLine{"stdout", "", "looping"}); {
		if time.Now().After(deadline) {
			t.Fatalf("the spinner did not start: %v", log)
		}
		time.Sleep(time.Millisecond)
	}
	for i := range 20 {
		if i%5 == 0 {
			goruntime.GC() // stops the world: the spinner too
		}
		if resp := mustHandle(t, other, get("/", "")); string(resp.Body) != "hello, world\n" {
			t.Fatalf("got %q", resp.Body)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the spinner stopped before it was cancelled: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled spinner: err = %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the spinner was not stopped by its caller's cancellation")
	}
}
