// Command bench runs Nimbus's scenario benchmarks, each beside a baseline
// measured in the same run, and prints the medians as a table.
//
//	go run ./bench                 # every scenario, 5 runs each
//	go run ./bench -only cold      # one scenario
//	go run ./bench -runs 3 -duration 1s -json
//
// Everything runs on this machine: servers listen on 127.0.0.1 port 0, load
// loops are bounded in time and in count, and every process and goroutine
// started is stopped before the program exits. See bench/README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// options are the command line flags.
type options struct {
	runs       int
	duration   time.Duration
	only       string
	json       bool
	functions  int
	memoryRuns int
	flood      time.Duration
	// slowClients, slowRate and slowDuration shape the slowbodies
	// scenario.
	slowClients  int
	slowRate     int64
	slowDuration time.Duration
	slowRuns     int
	// waitClients is the clients of the waiting scenario.
	waitClients int
	cpuprofile  string
	// wrkprofile, when set, is a CPU profile of the node alone under wrk
	// (the warm scenario; one extra, uncounted wrk run).
	wrkprofile string
	// blockprofile and mutexprofile, when set, are written at the end.
	blockprofile, mutexprofile string
	verbose                    bool
	// baselineTermination gives the raw wazero baselines wazero's
	// WithCloseOnContextDone, as Nimbus has.
	baselineTermination bool
}

// scenario is one benchmark. run does its own setup, takes opts.runs
// measurements of Nimbus and of its baseline (interleaved, so drift on a
// shared machine hits both alike) and returns one row per metric.
type scenario struct {
	name string
	desc string
	run  func(ctx context.Context, b *bench) ([]row, error)
}

var scenarios = []scenario{
	{"warm", "warm invoke of the SDK hello guest through the gateway vs raw net/http", runWarm},
	{"cold", "cold start (NewInstance + one Handle) vs raw wazero", runCold},
	{"interrupt", "raw wazero: Go guest warm call with the fuel check or CloseOnContextDone vs none; instantiate with merged data segments vs original; timeout-to-error latency", runInterrupt},
	{"wagi", "WAGI request through the gateway vs raw net/http and raw wazero", runWAGI},
	{"memory", "RSS of a nimbus process with 1,000 idle functions vs none; deploy rate", runMemory},
	{"events", "events/s from CloudEvents ingress to function completion (fsync on) vs raw JetStream sync publishes", runEvents},
	{"async", "async invocations/s from 202 to recorded completion (fsync on) vs raw JetStream sync publishes", runAsync},
	{"kv", "KV get/put ops/s from a wasm guest through the gateway vs raw jetstream.KeyValue", runKV},
	{"backpressure", "RSS of a nimbus process flooded with events faster than delivery, requests refused, vs a raw JetStream process with a 10m dedupe window", runBackpressure},
	{"process", "process function (Go net/http, sandboxed): scale from zero vs fork/exec + first response; warm through the gateway vs direct", runProcess},
	{"lambda", "aws-lambda-go function (sandboxed) warm through the gateway vs the same binary's direct Runtime API loop", runLambda},
	{"workflow", "3-step workflow runs/s at 50 and 500 in flight, start -> result p50/p99 (fsync on), vs raw JetStream sync writes, 5 per run", runWorkflow},
	{"latency", "publish -> function start p50/p99, single events at a fixed rate, vs raw JetStream publish -> consumer receive", runLatency},
	{"egress", "one nimbus.Fetch and one nimbus.Secret read from a Go guest, per call, vs a raw net/http GET to the same loopback server, a raw JetStream KV read and an AES-GCM open", runEgress},
	{"slowbodies", "RSS and a probe's latency while many clients trickle 6MiB bodies, nimbus up vs a raw net/http server reading bodies whole", runSlowBodies},
	{"waiting", "RSS and answers while many HTTP clients at once call a function serving 5/s, nimbus up with its default --max-waiting vs with no bound", runWaiting},
	{"wfflood", "RSS, active runs and answers while clients start workflow runs faster than they run for -flood, nimbus up with its default --max-active-runs vs with no bound", runWorkflowFlood},
}

// bench is what scenarios share.
type bench struct {
	opts   options
	root   string // module root
	logger *slog.Logger
	tmp    string
}

