package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/runtime"
	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// artifactStore is an ArtifactSource over a map, counting fetches. A fetch
// waits for gate when it is set, and fails with err when it is set.
type artifactStore struct {
	mu      sync.Mutex
	bytes   map[string][]byte
	fetches map[string]int
	gate    chan struct{}
	err     error
}

func newArtifactStore(artifacts ...[]byte) *artifactStore {
	s := &artifactStore{bytes: map[string][]byte{}, fetches: map[string]int{}}
	for _, a := range artifacts {
		s.bytes[shaOf(a)] = a
	}
	return s
}

func shaOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func (s *artifactStore) GetArtifact(ctx context.Context, sha string) ([]byte, error) {
	s.mu.Lock()
	s.fetches[sha]++
	gate, err := s.gate, s.err
	b, ok := s.bytes[sha]
	s.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("artifact %s not found", sha)
	}
	return b, nil
}

func (s *artifactStore) count(artifact []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.fetches[shaOf(artifact)]
}

// resident reports whether m's compiled code is loaded.
func resident(r *Runtime, m runtime.Module) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m.(*module).code.res != nil
}

// users is how many instances use m's code or wait for it.
func users(r *Runtime, m runtime.Module) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return m.(*module).code.users
}

// distinctMinimal is minimalSDK with one more data byte: distinct
// artifacts of the same shape.
func distinctMinimal(v uint32) []byte {
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{tVoid, tAlloc, tHandle},
		Funcs: []wasmbin.Func{
			{Type: 0},
			{Type: 1, Body: wasmbin.I32Const(1024)},
			{Type: 2, Body: wasmbin.I64Const(int64(minimalRespAt)<<32 | int64(len(minimalResponse)))},
		},
		MemoryPages: 1,
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
		},
		Data: []wasmbin.Data{{Offset: minimalRespAt, Bytes: minimalResponse}, {Offset: 60000, Bytes: binary.LittleEndian.AppendUint32(nil, v)}},
	}
	return m.Encode()
}

// TestEvictedModuleReloads: a function whose code was evicted while idle
// serves again at its next instance, with its environment, its memory cap
// and its capabilities, and the code is fetched once per reload.
func TestEvictedModuleReloads(t *testing.T) {
	src := newArtifactStore(guests["sdk"], guests["wagi"])
	r := newRuntime(t, Config{Artifacts: src, IdleModules: 1})
	sdk := load(t, r, runtime.Spec{Artifact: guests["sdk"], Env: map[string]string{"GREETING": "hi"}, Capabilities: []string{"log"},
		Limits: runtime.Limits{MemoryBytes: 64 << 20}})
	denied := load(t, r, runtime.Spec{App: "shop", Function: "cart", Artifact: guests["sdk"]}) // same code, no grant
	if !resident(r, sdk) {
		t.Fatal("the only idle code was evicted")
	}
	// A snapshot exists once an instance ran: the eviction must drop it.
	inst := instance(t, sdk)
	mustHandle(t, inst, get("/hello", ""))
	inst.Close(context.Background())
	if sdk.(*module).snap.Load() == nil {
		t.Fatal("no snapshot after the first instance")
	}
	wagi := load(t, r, runtime.Spec{Artifact: guests["wagi"]})
	if resident(r, sdk) || !resident(r, wagi) {
		t.Fatalf("resident sdk=%v wagi=%v; want the least recently used (sdk) evicted beyond a budget of 1", resident(r, sdk), resident(r, wagi))
	}
	if sdk.(*module).snap.Load() != nil {
		t.Fatal("the snapshot outlived its code's eviction")
	}
	if n := src.count(guests["sdk"]); n != 0 {
		t.Fatalf("%d fetches before any reload", n)
	}

	inst = instance(t, sdk)
	if resp := mustHandle(t, inst, get("/env", "key=GREETING")); string(resp.Body) != "hi" {
		t.Fatalf("after reload, GREETING = %q", resp.Body)
	}
	s := &sink{}
	req := get("/log", "")
	req.Log = s
	if resp := mustHandle(t, inst, req); resp.Status != 200 || !s.has(logLine{"log", "warn", "log from guest"}) {
		t.Fatalf("after reload, log: %d %q, lines %s", resp.Status, resp.Body, s)
	}
	if n := src.count(guests["sdk"]); n != 1 {
		t.Fatalf("%d fetches of the sdk guest, want 1 reload", n)
	}
	if sdk.(*module).snap.Load() == nil {
		t.Fatal("no snapshot after the reload: _initialize must run again and be captured")
	}
	if !resident(r, sdk) || !resident(r, wagi) {
		t.Fatal("want the reloaded code resident (in use) and the idle wagi code too (the budget counts idle codes)")
	}
	// Still the same guards: the memory cap, the grants of each function.
	bomb := instance(t, sdk)
	_, err := bomb.Handle(context.Background(), get("/bomb", ""))
	var le *runtime.LimitError
	if !errors.Is(err, runtime.ErrMemoryLimit) || !errors.As(err, &le) || le.Limit != "64MiB" {
		t.Fatalf("memory bomb after reload: %v, want ErrMemoryLimit at 64MiB", err)
	}
	deny := instance(t, denied)
	if resp := mustHandle(t, deny, get("/log", "")); resp.Status != 403 || !strings.Contains(string(resp.Body), "capability not granted") {
		t.Fatalf("ungranted log after reload: %d %q, want 403", resp.Status, resp.Body)
	}
	// The sdk code idle again (most recently used) evicts the wagi code,
	// which reloads too.
	for _, i := range []runtime.Instance{inst, bomb, deny} {
		i.Close(context.Background())
	}
	if !resident(r, sdk) || resident(r, wagi) {
		t.Fatal("want the sdk code resident and the wagi code evicted")
	}
	if resp := mustHandle(t, instance(t, wagi), get("/", "")); resp.Status != 200 {
		t.Fatalf("wagi after reload: %d %q", resp.Status, resp.Body)
	}
	if n := src.count(guests["wagi"]); n != 1 {
		t.Fatalf("%d fetches of the wagi guest, want 1", n)
	}
}

