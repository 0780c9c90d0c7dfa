package registry

import "time"

// Function is the resolved configuration of one function in a revision. It is
// what the CLI sends on deploy (after building and uploading modules) and what
// the server stores. All defaults are filled in by the manifest package before
// it gets here, so a Function is complete and valid.
type Function struct {
	Name    string `json:"name"`
	Runtime string `json:"runtime"` // "wasm"
	// Module is the sha256 (hex) of the artifact in the artifact store.
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
}

// Revision is one immutable deployment of an app.
type Revision struct {
	ID        string     `json:"id"` // sha256 hex of the canonical functions
	App       string     `json:"app"`
	CreatedAt time.Time  `json:"created_at"`
	Functions []Function `json:"functions"`
}

// App is the mutable head of an app: which revision is active and which
// revisions it has had, newest last.
type App struct {
	Name      string        `json:"name"`
	Active    string        `json:"active"` // revision id taking traffic
	History   []HistoryItem `json:"history"`
	UpdatedAt time.Time     `json:"updated_at"`
}

// HistoryItem records one activation of a revision.
type HistoryItem struct {
	Revision    string    `json:"revision"`
	ActivatedAt time.Time `json:"activated_at"`
	// Reason is "deploy" or "rollback".
	Reason string `json:"reason"`
}
