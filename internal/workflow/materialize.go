package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/nimbus-dev/nimbus/internal/store"
)

// The materializer writes the changes the log holds in memory to the
// runs' views (journal.go "Storage layout"): every run's new entries as
// one journal message and its last record as one record message, as
// pipelined plain publishes to the views' stream, which is in async
// persist mode: no fsync per message and no atomic batch (whose staging
// store costs the server ~20-35 ms per batch on this disk, bench/README.md
// "workflow"). Nothing is lost when the node dies before the server wrote
// or synced them: the log keeps every pack for logKeep after it was
// materialized, and a start replays and materializes again what the log
// keeps.

const (
	// defaultMatDelay is how long the materializer lets packs gather, at
	// most (journal.matDelay); matFull changes waiting make it start at
	// once. A run of a few steps is ~5 changes and 2 views.
	defaultMatDelay = 200 * time.Millisecond
	matFull         = 2000
	// matWindow bounds the view publishes awaiting their acks.
	matWindow = 512
	// defaultLogKeep is how long the log keeps a pack after its views
	// were written (journal.logKeep): past the server's sync of the views
	// (store.SyncInterval; the first sync of a stream comes at most that
	// long after it opened, then one every interval).
	defaultLogKeep = 3 * store.SyncInterval
	// purgeEvery is how often the materializer purges the log, at most.
	purgeEvery = time.Second
)

// materializer writes views until the app closes: once matFull changes
// wait, or journal.matDelay after the first of them.
func (a *appLog) materializer() {
	var done []matPoint // log sequences materialized, oldest first
	var lastPurge time.Time
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-a.ctx.Done():
			return
		case <-a.matKick:
		}
		deadline := time.NewTimer(a.j.matDelay)
	gather:
		for !a.full() {
			select {
			case <-a.ctx.Done():
				deadline.Stop()
				return
			case <-deadline.C:
				break gather
			case <-a.matKick:
			}
		}
		deadline.Stop()
		for a.ctx.Err() == nil {
			upto, err := a.materializeOnce(a.ctx)
			if err != nil && a.ctx.Err() != nil {
				return // closing: the log keeps the changes
			}
			if err != nil {
				a.j.logger.Warn("workflow views: materialize failed; the log keeps the changes", "app", a.app, "error", err)
				select {
				case <-a.ctx.Done():
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, 10*time.Second)
				break
			}
			backoff = 100 * time.Millisecond
			if upto > 0 {
				done = append(done, matPoint{time.Now(), upto})
			}
			if upto == 0 || !a.full() {
				break // the rest waits for its own delay
			}
		}
		if now := time.Now(); now.Sub(lastPurge) >= purgeEvery {
			done = a.purge(now, done)
			lastPurge = now
		}
		a.mu.Lock()
		if a.unmat > 0 || len(done) > 0 {
			a.kickMat() // materialize the rest, purge later
		}
		a.mu.Unlock()
	}
}

// matPoint: the log was materialized up to seq at t.
type matPoint struct {
	t   time.Time
	seq uint64
}

func (a *appLog) full() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.unmat >= matFull
}

// matRun is what one run has to materialize.
type matRun struct {
	id   string
	rec  *Run
	ver  uint64
	ents []Entry
	seqs []uint64
}