func main() {
	if dir := os.Getenv(rawJetStreamEnv); dir != "" {
		if err := rawJetStreamMain(dir); err != nil {
			fmt.Fprintln(os.Stderr, "bench: raw JetStream:", err)
			os.Exit(1)
		}
		return
	}
	if os.Getenv(rawBodiesEnv) != "" {
		// The slowbodies baseline: this binary as a raw server process.
		if err := serveRawBodies(); err != nil {
			fmt.Fprintln(os.Stderr, "bench raw server:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.runs, "runs", 5, "measurements per figure (the table shows the median)")
	flag.DurationVar(&o.duration, "duration", 2*time.Second, "length of one throughput or latency measurement")
	flag.StringVar(&o.only, "only", "", "run only these scenarios (comma separated): "+names())
	flag.BoolVar(&o.json, "json", false, "print rows as JSON instead of a table")
	flag.IntVar(&o.functions, "functions", 1000, "functions deployed by the memory scenario")
	flag.IntVar(&o.memoryRuns, "memory-runs", 1, "runs of the memory scenario (each starts a process and deploys -functions functions twice; slow, see README)")
	flag.DurationVar(&o.flood, "flood", 30*time.Second, "how long the backpressure scenario publishes and the wfflood scenario starts runs (once, not -runs times)")
	flag.IntVar(&o.slowClients, "slow-clients", 1000, "clients of the slowbodies scenario, each trickling a 6MiB body")
	flag.Int64Var(&o.slowRate, "slow-rate", 64<<10, "bytes per second each slowbodies client sends")
	flag.DurationVar(&o.slowDuration, "slow-duration", 15*time.Second, "how long the slowbodies clients send (then 10s more to read RSS after)")
	flag.IntVar(&o.waitClients, "wait-clients", 5000, "clients of the waiting scenario, each sending one request at once to a function serving 5 requests/s")
	flag.IntVar(&o.slowRuns, "slow-runs", 1, "runs of the slowbodies scenario (each starts two processes and takes -slow-duration plus 10s twice)")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run (this process: load generator, in-process server, runtime) to this file")
	flag.StringVar(&o.wrkprofile, "wrkprofile", "", "write a CPU profile of the node alone serving wrk (warm and process scenarios, one extra uncounted run each; needs wrk, not with -cpuprofile) to <scenario>-FILE")
	flag.StringVar(&o.blockprofile, "blockprofile", "", "write a blocking profile of the whole run to this file (where goroutines wait: commits, locks, channels)")
	flag.StringVar(&o.mutexprofile, "mutexprofile", "", "write a mutex contention profile of the whole run to this file")
	flag.BoolVar(&o.baselineTermination, "baseline-termination", false, "give the raw wazero baselines WithCloseOnContextDone(true), as the Nimbus runtime has, to isolate what its termination checks cost")
	flag.BoolVar(&o.verbose, "v", false, "print each run's figures to stderr as they come")
	flag.Parse()
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func names() string {
	var s []string
	for _, sc := range scenarios {
		s = append(s, sc.name)
	}
	return strings.Join(s, ", ")
}

func run(o options) error {
	if o.runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	if o.duration < 100*time.Millisecond {
		return errors.New("-duration must be at least 100ms")
	}
	var selected []scenario
	for _, sc := range scenarios {
		if o.only == "" || slices.Contains(strings.Split(o.only, ","), sc.name) {
			selected = append(selected, sc)
		}
	}
	if len(selected) == 0 {
		return fmt.Errorf("-only %q matches no scenario (have %s)", o.only, names())
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "nimbus-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	if o.blockprofile != "" {
		goruntime.SetBlockProfileRate(int(100 * time.Microsecond)) // waits of 100µs and more, sampled by duration
		defer writeProfile("block", o.blockprofile)
	}
	if o.mutexprofile != "" {
		goruntime.SetMutexProfileFraction(10)
		defer writeProfile("mutex", o.mutexprofile)
	}

	b := &bench{opts: o, root: root, tmp: tmp, logger: slog.New(slog.DiscardHandler)}
	var rows []row
	start := time.Now()
	for _, sc := range selected {
		progress("== %s: %s", sc.name, sc.desc)
		t0 := time.Now()
		r, err := sc.run(ctx, b)
		if err != nil {
			return fmt.Errorf("scenario %s: %w", sc.name, err)
		}
		progress("   %s done in %s", sc.name, time.Since(t0).Round(100*time.Millisecond))
		rows = append(rows, r...)
	}
	if o.json {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"runs": o.runs, "duration": o.duration.String(), "machine": machine(), "rows": rows})
	}
	fmt.Printf("\nNimbus scenario benchmarks: %d runs each, medians; %s; total %s\n\n", o.runs, machine(), time.Since(start).Round(time.Second))
	printTable(os.Stdout, rows)
	return nil
}

// writeProfile writes the named runtime profile to path (a failure is
// reported, not fatal: the figures are printed anyway).
func writeProfile(name, path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup(name).WriteTo(f, 0)
		f.Close()
	}
	if err != nil {
		progress("bench: %s profile: %v", name, err)
	}
}

func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
}

