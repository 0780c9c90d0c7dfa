package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// eventsCollector exports the event log's and the dispatcher's counters
// (node-wide) to Prometheus, read at scrape time.
type eventsCollector struct {
	s                                   *Server
	appended, duplicates, commits, fail *prometheus.Desc
	messages, window                    *prometheus.Desc
	deliveries                          *prometheus.Desc
}

func newEventsCollector(s *Server) *eventsCollector {
	return &eventsCollector{
		s: s,
		appended: prometheus.NewDesc("nimbus_events_appended_total",
			"Events (and async invocations, cron ticks, bucket changes) acknowledged by the event log, duplicates included.", nil, nil),
		duplicates: prometheus.NewDesc("nimbus_events_duplicates_total",
			"Appends acknowledged as duplicates of an event already stored (same source and id, or Idempotency-Key).", nil, nil),
		commits: prometheus.NewDesc("nimbus_events_commits_total",
			"Durable writes of the event log (each an fsync; group commit puts many events in one).", nil, nil),
		fail: prometheus.NewDesc("nimbus_events_append_failures_total",
			"Events whose append failed (the publisher got an error).", nil, nil),
		messages: prometheus.NewDesc("nimbus_events_messages_total",
			"Messages the event log stored: a pack of events published together is one; appended / messages is how many events a message holds.", nil, nil),
		window: prometheus.NewDesc("nimbus_events_window_ids",
			"Event ids this node stored within the duplicate window (held in memory; publishes get 503 past --events-max-window-events).", nil, nil),
		deliveries: prometheus.NewDesc("nimbus_deliveries_total",
			"Trigger deliveries by outcome: delivered, failed (an attempt; retried or dead-lettered), dead_lettered, filtered, duplicate (skipped: already delivered), malformed.",
			[]string{"outcome"}, nil),
	}
}

func (c *eventsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.appended
	ch <- c.duplicates
	ch <- c.commits
	ch <- c.fail
	ch <- c.messages
	ch <- c.window
	ch <- c.deliveries
}

func (c *eventsCollector) Collect(ch chan<- prometheus.Metric) {
	ls := c.s.events.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(c.appended, ls.Entries)
	counter(c.duplicates, ls.Duplicates)
	counter(c.commits, ls.Commits)
	counter(c.fail, ls.Failed)
	counter(c.messages, ls.Messages)
	ch <- prometheus.MustNewConstMetric(c.window, prometheus.GaugeValue, float64(c.s.events.WindowEvents()))
	ds := c.s.deliver.Stats()
	counter(c.deliveries, ds.Delivered, "delivered")
	counter(c.deliveries, ds.Failed, "failed")
	counter(c.deliveries, ds.DeadLettered, "dead_lettered")
	counter(c.deliveries, ds.Filtered, "filtered")
	counter(c.deliveries, ds.Duplicates, "duplicate")
	counter(c.deliveries, ds.Malformed, "malformed")
}

// storageCollector exports the store's disk state, read at each scrape.
type storageCollector struct {
	s                      *Server
	free, reserve, stopped *prometheus.Desc
}

func newStorageCollector(s *Server) *storageCollector {
	return &storageCollector{
		s: s,
		free: prometheus.NewDesc("nimbus_store_free_bytes",
			"Free space on the data directory's filesystem; below nimbus_store_reserve_bytes writes are refused (507 disk_full).", nil, nil),
		reserve: prometheus.NewDesc("nimbus_store_reserve_bytes",
			"Free space the store keeps (--disk-reserve).", nil, nil),
		stopped: prometheus.NewDesc("nimbus_store_stopped_streams",
			"Streams that stopped writing after a failed write (a disk filled by something else); they take writes again after a restart.", nil, nil),
	}
}

func (c *storageCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.free
	ch <- c.reserve
	ch <- c.stopped
}

func (c *storageCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.store.Storage()
	ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(st.FreeBytes))
	ch <- prometheus.MustNewConstMetric(c.reserve, prometheus.GaugeValue, float64(st.ReserveBytes))
	ch <- prometheus.MustNewConstMetric(c.stopped, prometheus.GaugeValue, float64(len(st.Stopped)))
}
