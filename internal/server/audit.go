package server

import (
	"context"
	"sync"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/capability"
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
// goroutine, fed without blocking by OnDenied.
type auditDenials struct {
	log    *audit.Log
	s      *Server
	ch     chan capability.Denial
	wg     sync.WaitGroup
	closed chan struct{}
}

func newAuditDenials(s *Server, log *audit.Log) *auditDenials {
	d := &auditDenials{log: log, s: s, ch: make(chan capability.Denial, denialQueue), closed: make(chan struct{})}
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
	for {
		select {
		case den := <-d.ch:
			d.append(den)
		case <-d.closed:
			for {
				select {
				case den := <-d.ch:
					d.append(den)
				default:
					return
				}
			}
		}
	}
}

func (d *auditDenials) append(den capability.Denial) {
	tenant := ""
	if head, err := d.s.reg.App(context.Background(), den.App); err == nil {
		tenant = head.TenantName()
	}
	action := "capability.denied"
	if den.Kind == "egress" {
		action = "egress.blocked"
	}
	if _, err := d.log.Append(context.Background(), audit.Entry{Actor: den.App + "/" + den.Function, Tenant: tenant,
		Action: action, Target: den.What, Outcome: audit.OutcomeDenied, Detail: "invocation " + den.Invocation}); err != nil {
		d.s.logger.Error("audit entry not recorded", "action", action, "app", den.App, "error", err)
	}
}

// close records what is queued and stops; later denials are dropped.
func (d *auditDenials) close() {
	select {
	case <-d.closed:
	default:
		close(d.closed)
	}
	d.wg.Wait()
}
