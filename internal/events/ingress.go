package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Defaults of IngressOptions.
const (
	// DefaultMaxLag is how many events an app's triggers may have waiting
	// (not yet delivered, or delivered and not yet acknowledged) before
	// Ingress refuses its publishes.
	DefaultMaxLag = 100_000
	// DefaultMaxWindowEvents is how many events with an id a node may
	// have stored within the duplicate window before Ingress refuses
	// publishes: the server holds each id in memory for the window (about
	// 140 bytes of live heap each, so about 140 MB for the default).
	DefaultMaxWindowEvents = 1_000_000
	// DefaultLagInterval is how old an app's lag may be before a publish
	// measures it again.
	DefaultLagInterval = time.Second
)

// Limits of a BackpressureError.
const (
	// LimitLag is an app's triggers lagging behind (IngressOptions.MaxLag).
	LimitLag = "lag"
	// LimitWindow is the node's ids in the duplicate window
	// (IngressOptions.MaxWindowEvents).
	LimitWindow = "window"
)

// ErrBackpressure matches every *BackpressureError: a publish refused
// because delivery is behind or the node holds too many ids; nothing was
// stored, and the same publish may be retried after RetryAfter.
var ErrBackpressure = errors.New("events: back-pressure")

// BackpressureError is a publish refused by Ingress. Nothing of it was
// stored.
type BackpressureError struct {
	App        string
	Limit      string        // LimitLag or LimitWindow
	Value      int           // the app's lag, or the node's ids in the window
	Max        int           // the limit it is over
	Window     time.Duration // LimitWindow: the duplicate window
	RetryAfter time.Duration // when the same publish may be accepted
}

func (e *BackpressureError) Error() string {
	if e.Limit == LimitLag {
		return fmt.Sprintf("app %q has %d events waiting for delivery to its triggers (limit %d): publish again once they catch up (Retry-After), or raise the node's --events-max-lag",
			e.App, e.Value, e.Max)
	}
	return fmt.Sprintf("this node stored %d events within the %s duplicate window (limit %d): publish again after Retry-After, or raise the node's --events-max-window-events",
		e.Value, e.Window, e.Max)
}

// Is reports whether target is ErrBackpressure.
func (e *BackpressureError) Is(target error) bool { return target == ErrBackpressure }

// IngressOptions configure an Ingress. The zero value is usable.
type IngressOptions struct {
	// MaxLag bounds, per app, the events waiting for its triggers (async
	// invocations aside) beyond which publishes are refused. Optional:
	// default DefaultMaxLag (100,000); negative: no limit.
	MaxLag int
	// MaxWindowEvents bounds the events with an id the node stored within
	// the duplicate window (Log.WindowEvents) beyond which publishes are
	// refused. Optional: default DefaultMaxWindowEvents (1,000,000);
	// negative: no limit.
	MaxWindowEvents int
	// LagInterval is how long a measured lag is used before a publish
	// measures it again. Optional: default 1s.
	LagInterval time.Duration
	// Now is the clock of the lag's age. Optional: default time.Now.
	Now func() time.Time
	// Logger receives failures to measure a lag. Optional: default
	// slog.Default().
	Logger *slog.Logger
}

// Ingress is the back-pressure of publishes: Admit refuses one while the
// app's triggers lag more than MaxLag events behind, or while the node
// holds more than MaxWindowEvents ids in the duplicate window. Only what
// users publish goes through it (HTTP ingress, the API, functions);
// dead letters, cron ticks, bucket changes and replays are never refused,
// but their ids count. It is safe for concurrent use.
type Ingress struct {
	log    *Log
	d      *Dispatcher
	opts   IngressOptions
	logger *slog.Logger

	mu   sync.Mutex
	lags map[string]*lagSample // app -> its last measured lag
}

// lagSample is an app's lag as last measured; mu serializes measuring it,
// so an app's lag is asked of the server at most once per LagInterval.
type lagSample struct {
	mu  sync.Mutex
	lag int
	at  time.Time // zero: never measured
}

