package telemetry

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is the set of Prometheus metrics of one Nimbus server.
type Metrics struct {
	reg           *prometheus.Registry
	requests      *prometheus.CounterVec
	errors        *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	coldStarts    *prometheus.CounterVec
	coldStartTime *prometheus.HistogramVec
	instances     *prometheus.GaugeVec
	logDropped    *prometheus.CounterVec
}

// NewMetrics creates the metrics in a registry of their own, with the Go
// runtime and process collectors beside them.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_requests_total",
			Help: "Invocations completed, by HTTP status code.",
		}, []string{"app", "function", "code"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_request_errors_total",
			Help: "Invocations that failed in the platform or the guest, by reason.",
		}, []string{"app", "function", "reason"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nimbus_invocation_duration_seconds",
			Help:    "Time from the invocation entering the scheduler to the guest's response.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"app", "function"}),
		coldStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_cold_starts_total",
			Help: "Instances created to serve a request (no idle instance was available).",
		}, []string{"app", "function"}),
		coldStartTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "nimbus_cold_start_duration_seconds",
			Help:    "Time to create a new instance.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .002, .005, .01, .025, .05, .1},
		}, []string{"app", "function"}),
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "nimbus_instances",
			Help: "Live instances, by state (idle or busy).",
		}, []string{"app", "function", "state"}),
		logDropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "nimbus_guest_log_dropped_lines_total",
			Help: "Guest log lines not stored, by app and reason (invocation_budget, app_rate, buffer_full, publish_failed, writer_closed, encode_failed).",
		}, []string{"app", "reason"}),
	}
	m.reg.MustRegister(m.requests, m.errors, m.duration, m.coldStarts, m.coldStartTime, m.instances, m.logDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry exposes the registry for tests and for packages that add metrics
// of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// FunctionMetrics are the metrics of one function, with labels bound once so
// the hot path does no label lookups.
type FunctionMetrics struct {
	m             *Metrics
	app, function string
	duration      prometheus.Observer
	coldStarts    prometheus.Counter
	coldStartTime prometheus.Observer
	idle, busy    prometheus.Gauge
	ok            prometheus.Counter // code 200, the common case
}

// Function binds the labels of one function.
func (m *Metrics) Function(app, function string) *FunctionMetrics {
	return &FunctionMetrics{
		m: m, app: app, function: function,
		duration:      m.duration.WithLabelValues(app, function),
		coldStarts:    m.coldStarts.WithLabelValues(app, function),
		coldStartTime: m.coldStartTime.WithLabelValues(app, function),
		idle:          m.instances.WithLabelValues(app, function, "idle"),
		busy:          m.instances.WithLabelValues(app, function, "busy"),
		ok:            m.requests.WithLabelValues(app, function, "200"),
	}
}

// Observe records one finished invocation. reason is empty on success.
func (f *FunctionMetrics) Observe(code int, d time.Duration, reason string) {
	if code == http.StatusOK {
		f.ok.Inc()
	} else {
		f.m.requests.WithLabelValues(f.app, f.function, strconv.Itoa(code)).Inc()
	}
	if reason != "" {
		f.m.errors.WithLabelValues(f.app, f.function, reason).Inc()
	}
	f.duration.Observe(d.Seconds())
}

// Refused records a request to app/function refused before it reached the
// scheduler (a body over max_request_body, answered at the gateway): it
// counts in nimbus_requests_total with its code and in
// nimbus_request_errors_total with its reason, not in the duration of
// invocations, which it never started.
func (m *Metrics) Refused(app, function string, code int, reason string) {
	m.requests.WithLabelValues(app, function, strconv.Itoa(code)).Inc()
	m.errors.WithLabelValues(app, function, reason).Inc()
}

// ColdStart records the creation of an instance.
func (f *FunctionMetrics) ColdStart(d time.Duration) {
	f.coldStarts.Inc()
	f.coldStartTime.Observe(d.Seconds())
}

// Instances sets the instance gauges.
func (f *FunctionMetrics) Instances(idle, busy int) {
	f.idle.Set(float64(idle))
	f.busy.Set(float64(busy))
}

// GuestLogDropped counts one guest log line of app dropped for reason (see
// package guestlog for the reasons).
func (m *Metrics) GuestLogDropped(app, reason string) {
	m.logDropped.WithLabelValues(app, reason).Inc()
}
