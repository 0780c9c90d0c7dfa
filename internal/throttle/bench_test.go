package throttle

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

func benchLimiter(b *testing.B, p Policy) *Limiter {
	l, err := NewLimiter(p, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.Close)
	return l
}

// BenchmarkAcquireRelease is one invocation's cost on an uncontended
// limiter: Acquire then Release, one goroutine.
func BenchmarkAcquireRelease(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		p    Policy
		keys int
	}{
		{"none", Policy{}, 1},
		{"max", Policy{MaxConcurrency: 100}, 1},
		{"key", Policy{MaxConcurrency: 100, KeyConcurrency: 10}, 1},
		{"key+rate", Policy{MaxConcurrency: 100, KeyConcurrency: 10, Rate: 1 << 30, Per: time.Second}, 1},
		{"key+rate/1k-keys", Policy{MaxConcurrency: 100, KeyConcurrency: 10, Rate: 1 << 30, Per: time.Second}, 1000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := benchLimiter(b, bc.p)
			keys := make([]string, bc.keys)
			for i := range keys {
				keys[i] = "tenant-" + strconv.Itoa(i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				p, err := l.Acquire(ctx, keys[i%len(keys)], 5)
				if err != nil {
					b.Fatal(err)
				}
				p.Release()
				i++
			}
		})
	}
}

// BenchmarkAcquireReleaseParallel runs Acquire/Release from every P at
// once; with max concurrency 4 most calls wait for a slot.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		p    Policy
	}{
		{"none", Policy{}},
		{"max-unreached", Policy{MaxConcurrency: 1 << 20}},
		{"max-4", Policy{MaxConcurrency: 4}},
		{"key-1/64-keys", Policy{KeyConcurrency: 1}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l := benchLimiter(b, bc.p)
			var n atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(8)
			b.RunParallel(func(pb *testing.PB) {
				key := "tenant-" + strconv.Itoa(int(n.Add(1)%64))
				for pb.Next() {
					p, err := l.Acquire(ctx, key, 5)
					if err != nil {
						b.Fatal(err)
					}
					p.Release()
				}
			})
		})
	}
}

func TestNoPolicyDoesNotAllocate(t *testing.T) {
	ctx := context.Background()
	for _, p := range []Policy{{}, {MaxConcurrency: 10}, {MaxConcurrency: 10, KeyConcurrency: 2, Rate: 1000, Per: time.Second}} {
		l, _ := NewLimiter(p, nil)
		mustAcquire(t, l, "k").Release() // the key's state exists
		if n := testing.AllocsPerRun(100, func() {
			pm, _ := l.Acquire(ctx, "k", 5)
			pm.Release()
		}); n != 0 && p.Rate == 0 {
			t.Errorf("%+v: %v allocations per Acquire/Release", p, n)
		}
		l.Close()
	}
}
