package workflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Journaled effects (RATIONALE.md "Workflow effects: journaled with the
// step, applied by the packer"). A step that asks for it (wf_step_effects)
// has its KV writes and publishes buffered here while it runs instead of
// made at once; they ride in the step's end entry, so they are committed in the same pack as
// the step's outcome, or not at all. The packer applies a pack's effects
// after its commit and before anything else sees the pack (before its
// changes enter memory, so before the materializer can write their views
// and before StepEnd returns to the guest); a replay at start applies
// again those of every pack whose run's views do not show it, each with
// the idempotency key (Nats-Msg-Id) of its place in the log (a publish:
// its event's source and id), so a write applied before a crash is a
// duplicate within the bucket's (topic's) duplicate window.

// Effect operations (Effect.Op).
const (
	EffectKVPut    = "kv_put"
	EffectKVDelete = "kv_delete"
	EffectPublish  = "publish"
)

// Effect is one write to platform state made inside a journaled step.
type Effect struct {
	Op     string `json:"op"`
	Bucket string `json:"bucket,omitempty"`
	Key    string `json:"key,omitempty"`
	Value  []byte `json:"value,omitempty"`
	// TTLMS is a put's per-key TTL in milliseconds (0: none).
	TTLMS int64 `json:"ttl_ms,omitempty"`
	// Topic and Event are a publish's topic and event (CloudEvents JSON,
	// its source, id and traceparent fixed when it was buffered: a
	// publish applied again is a duplicate of the same source and id).
	Topic string          `json:"topic,omitempty"`
	Event json.RawMessage `json:"event,omitempty"`
}

// EffectApplier applies a committed step's effects to their buckets and
// topics; the server implements it. ApplyEffect writes a KV effect with
// id as its idempotency key: a second write with the same id within the
// bucket's duplicate window is a duplicate and writes nothing. A publish
// is idempotent by its event's source and id (the topic's duplicate
// window).
type EffectApplier interface {
	ApplyEffect(ctx context.Context, app string, e Effect, id string) error
}

// ErrNotJournaled answers BufferEffect's callers that may not make a
// write inside a journaled step (a compare-and-swap).
var ErrNotJournaled = errors.New("workflow: this write cannot be journaled")

// stepEffects are the effects of the journaled step running now.
type stepEffects struct {
	pos  int
	effs []Effect
}

// JournalEffects makes the KV writes and publishes of the step attempt at
// pos (begun by StepBegin, running now) and of its later attempts
// journaled: buffered until the step ends, committed with its outcome,
// applied once.
func (e *Engine) JournalEffects(app, invocation string, pos int) error {
	a, err := e.activation(app, invocation)
	if err != nil {
		return err
	}
	if a.stop != nil {
		return a.stop
	}
	if a.begun != pos+1 {
		return fmt.Errorf("%w: effects journaled at position %d, where no step is running", ErrBadStep, pos)
	}
	a.fx = &stepEffects{pos: pos}
	return nil
}

// journaling returns the effects of the journaled step of invocation
// running now, or nil.
func (e *Engine) journaling(app, invocation string) *stepEffects {
	if !strings.HasPrefix(invocation, "wf-") {
		// Not an activation (drive.go names them "wf-<run>-<n>"): every
		// KV call of every function asks, so it must not take e.mu.
		return nil
	}
	a, err := e.activation(app, invocation)
	if err != nil || a.stop != nil || a.fx == nil || a.begun != a.fx.pos+1 {
		return nil
	}
	return a.fx
}

// BufferEffect buffers eff when invocation is an activation running a
// journaled step, and reports whether it did; otherwise the caller writes
// eff itself.
func (e *Engine) BufferEffect(app, invocation string, eff Effect) bool {
	fx := e.journaling(app, invocation)
	if fx == nil {
		e.settleBefore(app, invocation)
		return false
	}
	fx.effs = append(fx.effs, eff)
	return true
}

// InJournaledStep reports whether invocation is running a journaled step.
func (e *Engine) InJournaledStep(app, invocation string) bool {
	if e.journaling(app, invocation) != nil {
		return true
	}
	e.settleBefore(app, invocation)
	return false
}

// settleBefore makes what invocation's run did so far durable (its start
// and step ends kept back: StartLazy, StepEnd) before the activation
// writes to a bucket or a topic at once outside a step (in the workflow's
// body), which others see and no step's idempotency key covers. Not an
// activation: nothing to do. A failure stops the activation (its further
// workflow calls answer it).
func (e *Engine) settleBefore(app, invocation string) {
	if !strings.HasPrefix(invocation, "wf-") {
		return
	}
	a, err := e.activation(app, invocation)
	if err != nil || a.stop != nil || a.begun != 0 {
		// Inside a step, what the step writes is its effect, made again
		// with the same idempotency key if the step runs again: the
		// steps before it are durable (StepBegin), the run's lazy start
		// may stay back (StartLazy).
		return
	}
	if err := e.j.durable(e.ctx, app, a.r.id, false); err != nil {
		e.logger.Warn("workflow run: committing its changes before a write failed", "app", app, "run", a.r.id, "error", err)
		a.stop = err
	}
}

// BufferedKV is the last buffered write of bucket/key in invocation's
// journaled step: ok is false when there is none (read the bucket), else
// the value written, or deleted.
func (e *Engine) BufferedKV(app, invocation, bucket, key string) (value []byte, deleted, ok bool) {
	fx := e.journaling(app, invocation)
	if fx == nil {
		return nil, false, false
	}
	for i := len(fx.effs) - 1; i >= 0; i-- {
		if f := fx.effs[i]; f.Op != EffectPublish && f.Bucket == bucket && f.Key == key {
			return f.Value, f.Op == EffectKVDelete, true
		}
	}
	return nil, false, false
}

// effectID is the idempotency key of the n-th effect of the pack at log
// sequence seq.
func effectID(app string, seq uint64, n int) string {
	return fmt.Sprintf("nimbus-wfx.%s.%d.%d", app, seq, n)
}

// applyEffects applies the effects of the pack at seq, in order: those of
// runs whose views show the pack (skip reports it) were applied before.
// A write that keeps failing is logged and dropped: the pack is committed
// and the log moves on.
func (a *appLog) applyEffects(ctx context.Context, seq uint64, changes []packChange, skip func(run string) bool) {
	n := 0
	for _, c := range changes {
		skipped := false
		checked := false
		for _, ent := range c.Entries {
			for _, eff := range ent.Effects {
				id := effectID(a.app, seq, n)
				n++
				if !checked {
					checked = true
					skipped = skip != nil && skip(c.Run)
				}
				if skipped {
					continue
				}
				a.applyEffect(ctx, c.Run, eff, id)
			}
		}
	}
}

func (a *appLog) applyEffect(ctx context.Context, run string, eff Effect, id string) {
	if a.j.fx == nil {
		a.j.logger.Error("workflow effect dropped: no effect applier in this process", "app", a.app, "run", run, "bucket", eff.Bucket, "key", eff.Key)
		return
	}
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := a.j.fx.ApplyEffect(ctx, a.app, eff, id)
		if err == nil {
			return
		}
		if attempt == 5 || ctx.Err() != nil {
			a.j.logger.Error("workflow effect dropped: it was committed with its step but could not be applied", "app", a.app, "run", run,
				"op", eff.Op, "bucket", eff.Bucket, "key", eff.Key, "id", id, "error", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}

// viewShows reports whether the run's materialized journal holds the pack
// at seq (then its effects were applied: a pack enters memory, hence the
// views, only after them).
func (a *appLog) viewShows(ctx context.Context, run string, seq uint64) bool {
	m, err := a.view.GetLastMsgForSubject(ctx, journalSubject(a.app, run))
	if err != nil {
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			a.j.logger.Warn("workflow effects: reading a journal view", "app", a.app, "run", run, "error", err)
		}
		return false
	}
	var v viewJournal
	if err := json.Unmarshal(m.Data, &v); err != nil || len(v.Seqs) == 0 {
		return false
	}
	return v.Seqs[len(v.Seqs)-1] >= seq
}