// NewIngress returns the back-pressure of publishes to log, whose lags
// d's triggers report.
func NewIngress(log *Log, d *Dispatcher, opts IngressOptions) *Ingress {
	if opts.MaxLag == 0 {
		opts.MaxLag = DefaultMaxLag
	}
	if opts.MaxWindowEvents == 0 {
		opts.MaxWindowEvents = DefaultMaxWindowEvents
	}
	if opts.LagInterval <= 0 {
		opts.LagInterval = DefaultLagInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Ingress{log: log, d: d, opts: opts, logger: opts.Logger.With("component", "events.ingress"), lags: map[string]*lagSample{}}
}

// Admit reports whether n events may be published to app now: nil, or a
// *BackpressureError saying which limit is exceeded and when to retry.
// The lag it compares is at most LagInterval old; a lag that cannot be
// measured admits (back-pressure never fails a publish on its own).
func (in *Ingress) Admit(ctx context.Context, app string, n int) error {
	if max := in.opts.MaxWindowEvents; max > 0 {
		now := in.log.now()
		if held := in.log.dedupe.count(now); held+n > max && held > 0 {
			return &BackpressureError{App: app, Limit: LimitWindow, Value: held, Max: max, Window: in.log.window,
				RetryAfter: in.log.dedupe.retryAfter(now, held+n-max)}
		}
	}
	if max := in.opts.MaxLag; max > 0 && in.d != nil {
		if lag := in.lag(ctx, app); lag > max {
			return &BackpressureError{App: app, Limit: LimitLag, Value: lag, Max: max, RetryAfter: in.opts.LagInterval}
		}
	}
	return nil
}

// Forget drops what Ingress keeps of app (the app was deleted).
func (in *Ingress) Forget(app string) {
	in.mu.Lock()
	delete(in.lags, app)
	in.mu.Unlock()
}

// lag returns app's lag, measured again if the last measure is older than
// LagInterval. Concurrent publishes of one app wait for one measure.
func (in *Ingress) lag(ctx context.Context, app string) int {
	in.mu.Lock()
	s := in.lags[app]
	if s == nil {
		s = &lagSample{}
		in.lags[app] = s
	}
	in.mu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := in.opts.Now()
	if !s.at.IsZero() && now.Sub(s.at) < in.opts.LagInterval {
		return s.lag
	}
	lag, err := in.d.Lag(ctx, app)
	if err != nil {
		if ctx.Err() == nil {
			in.logger.Warn("measure the lag of an app's triggers", "app", app, "error", err)
		}
		// Keep the last measure; try again after an interval, not on
		// every publish.
		s.at = now
		return s.lag
	}
	s.lag, s.at = lag, now
	return lag
}

// Lag returns how many events app's triggers (its async trigger aside)
// have waiting on this node's consumers: not yet delivered, plus delivered
// and not yet acknowledged. It asks the server once per trigger. The
// server counts messages; a message that is a pack holds many events, so
// each trigger's count is multiplied by the entries per message appended
// lately to its topic (Log.EntriesPerMessage): an estimate when a topic
// gets packs and single events mixed.
func (d *Dispatcher) Lag(ctx context.Context, app string) (int, error) {
	d.syncMu.Lock()
	var ts []*trigger
	for _, t := range d.loops {
		if t.spec.App == app && !t.spec.Async {
			ts = append(ts, t)
		}
	}
	d.syncMu.Unlock()
	lag := 0
	for _, t := range ts {
		info, err := t.cons.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("lag of trigger %s/%s: %w", t.spec.Function, t.spec.ID, err)
		}
		per := d.log.EntriesPerMessage(SubjectFor(d.log.prefix, t.spec.App, t.spec.Topic))
		lag += int(float64(int(info.NumPending)+info.NumAckPending) * per)
	}
	return lag, nil
}