// row is one line of the table: the median of Nimbus's runs beside the
// median of the baseline's runs.
type row struct {
	Scenario     string    `json:"scenario"`
	Metric       string    `json:"metric"`
	Unit         string    `json:"unit"`
	Nimbus       float64   `json:"nimbus"`
	Baseline     float64   `json:"baseline,omitempty"`
	BaselineName string    `json:"baseline_name,omitempty"`
	Ratio        float64   `json:"ratio,omitempty"` // nimbus / baseline
	Goal         string    `json:"goal,omitempty"`
	Met          *bool     `json:"met,omitempty"`
	NimbusRuns   []float64 `json:"nimbus_runs"`
	BaselineRuns []float64 `json:"baseline_runs,omitempty"`
}

// newRow builds a row from the runs of both sides; baseline may be nil.
func newRow(scenario, metric, unit string, nimbus []float64, baselineName string, baseline []float64) row {
	r := row{Scenario: scenario, Metric: metric, Unit: unit, Nimbus: median(nimbus), NimbusRuns: nimbus}
	if len(baseline) > 0 {
		r.BaselineName, r.Baseline, r.BaselineRuns = baselineName, median(baseline), baseline
		if r.Baseline != 0 {
			r.Ratio = r.Nimbus / r.Baseline
		}
	}
	return r
}

// goal sets the row's goal text and whether the medians meet it.
func (r row) goal(text string, met bool) row {
	r.Goal, r.Met = text, &met
	return r
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func printTable(w io.Writer, rows []row) {
	header := []string{"scenario", "metric", "nimbus", "baseline", "ratio", "goal", "met?"}
	var lines [][]string
	for _, r := range rows {
		base, ratio, met := "", "", ""
		if r.BaselineName != "" {
			base = fmtValue(r.Baseline, r.Unit) + " (" + r.BaselineName + ")"
			if r.Ratio != 0 {
				ratio = fmt.Sprintf("%.2fx", r.Ratio)
			}
		}
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		lines = append(lines, []string{r.Scenario, r.Metric, fmtValue(r.Nimbus, r.Unit), base, ratio, r.Goal, met})
	}
	width := make([]int, len(header))
	for i, h := range header {
		width[i] = len(h)
	}
	for _, l := range lines {
		for i, c := range l {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	printLine := func(cells []string) {
		var sb strings.Builder
		for i, c := range cells {
			if i > 0 {
				sb.WriteString(" | ")
			}
			sb.WriteString(c)
			sb.WriteString(strings.Repeat(" ", width[i]-utf8.RuneCountInString(c)))
		}
		fmt.Fprintln(w, strings.TrimRight(sb.String(), " "))
	}
	printLine(header)
	sep := make([]string, len(header))
	for i := range sep {
		sep[i] = strings.Repeat("-", width[i])
	}
	printLine(sep)
	for _, l := range lines {
		printLine(l)
	}
}

// fmtValue renders a value in its unit: "µs" and "ms" values are stored in
// that unit, "B" is shown in KiB/MiB.
func fmtValue(v float64, unit string) string {
	if math.IsNaN(v) {
		return "n/a"
	}
	switch unit {
	case "B":
		switch {
		case math.Abs(v) >= 1<<20:
			return fmt.Sprintf("%.1f MiB", v/(1<<20))
		case math.Abs(v) >= 1<<10:
			return fmt.Sprintf("%.1f KiB", v/(1<<10))
		}
		return fmt.Sprintf("%.0f B", v)
	case "req/s", "deploys/s", "inst/s":
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	if v >= 100 {
		return fmt.Sprintf("%.0f %s", v, unit)
	}
	return fmt.Sprintf("%.3g %s", v, unit)
}
