package server

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nimbus-dev/nimbus/internal/workflow"
)

// workflowMetrics exports the workflow engine's measures to Prometheus:
// runs started and ended (by state), step attempt latency, runs active,
// and the journal's commits (group commit: writes per commit).
type workflowMetrics struct {
	s                                  *Server
	started, ended                     *prometheus.CounterVec
	steps                              *prometheus.HistogramVec
	active, commits, writes, maxBatchD *prometheus.Desc
	loaded, deferred                   *prometheus.Desc
}

var _ workflow.Observer = (*workflowMetrics)(nil)

func newWorkflowMetrics(s *Server) *workflowMetrics {
	m := &workflowMetrics{
		s: s,
		started: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nimbus_workflow_runs_started_total",
			Help: "Workflow runs created (a start of an existing run id creates none)."}, []string{"app", "workflow"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "nimbus_workflow_runs_ended_total",
			Help: "Workflow runs that reached a final state, by state: completed, failed, cancelled, terminated."}, []string{"app", "workflow", "state"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "nimbus_workflow_step_duration_seconds",
			Help:    "Duration of workflow step attempts (run, not replayed), by outcome: completed, retried, failed.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 10)}, []string{"app", "workflow", "outcome"}),
		active: prometheus.NewDesc("nimbus_workflow_runs_active",
			"Workflow runs driven on this node now (running, or waiting for an instance).", nil, nil),
		deferred: prometheus.NewDesc("nimbus_workflow_wakes_deferred",
			"Workflow runs due to be driven that wait as a run id, not a goroutine: for their app to have fewer active runs than nimbus up --max-active-runs, or for their workflow to have fewer runs queued for its flow control than that bound.", nil, nil),
		commits: prometheus.NewDesc("nimbus_workflow_journal_commits_total",
			"Durable writes of workflow journals (each an fsync); writes over commits is the group commit's batch size.", nil, nil),
		writes: prometheus.NewDesc("nimbus_workflow_journal_writes_total",
			"Messages written to workflow journals (entries and run records).", nil, nil),
		maxBatchD: prometheus.NewDesc("nimbus_workflow_journal_max_batch",
			"The largest journal commit so far, in messages.", nil, nil),
		loaded: prometheus.NewDesc("nimbus_function_revisions_loaded",
			"Function revisions with a loaded module on this node, by app: the active revision's, and older ones kept for workflow runs in flight on them.", []string{"app"}, nil),
	}
	s.metrics.Registry().MustRegister(m.started, m.ended, m.steps, m)
	return m
}

// Step implements workflow.Observer.
func (m *workflowMetrics) Step(app, wf, outcome string, d time.Duration) {
	m.steps.WithLabelValues(app, wf, outcome).Observe(d.Seconds())
}

// RunEnded implements workflow.Observer.
func (m *workflowMetrics) RunEnded(app, wf, state string) {
	m.ended.WithLabelValues(app, wf, state).Inc()
}

// RunStarted implements workflow.Observer.
func (m *workflowMetrics) RunStarted(app, wf string) { m.started.WithLabelValues(app, wf).Inc() }

func (m *workflowMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.active
	ch <- m.deferred
	ch <- m.commits
	ch <- m.writes
	ch <- m.maxBatchD
	ch <- m.loaded
}

func (m *workflowMetrics) Collect(ch chan<- prometheus.Metric) {
	if m.s.wf == nil {
		return
	}
	st := m.s.wf.CommitStats()
	ch <- prometheus.MustNewConstMetric(m.active, prometheus.GaugeValue, float64(m.s.wf.ActiveRuns()))
	ch <- prometheus.MustNewConstMetric(m.deferred, prometheus.GaugeValue, float64(m.s.wf.DeferredWakes()))
	ch <- prometheus.MustNewConstMetric(m.commits, prometheus.CounterValue, float64(st.Commits))
	ch <- prometheus.MustNewConstMetric(m.writes, prometheus.CounterValue, float64(st.Writes))
	ch <- prometheus.MustNewConstMetric(m.maxBatchD, prometheus.GaugeValue, float64(st.MaxBatch))
	if m.s.sched != nil && m.s.active != nil {
		for _, app := range m.s.active.apps() {
			ch <- prometheus.MustNewConstMetric(m.loaded, prometheus.GaugeValue, float64(len(m.s.sched.Loaded(app))), app)
		}
	}
}
