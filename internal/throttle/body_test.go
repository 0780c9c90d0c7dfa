package throttle_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nimbus-dev/nimbus/internal/throttle"
)

// TestBudget: bodies are held node-wide and per app; a body that would
// pass either budget is refused and adds nothing; bytes past a body's
// first SmallBody may use only seven eighths of each budget, so small
// bodies still fit when large ones have filled theirs; Release gives
// every byte back.
func TestBudget(t *testing.T) {
	const kib = 1 << 10
	b := throttle.NewBudget(throttle.BudgetConfig{Node: 1024 * kib, App: 512 * kib})
	if node, app := b.Limits(); node != 1024*kib || app != 512*kib {
		t.Fatalf("limits %d %d", node, app)
	}

	// App a: large bodies fill seven eighths of its 512 KiB (448 KiB).
	big := b.Hold("a")
	if err := big.Grow(400 * kib); err != nil {
		t.Fatal(err)
	}
	refused := b.Hold("a")
	err := refused.Grow(100 * kib)
	var be *throttle.BudgetError
	if !errors.As(err, &be) || !errors.Is(err, throttle.ErrOverBudget) || be.Scope != throttle.ScopeApp || be.App != "a" || !be.Fits || refused.Bytes() != 0 {
		t.Fatalf("large body past the app's usable budget: %v %+v, holds %d", err, be, refused.Bytes())
	}
	if !strings.Contains(err.Error(), `app "a"'s budget for request bodies held in memory (512KiB) is full; retry later`) {
		t.Errorf("message: %s", err)
	}
	// A small body of the same app still fits: the reserve.
	small := b.Hold("a")
	if err := small.Grow(throttle.SmallBody); err != nil {
		t.Fatalf("small body with the app's large budget full: %v", err)
	}
	// ... but past SmallBody it is a large body again.
	if err := small.Grow(1); err == nil {
		t.Fatal("a small body grew past SmallBody into the reserve")
	}
	if node, app := b.Used("a"); node != 400*kib+throttle.SmallBody || app != node {
		t.Fatalf("used %d, app %d", node, app)
	}

	// Another app has its own budget, within the node's: 896 KiB usable
	// by large bodies node-wide, 464 KiB of it held.
	other := b.Hold("b")
	if err := other.Grow(400 * kib); err != nil {
		t.Fatalf("other app: %v", err)
	}
	third := b.Hold("c")
	err = third.Grow(100 * kib)
	if !errors.As(err, &be) || be.Scope != throttle.ScopeNode || !be.Fits {
		t.Fatalf("large body past the node's usable budget: %v", err)
	}

	// A body larger than an empty budget allows cannot fit: retrying
	// does not help.
	err = b.Hold("d").Grow(500 * kib)
	if !errors.As(err, &be) || be.Fits || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("body over the usable app budget: %v", err)
	}

	for _, h := range []*throttle.Hold{big, small, other, third, refused} {
		h.Release()
		h.Release() // idempotent
	}
	if node, app := b.Used("a"); node != 0 || app != 0 {
		t.Fatalf("after release: used %d, app %d", node, app)
	}
	var nilBudget *throttle.Budget
	if err := nilBudget.Hold("a").Grow(1 << 40); err != nil {
		t.Fatalf("nil budget refused: %v", err)
	}
}

// TestBodyRateDeadline: a body must arrive within its grace plus its
// bytes at the minimum rate.
func TestBodyRateDeadline(t *testing.T) {
	r := throttle.BodyRate{}.WithDefaults()
	if r.Grace != throttle.DefaultBodyGrace || r.MinRate != throttle.DefaultBodyMinRate || r.Off() {
		t.Fatalf("defaults %+v", r)
	}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r = throttle.BodyRate{Grace: time.Second, MinRate: 1000}
	if got := r.Deadline(start, 0); !got.Equal(start.Add(time.Second)) {
		t.Errorf("deadline of the first byte %s", got)
	}
	if got := r.Deadline(start, 5000); !got.Equal(start.Add(6 * time.Second)) {
		t.Errorf("deadline after 5000 bytes at 1000 B/s %s", got)
	}
	if !(throttle.BodyRate{MinRate: -1}).WithDefaults().Off() {
		t.Error("a negative rate is not off")
	}
}
