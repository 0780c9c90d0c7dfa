package model

import "time"

// Function is the resolved configuration of one function in a revision. It is
// what the CLI sends on deploy (after building and uploading modules) and what
// the server stores. All defaults are filled in by the manifest package before
// it gets here, so a Function is complete and valid.
type Function struct {
	Name string `json:"name"`
	// Kind is what the function is: "" (KindFunction) serves requests and
	// events; KindWorkflow is a durable workflow whose runs the workflow
	// engine drives (its routes start runs). Omitted when empty, so plain
	// functions keep the ids they had before workflows existed.
	Kind    string `json:"kind,omitempty"`
	Runtime string `json:"runtime"` // "wasm" or "process"
	// Module is the sha256 (hex) of the artifact in the artifact store: the
	// wasm module, or for a process the tar of the function's directory.
	Module           string            `json:"module"`
	MemoryBytes      uint64            `json:"memory_bytes"`
	TimeoutMS        int64             `json:"timeout_ms"`
	Concurrency      int               `json:"concurrency"`   // max concurrent requests per instance
	MaxInstances     int               `json:"max_instances"` // cap on instances of this function
	MaxRequestBytes  int64             `json:"max_request_bytes"`
	MaxResponseBytes int64             `json:"max_response_bytes"`
	Env              map[string]string `json:"env,omitempty"`
	Capabilities     []string          `json:"capabilities,omitempty"`
	Routes           []Route           `json:"routes,omitempty"`
	// Triggers are the function's event sources besides its routes: topics,
	// cron schedules and bucket changes, each with its delivery settings,
	// all defaults filled in. Part of the function's content address, so a
	// trigger change makes a new revision; omitted when empty, so functions
	// without triggers keep the ids they had before triggers existed.
	Triggers []Trigger `json:"triggers,omitempty"`
	// Flow limits how the function is invoked, whatever invokes it (HTTP,
	// events, cron, async). nil: no limits beyond MaxInstances, and
	// priority DefaultPriority.
	Flow *Flow `json:"flow,omitempty"`
	// Async is the retry policy of the function's async invocations. nil:
	// the node's defaults (5 attempts, 1s doubling up to 5m).
	Async *AsyncPolicy `json:"async,omitempty"`
	// Process is how a process function is started (command, contract,
	// readiness, isolation); nil for wasm, and omitted then, so wasm
	// functions keep the ids they had before processes existed.
	Process *Process `json:"process,omitempty"`
	// Revision is the function's own content address (module + config). It
	// is computed by the server; a function whose Revision did not change
	// between two app revisions keeps its warm instances.
	Revision string `json:"revision,omitempty"`
}

// Route is one HTTP route of a function.
type Route struct {
	// Method is an HTTP method or "" for any method.
	Method string `json:"method,omitempty"`
	// Path is a net/http ServeMux path pattern: "/users/{id}", "/static/{path...}".
	Path string `json:"path"`
	// Auth is what a request must carry for the function to run; nil: the
	// route is public. Omitted when nil, so public routes keep the ids they
	// had before route auth existed.
	Auth *RouteAuth `json:"auth,omitempty"`
}

