// Package telemetry holds what Nimbus reports about itself: Prometheus
// metrics, W3C trace context and invocation ids.
//
// Every invocation, whichever door it came through (gateway route, API
// invoke), gets an invocation id and a traceparent here, and is counted in
// the metrics below. Metric names follow Prometheus conventions with units:
//
//	nimbus_requests_total{app,function,code}
//	nimbus_request_errors_total{app,function,reason}
//	nimbus_invocation_duration_seconds{app,function}
//	nimbus_cold_starts_total{app,function}
//	nimbus_cold_start_duration_seconds{app,function}
//	nimbus_instances{app,function,state}   state is "idle" or "busy"
//	nimbus_guest_log_dropped_lines_total{app,reason}
//
// The registry is owned by a Metrics value, never global, so tests and
// several servers in one process do not collide.
package telemetry