// TestConcurrentFirstRequestsShareOneReload: instances asked at once of an
// evicted module wait for one reload; one caller giving up does not fail
// the others.
func TestConcurrentFirstRequestsShareOneReload(t *testing.T) {
	a, b := distinctMinimal(1), distinctMinimal(2)
	src := newArtifactStore(a, b)
	r := newRuntime(t, Config{Artifacts: src, IdleModules: 1})
	ma := load(t, r, runtime.Spec{Artifact: a})
	load(t, r, runtime.Spec{Artifact: b})
	if resident(r, ma) {
		t.Fatal("a not evicted")
	}
	gate := make(chan struct{})
	src.mu.Lock()
	src.gate = gate
	src.mu.Unlock()

	const n = 16
	errs := make(chan error, n+1)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inst, err := ma.NewInstance(context.Background())
			if err != nil {
				errs <- err
				return
			}
			defer inst.Close(context.Background())
			resp, err := inst.Handle(context.Background(), get("/", ""))
			if err == nil && resp.Status != 200 {
				err = fmt.Errorf("status %d", resp.Status)
			}
			errs <- err
		}()
	}
	quitter, quit := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := ma.NewInstance(quitter)
		if !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("the caller that gave up got %v, want context.Canceled", err)
		} else {
			err = nil
		}
		errs <- err
	}()
	waitFor(t, func() bool { return users(r, ma) == n+1 })
	quit()
	waitFor(t, func() bool { return users(r, ma) == n })
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := src.count(a); got != 1 {
		t.Fatalf("%d fetches for %d concurrent first requests, want 1", got, n)
	}
	if u := users(r, ma); u != 0 {
		t.Fatalf("%d users left after every instance closed", u)
	}
}