// Revision is one immutable deployment of an app.
type Revision struct {
	ID        string     `json:"id"` // sha256 hex of the canonical functions
	App       string     `json:"app"`
	CreatedAt time.Time  `json:"created_at"`
	Functions []Function `json:"functions"`
	// Topics are the app's event topics, sorted by name, including
	// DeadLetterTopic whenever the app has any topic or trigger. Empty for
	// an app without events.
	Topics []Topic `json:"topics,omitempty"`
	// Buckets are the app's key-value buckets, sorted by name.
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Function kinds (Function.Kind).
const (
	// KindFunction is a plain function; it is written "" in a Function.
	KindFunction = "function"
	// KindWorkflow is a durable workflow (docs/workflows.md).
	KindWorkflow = "workflow"
)

// IsWorkflow reports whether f is a workflow.
func (f *Function) IsWorkflow() bool { return f.Kind == KindWorkflow }

// DeadLetterTopic is the topic every app with events has implicitly: an
// event (or cron firing, or bucket change) whose delivery failed
// Trigger.MaxAttempts times goes there, with the error and the attempt
// count attached, unless its trigger names another DeadLetter topic.
const DeadLetterTopic = "dead-letter"

// Trigger kinds (Trigger.Kind).
const (
	TriggerTopic  = "topic"
	TriggerCron   = "cron"
	TriggerBucket = "bucket"
)

// CatchUpNoLimit is Trigger.CatchUpMS for "always catch up": however long no
// server ran, the latest missed tick fires once (cron.NoLimit).
const CatchUpNoLimit int64 = -1

// DefaultPriority is Flow.Priority when a function declares none.
const DefaultPriority = 5

// Trigger is one event source of a function: exactly one of a topic, a cron
// schedule or a bucket, named by Kind, with its delivery settings. Fields
// that do not belong to Kind are empty.
type Trigger struct {
	// Name identifies the trigger within its function, and its durable
	// subscription (or cron watermark) across deploys: a trigger that keeps
	// its name keeps its place. Unique within the function.
	Name string `json:"name"`
	// Kind is TriggerTopic, TriggerCron or TriggerBucket.
	Kind string `json:"kind"`

	// Topic is the topic subscribed to (Kind topic): declared by the app,
	// or DeadLetterTopic.
	Topic string `json:"topic,omitempty"`
	// Filter selects events of the topic; nil selects all.
	Filter *EventFilter `json:"filter,omitempty"`

	// Cron is the schedule (Kind cron) in the canonical form of
	// cron.Schedule, without a CRON_TZ= prefix: parse it with
	// cron.Parse(Cron, Timezone).
	Cron string `json:"cron,omitempty"`
	// Timezone is the IANA zone of Cron ("UTC" by default).
	Timezone string `json:"timezone,omitempty"`
	// CatchUpMS is the cron catch-up window: how old the latest missed tick
	// may be and still fire once after downtime. CatchUpNoLimit (-1, the
	// default): always; 0: never (only on time, within cron.Grace).
	CatchUpMS int64 `json:"catch_up_ms,omitempty"`

	// Bucket is the bucket whose changes invoke the function (Kind bucket).
	Bucket string `json:"bucket,omitempty"`
	// KeyPrefix limits a bucket trigger to keys starting with it; "" is
	// every key.
	KeyPrefix string `json:"key_prefix,omitempty"`

	// OrderingKey, when set, delivers events with the same key one at a
	// time, in order (topic and bucket triggers): "event.subject",
	// "event.source", "event.type" or "event.<extension>".
	OrderingKey string `json:"ordering_key,omitempty"`

	// MaxAttempts is how many times a delivery is tried before it is dead
	// lettered, 1 to 100 (default 5).
	MaxAttempts int `json:"max_attempts"`
	// BackoffMS is the delay before the first retry (default 1000); each
	// further retry doubles it, with jitter, up to MaxBackoffMS (default
	// 300000, and never below BackoffMS).
	BackoffMS    int64 `json:"backoff_ms"`
	MaxBackoffMS int64 `json:"max_backoff_ms"`
	// DeadLetter is the topic a delivery goes to after MaxAttempts failures
	// (default DeadLetterTopic). "" only on a trigger of the topic
	// DeadLetterTopic itself: its failures are logged and dropped, never
	// dead-lettered again.
	DeadLetter string `json:"dead_letter"`
}

// EventFilter selects the events of a topic trigger; every set field must
// match. Empty fields match anything.
type EventFilter struct {
	// Type must equal the event's type attribute.
	Type string `json:"type,omitempty"`
	// Source must equal the event's source attribute.
	Source string `json:"source,omitempty"`
	// SubjectPrefix must be a prefix of the event's subject attribute (an
	// event without a subject does not match).
	SubjectPrefix string `json:"subject_prefix,omitempty"`
}

// Flow is a function's flow control, applied to every invocation whatever
// its source: HTTP requests, events, cron firings and async invocations.
type Flow struct {
	// MaxConcurrency caps the function's invocations running at once; 0: no
	// cap beyond MaxInstances * Concurrency.
	MaxConcurrency int `json:"max_concurrency,omitempty"`
	// Key names the value that groups invocations for KeyConcurrency, Rate
	// and Debounce: "event.subject", "event.source", "event.type",
	// "event.<extension>", "header.<Canonical-Name>" or "query.<name>". An
	// invocation without that value has the key "". Empty: Rate and
	// Debounce apply to the function as a whole.
	Key string `json:"key,omitempty"`
	// KeyConcurrency caps the invocations running at once per key; 0: no
	// cap. Requires Key.
	KeyConcurrency int `json:"key_concurrency,omitempty"`
	// Rate caps how many invocations start per period (per key when Key is
	// set); nil: no cap.
	Rate *Rate `json:"rate,omitempty"`
	// DebounceMS, when above 0, runs the function once a key (or the
	// function) has been quiet this long, with the last event.
	DebounceMS int64 `json:"debounce_ms,omitempty"`
	// Priority orders waiting invocations of the function, 0 (lowest) to 9
	// (highest); default DefaultPriority.
	Priority int `json:"priority"`
}

// Rate is Limit invocations per PeriodMS milliseconds.
type Rate struct {
	Limit    int   `json:"limit"`
	PeriodMS int64 `json:"period_ms"`
}

// Topic is one event topic of an app, with its limits.
type Topic struct {
	Name string `json:"name"`
	// MaxEventBytes is the largest event accepted, as stored (attributes
	// plus data); a larger one is refused (413 at ingress).
	MaxEventBytes int64 `json:"max_event_bytes"`
	// RetentionMS is how long an event is kept on the topic.
	RetentionMS int64 `json:"retention_ms"`
}

// Bucket is one key-value bucket of an app.
type Bucket struct {
	Name string `json:"name"`
	// TTLMS expires every key this long after its last write; 0: keys do
	// not expire.
	TTLMS int64 `json:"ttl_ms,omitempty"`
	// MaxValueBytes caps a value.
	MaxValueBytes int64 `json:"max_value_bytes"`
	// History is how many revisions of a key are kept, 1 to 64.
	History int `json:"history"`
}

// Spec is what a deploy declares: the app's functions, topics and buckets.
type Spec struct {
	Functions []Function `json:"functions"`
	Topics    []Topic    `json:"topics,omitempty"`
	Buckets   []Bucket   `json:"buckets,omitempty"`
}

// AsyncPolicy is how a function's async invocations are retried: like a
// trigger's MaxAttempts, BackoffMS and MaxBackoffMS.
type AsyncPolicy struct {
	MaxAttempts  int   `json:"max_attempts"`
	BackoffMS    int64 `json:"backoff_ms"`
	MaxBackoffMS int64 `json:"max_backoff_ms"`
}