// materializeOnce writes the views of every committed change in memory
// and drops them from memory. It returns the log sequence materialized,
// 0 when there was nothing to do.
func (a *appLog) materializeOnce(ctx context.Context) (uint64, error) {
	a.viewMu.Lock()
	defer a.viewMu.Unlock()
	a.mu.Lock()
	upto := a.lastSeq
	if a.unmat == 0 {
		a.mu.Unlock()
		return 0, nil
	}
	runs := make([]matRun, 0, len(a.runs))
	for id, o := range a.runs {
		if o.rec == nil && len(o.ents) == 0 {
			continue
		}
		runs = append(runs, matRun{id: id, rec: o.rec, ver: o.recVer, ents: o.ents[:len(o.ents):len(o.ents)], seqs: o.seqs[:len(o.seqs):len(o.seqs)]})
	}
	unmat := a.unmat
	a.mu.Unlock()

	p := a.j.viewPublisher(ctx)
	maxMsg := a.j.c.MaxWriteBytes() / 2
	for _, r := range runs {
		for i := 0; i < len(r.ents); {
			v := viewJournal{}
			n := 0
			for ; i < len(r.ents) && (len(v.Entries) == 0 || n < maxMsg); i++ {
				n += len(r.ents[i].Result) + len(r.ents[i].Input) + len(r.ents[i].Error) + 256
				v.Entries = append(v.Entries, r.ents[i])
				v.Seqs = append(v.Seqs, r.seqs[i])
			}
			b, err := json.Marshal(&v)
			if err != nil {
				return 0, err
			}
			p.publish(&nats.Msg{Subject: journalSubject(a.app, r.id), Data: b})
		}
		if r.rec != nil {
			w, err := recordWriteAt(r.rec, r.ver)
			if err != nil {
				return 0, err
			}
			p.publish(&nats.Msg{Subject: w.Subject, Header: w.Header, Data: w.Data})
		}
	}
	if err := p.wait(); err != nil {
		return 0, fmt.Errorf("workflow views of %s: %w", a.app, err)
	}

	a.mu.Lock()
	for _, r := range runs {
		o := a.runs[r.id]
		if o == nil {
			continue
		}
		// Only appends happened meanwhile: what was written is a prefix.
		o.ents, o.seqs = o.ents[len(r.ents):], o.seqs[len(r.seqs):]
		if len(o.ents) == 0 {
			o.ents, o.seqs = nil, nil
		}
		if o.rec != nil && o.recVer <= upto {
			o.rec, o.recVer = nil, 0
		}
		a.dropIdleLocked(r.id, o)
	}
	a.matSeq = upto
	a.matGen++
	a.unmat -= unmat
	a.mu.Unlock()
	return upto, nil
}

// viewPublisher pipelines publishes to the views' stream: at most
// matWindow awaiting their acks.
type viewPublisher struct {
	j    *journal
	ctx  context.Context
	futs []jetstream.PubAckFuture
	err  error
}

func (j *journal) viewPublisher(ctx context.Context) *viewPublisher {
	return &viewPublisher{j: j, ctx: ctx}
}

func (p *viewPublisher) publish(m *nats.Msg) {
	if p.err != nil {
		return
	}
	if len(p.futs) >= matWindow {
		if p.err = p.wait(); p.err != nil {
			return
		}
	}
	f, err := p.j.ajs.PublishMsgAsync(m)
	if err != nil {
		p.err = err
		return
	}
	p.futs = append(p.futs, f)
	p.j.views.Add(1)
}

// wait waits for every ack.
func (p *viewPublisher) wait() error {
	timer := time.NewTimer(store.DefaultCommitTimeout)
	defer timer.Stop()
	for _, f := range p.futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			p.err = err
		case <-timer.C:
			p.err = fmt.Errorf("no ack within %s", store.DefaultCommitTimeout)
		case <-p.ctx.Done():
			p.err = p.ctx.Err()
		}
		if p.err != nil {
			break
		}
	}
	p.futs = p.futs[:0]
	return p.err
}

// purge deletes from the log the packs materialized more than
// journal.logKeep ago (the last pack always stays, so that the log's last
// sequence stays known), and returns the points not yet purged.
func (a *appLog) purge(now time.Time, done []matPoint) []matPoint {
	i := 0
	for i < len(done) && now.Sub(done[i].t) >= a.j.logKeep {
		i++
	}
	if i == 0 {
		return done
	}
	upto := done[i-1].seq
	ctx, cancel := context.WithTimeout(a.ctx, 10*time.Second)
	defer cancel()
	if err := a.log.Purge(ctx, jetstream.WithPurgeSequence(upto)); err != nil {
		a.j.logger.Warn("workflow log: purge", "app", a.app, "upto", upto, "error", err)
		return done
	}
	return done[i:]
}
