package throttle

import (
	"errors"
	"fmt"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// Priorities run from MinPriority (lowest) to MaxPriority (highest); a
// function without a declared priority has DefaultPriority.
const (
	MinPriority     = 0
	MaxPriority     = 9
	DefaultPriority = model.DefaultPriority
	levels          = MaxPriority + 1
)

// Policy is the flow control of one function. The zero Policy limits
// nothing, and a Limiter built from it costs a branch per invocation.
type Policy struct {
	// MaxConcurrency caps invocations of the function in flight at once;
	// 0: no cap.
	MaxConcurrency int
	// KeyConcurrency caps invocations in flight at once per key; 0: no cap.
	KeyConcurrency int
	// Rate caps starts per key: at most Rate invocations start in any
	// window of length Per (a sliding window, not a token bucket: a burst
	// of Rate may start at once, and the next start waits until the
	// window has moved past the oldest of them). 0: no cap.
	Rate int
	Per  time.Duration
	// Debounce, when above 0, runs only the last request of a burst per
	// key, once the key has been quiet for Debounce; the others are
	// answered ErrSuperseded as soon as a later request arrives.
	Debounce time.Duration
}

// IsZero reports whether p limits nothing.
func (p Policy) IsZero() bool { return p == Policy{} }

// Validate reports what is wrong with p, if anything.
func (p Policy) Validate() error {
	var errs []error
	if p.MaxConcurrency < 0 {
		errs = append(errs, fmt.Errorf("max concurrency %d is negative", p.MaxConcurrency))
	}
	if p.KeyConcurrency < 0 {
		errs = append(errs, fmt.Errorf("key concurrency %d is negative", p.KeyConcurrency))
	}
	if p.Rate < 0 {
		errs = append(errs, fmt.Errorf("rate %d is negative", p.Rate))
	}
	if p.Rate > 0 && p.Per <= 0 {
		errs = append(errs, fmt.Errorf("rate %d per %s: the period must be positive", p.Rate, p.Per))
	}
	if p.Rate == 0 && p.Per != 0 {
		errs = append(errs, fmt.Errorf("period %s without a rate", p.Per))
	}
	if p.Debounce < 0 {
		errs = append(errs, fmt.Errorf("debounce %s is negative", p.Debounce))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("flow policy: %w", err)
	}
	return nil
}

// PolicyOf returns the Policy of a function's flow record (nil: the zero
// Policy).
func PolicyOf(f *model.Flow) Policy {
	if f == nil {
		return Policy{}
	}
	p := Policy{
		MaxConcurrency: f.MaxConcurrency,
		KeyConcurrency: f.KeyConcurrency,
		Debounce:       time.Duration(f.DebounceMS) * time.Millisecond,
	}
	if f.Rate != nil {
		p.Rate, p.Per = f.Rate.Limit, time.Duration(f.Rate.PeriodMS)*time.Millisecond
	}
	return p
}

// PriorityOf returns the priority of a function's invocations: its flow's
// priority, or DefaultPriority when it declares no flow.
func PriorityOf(f *model.Flow) int {
	if f == nil {
		return DefaultPriority
	}
	return int(clampPriority(f.Priority))
}

func clampPriority(p int) int8 {
	switch {
	case p < MinPriority:
		return MinPriority
	case p > MaxPriority:
		return MaxPriority
	}
	return int8(p)
}
