package server

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/capability"
	"github.com/nimbus-dev/nimbus/internal/gateway"
)

var _ api.AuditPlatform = (*Server)(nil)

// Audit returns the node's audit log (the API records control-plane calls
// in it and serves /api/v1/audit).
func (s *Server) Audit() api.AuditLog { return s.audit }

// denialQueue is how many function denials may wait for the audit log;
// past it they are dropped (and logged), so a function looping on a denied
// call never slows invocations down with audit writes.
const denialQueue = 1024

// auditDenials appends the functions' denials to the audit log from one
// goroutine, fed without blocking by OnDenied. The first denial of a kind
// (app, function, kind, what) in a window is an entry of its own, with its
// invocation; the repeats are counted and become one summary entry when
// the window ends (auditSummaryWindow), so a function denied on every
// invocation, or invoked in a flood through a public route, adds at most
// two entries per grant a minute. At most auditSummaryGroups kinds are
// tracked per window; denials of further kinds are counted in one entry.
type auditDenials struct {
	log    *audit.Log
	s      *Server
	ch     chan capability.Denial
	flushc chan chan struct{} // FlushDenials: end the window now
	wg     sync.WaitGroup
	closed chan struct{}

	// Owned by run: the kinds written in this window, and their repeats.
	repeats   map[denialKind]uint64
	overflow  uint64
	maxGroups int // auditSummaryGroups
}

// denialKind is what a summary counts.
type denialKind struct{ app, function, kind, what string }

func newAuditDenials(s *Server, log *audit.Log) *auditDenials {
	d := &auditDenials{log: log, s: s, ch: make(chan capability.Denial, denialQueue), flushc: make(chan chan struct{}),
		closed: make(chan struct{}), repeats: map[denialKind]uint64{}, maxGroups: auditSummaryGroups}
	d.wg.Add(1)
	go d.run()
	return d
}

// OnDenied queues d; it never blocks.
func (d *auditDenials) OnDenied(den capability.Denial) {
	select {
	case <-d.closed:
	case d.ch <- den:
	default:
		d.s.logger.Warn("audit: denial not recorded, the queue is full", "app", den.App, "function", den.Function, "kind", den.Kind, "capability", den.What)
	}
}

func (d *auditDenials) run() {
	defer d.wg.Done()
	t := time.NewTicker(auditSummaryWindow)
	defer t.Stop()
	drain := func() {
		for {
			select {
			case den := <-d.ch:
				d.record(den)
			default:
				return
			}
		}
	}
	for {
		select {
		case den := <-d.ch:
			d.record(den)
		case <-t.C:
			d.flush()
		case done := <-d.flushc:
			drain()
			d.flush()
			close(done)
		case <-d.closed:
			drain()
			d.flush()
			return
		}
	}
}

// record writes den if it is the first of its kind in the window, else
// counts it.
func (d *auditDenials) record(den capability.Denial) {
	k := denialKind{den.App, den.Function, den.Kind, den.What}
	if _, seen := d.repeats[k]; seen {
		d.repeats[k]++
		return
	}
	if len(d.repeats) >= d.maxGroups {
		d.overflow++
		return
	}
	d.repeats[k] = 0
	d.append(den.App, den.Function, denialAction(den.Kind), den.What, "invocation "+den.Invocation)
}

// flush writes a summary of each kind that repeated, and starts a new
// window.
func (d *auditDenials) flush() {
	keys := make([]denialKind, 0, len(d.repeats))
	for k, n := range d.repeats {
		if n > 0 {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b denialKind) int {
		return cmp.Or(cmp.Compare(a.app, b.app), cmp.Compare(a.function, b.function), cmp.Compare(a.kind, b.kind), cmp.Compare(a.what, b.what))
	})
	for _, k := range keys {
		n := d.repeats[k]
		d.append(k.app, k.function, denialAction(k.kind), k.what, fmt.Sprintf("%d more %s in the window since the first", n, plural(n, "denial")))
	}
	if d.overflow > 0 {
		if _, err := d.log.Append(context.Background(), audit.Entry{Actor: "node", Action: "capability.denied", Outcome: audit.OutcomeDenied,
			Detail: fmt.Sprintf("%d more %s of functions, of kinds past the first %d of the window", d.overflow, plural(d.overflow, "denial"), d.maxGroups)}); err != nil {
			d.s.logger.Error("audit entry not recorded", "action", "capability.denied", "error", err)
		}
	}
	clear(d.repeats)
	d.overflow = 0
}

func denialAction(kind string) string {
	if kind == "egress" {
		return "egress.blocked"
	}
	return "capability.denied"
}

func (d *auditDenials) append(app, function, action, what, detail string) {
	tenant := ""
	if head, err := d.s.reg.App(context.Background(), app); err == nil {
		tenant = head.TenantName()
	}
	if _, err := d.log.Append(context.Background(), audit.Entry{Actor: app + "/" + function, Tenant: tenant,
		Action: action, Target: what, Outcome: audit.OutcomeDenied, Detail: detail}); err != nil {
		d.s.logger.Error("audit entry not recorded", "action", action, "app", app, "error", err)
	}
}

