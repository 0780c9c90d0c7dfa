package registry

import "time"

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