// TestIdleBudget: at most IdleModules unused codes stay compiled, least
// recently used evicted first; a code in use is never evicted; without an
// artifact source nothing is.
func TestIdleBudget(t *testing.T) {
	var arts [][]byte
	for i := range 8 {
		arts = append(arts, distinctMinimal(uint32(100+i)))
	}
	src := newArtifactStore(arts...)
	r := newRuntime(t, Config{Artifacts: src, IdleModules: 3})
	var mods []runtime.Module
	for _, a := range arts[:4] {
		mods = append(mods, load(t, r, runtime.Spec{Artifact: a}))
	}
	busy := instance(t, mods[0]) // reloads mods[0], evicted by the 4th load
	// A module Load refuses never counts as idle: it evicts nothing.
	evicted := r.evicted.Load()
	both := &wasmbin.Module{Types: []wasmbin.FuncType{tVoid, tAlloc, tHandle}, MemoryPages: 1,
		Funcs: []wasmbin.Func{{Type: 0}, {Type: 1, Body: wasmbin.I32Const(0)}, {Type: 2, Body: wasmbin.I64Const(0)}},
		Exports: []wasmbin.Export{{Name: "memory", Kind: wasmbin.KindMemory}, {Name: "_start", Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0}, {Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2}}}
	if _, err := r.Load(context.Background(), runtime.Spec{App: "a", Function: "f", Artifact: both.Encode(), Limits: complete(runtime.Limits{})}); !errors.Is(err, runtime.ErrInvalidModule) {
		t.Fatalf("a module exporting both _start and %s loaded: %v", wire.ExportHandle, err)
	}
	if n := r.evicted.Load(); n != evicted {
		t.Fatalf("a refused module evicted %d idle ones", n-evicted)
	}
	for _, a := range arts[4:] {
		mods = append(mods, load(t, r, runtime.Spec{Artifact: a}))
	}
	var got []bool
	for _, m := range mods {
		got = append(got, resident(r, m))
	}
	want := []bool{true, false, false, false, false, true, true, true}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("resident %v, want %v (the one in use and the 3 most recent idle)", got, want)
	}
	if resp := mustHandle(t, busy, get("/", "")); resp.Status != 200 {
		t.Fatalf("instance in use: %d", resp.Status)
	}
	// Using an idle code makes it the most recently used.
	busy.Close(context.Background())
	if !resident(r, mods[0]) || resident(r, mods[5]) {
		t.Fatal("closing the last instance did not keep its code as the most recently used")
	}

	keep := newRuntime(t, Config{IdleModules: 1})
	for _, a := range arts[:3] {
		if m := load(t, keep, runtime.Spec{Artifact: a}); !resident(keep, m) {
			t.Fatal("evicted without an artifact source to reload from")
		}
	}
	if n := keep.evicted.Load(); n != 0 {
		t.Fatalf("%d evictions without an artifact source", n)
	}
}

// TestReloadFailure: a reload that cannot get the artifact fails the
// instance with a reason, and the next one tries again.
func TestReloadFailure(t *testing.T) {
	a, b := distinctMinimal(11), distinctMinimal(12)
	src := newArtifactStore(a, b)
	r := newRuntime(t, Config{Artifacts: src, IdleModules: 1})
	ma := load(t, r, runtime.Spec{Artifact: a})
	load(t, r, runtime.Spec{Artifact: b})
	src.mu.Lock()
	src.err = errors.New("object store unavailable")
	src.mu.Unlock()
	_, err := ma.NewInstance(context.Background())
	if err == nil || !strings.Contains(err.Error(), "reload compiled code") || !strings.Contains(err.Error(), "object store unavailable") {
		t.Fatalf("err = %v, want the reload's failure and its cause", err)
	}
	src.mu.Lock()
	src.err = nil
	src.bytes[shaOf(a)] = b // wrong bytes under a's digest
	src.mu.Unlock()
	if _, err := ma.NewInstance(context.Background()); err == nil || !strings.Contains(err.Error(), "do not match their digest") {
		t.Fatalf("err = %v, want the digest mismatch", err)
	}
	src.mu.Lock()
	src.bytes[shaOf(a)] = a
	src.mu.Unlock()
	if resp := mustHandle(t, instance(t, ma), get("/", "")); resp.Status != 200 {
		t.Fatalf("after the store came back: %d", resp.Status)
	}
	// A closed module's instances are refused, not reloaded.
	ma.Close(context.Background())
	if _, err := ma.NewInstance(context.Background()); !errors.Is(err, errCodeReleased) {
		t.Fatalf("instance of a closed module: %v", err)
	}
}

// waitFor polls cond every millisecond for up to 10s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}