// flushNow ends the window at once (tests); the denials queued before it
// are recorded first.
func (d *auditDenials) flushNow() {
	done := make(chan struct{})
	select {
	case d.flushc <- done:
		<-done
	case <-d.closed:
	}
}

// close records what is queued, writes the window's summaries and stops;
// later denials are dropped.
func (d *auditDenials) close() {
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	d.wg.Wait()
}

// Route-auth refusals are not recorded one by one: anyone on the network
// can send bad credentials, as fast as they like, and an audit log that
// denies deletes and purges must not be theirs to fill. They are counted
// per (app, function, route, answer) and each window ends with one
// route.denied entry per such group that had refusals, so the log grows
// with the routes under attack, not with the requests.
const (
	// auditSummaryWindow is how often counted refusals and repeated
	// denials are written.
	auditSummaryWindow = time.Minute
	// auditSummaryGroups bounds the groups counted per window; refusals
	// or denials past it are one more entry, counted only.
	auditSummaryGroups = 1000
)

// routeDenials counts route-auth refusals and writes their summaries.
type routeDenials struct {
	log       *audit.Log
	s         *Server
	now       func() time.Time
	maxGroups int // auditSummaryGroups

	mu       sync.Mutex
	groups   map[gateway.AuthDenial]*denialCount
	overflow uint64 // refusals past auditSummaryGroups in this window
	from     time.Time

	wg     sync.WaitGroup
	closed chan struct{}
}

type denialCount struct {
	n           uint64
	first, last time.Time
}

func newRouteDenials(s *Server, log *audit.Log) *routeDenials {
	d := &routeDenials{log: log, s: s, now: time.Now, maxGroups: auditSummaryGroups, groups: map[gateway.AuthDenial]*denialCount{}, closed: make(chan struct{})}
	d.wg.Add(1)
	go d.run()
	return d
}

// OnAuthDenied counts one refusal; it never waits for the store.
func (d *routeDenials) OnAuthDenied(den gateway.AuthDenial) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.from.IsZero() {
		d.from = now
	}
	switch c := d.groups[den]; {
	case c != nil:
		c.n++
		c.last = now
	case len(d.groups) < d.maxGroups:
		d.groups[den] = &denialCount{n: 1, first: now, last: now}
	default:
		d.overflow++
	}
}

func (d *routeDenials) run() {
	defer d.wg.Done()
	t := time.NewTicker(auditSummaryWindow)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			d.flush()
		case <-d.closed:
			d.flush()
			return
		}
	}
}

// flush writes one entry per group counted since the last flush, in a
// stable order, and starts a new window.
func (d *routeDenials) flush() {
	d.mu.Lock()
	groups, overflow, from := d.groups, d.overflow, d.from
	d.groups, d.overflow, d.from = map[gateway.AuthDenial]*denialCount{}, 0, time.Time{}
	d.mu.Unlock()
	keys := make([]gateway.AuthDenial, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b gateway.AuthDenial) int {
		return cmp.Or(cmp.Compare(a.App, b.App), cmp.Compare(a.Function, b.Function), cmp.Compare(a.Route, b.Route),
			cmp.Compare(a.Status, b.Status), cmp.Compare(a.Code, b.Code))
	})
	tenants := map[string]string{}
	for _, k := range keys {
		c := groups[k]
		tenant, ok := tenants[k.App]
		if !ok {
			if head, err := d.s.reg.App(context.Background(), k.App); err == nil {
				tenant = head.TenantName()
			}
			tenants[k.App] = tenant
		}
		d.append(audit.Entry{Actor: "gateway", Tenant: tenant, Action: "route.denied", Target: k.App + "/" + k.Function,
			Outcome: audit.OutcomeDenied, Detail: fmt.Sprintf("%d %s refused (%d %s) on %s from %s to %s",
				c.n, plural(c.n, "request"), k.Status, k.Code, k.Route, c.first.UTC().Format(time.RFC3339), c.last.UTC().Format(time.RFC3339))})
	}
	if overflow > 0 {
		d.append(audit.Entry{Actor: "gateway", Action: "route.denied", Outcome: audit.OutcomeDenied,
			Detail: fmt.Sprintf("%d more %s refused on routes past the first %d of the window, from %s", overflow, plural(overflow, "request"),
				d.maxGroups, from.UTC().Format(time.RFC3339))})
	}
}

func (d *routeDenials) append(e audit.Entry) {
	if _, err := d.log.Append(context.Background(), e); err != nil {
		d.s.logger.Error("audit entry not recorded", "action", e.Action, "target", e.Target, "error", err)
	}
}

func plural(n uint64, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// close writes what was counted and stops; later refusals are counted
// and never written.
func (d *routeDenials) close() {
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	d.wg.Wait()
}
