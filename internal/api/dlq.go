package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/nimbus-dev/nimbus/internal/apierror"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/security"
)

// DeadLetterQueue lists and replays an app's dead letters; package server
// implements it.
type DeadLetterQueue interface {
	// DeadLetters lists a page of app's dead letters (on every dead-letter
	// topic of its active revision).
	DeadLetters(ctx context.Context, app string, q events.DeadLetterQuery) (*events.DeadLetterPage, error)
	// ReplayDeadLetters re-drives dead letters of app: each to the trigger
	// that failed it, or to req.Topic. Per dead letter failures are in the
	// results; the error is for the call as a whole.
	ReplayDeadLetters(ctx context.Context, app string, req ReplayRequest) ([]events.ReplayResult, error)
}

// MaxReplaySeqs caps the sequences of one replay request.
const MaxReplaySeqs = 1000

// maxInlineData is the largest event data a listing includes.
const maxInlineData = 4 << 10

func (a *api) dlqRoutes(handle func(string, security.Scope, func(http.ResponseWriter, *http.Request) error)) {
	handle("GET /api/v1/apps/{app}/dead-letters", security.ScopeRead, a.deadLetters)
	// Invoke, like publish: a replay sends an event the app already
	// accepted back to one of its own triggers, which publishing it again
	// could do; it changes nothing that was deployed.
	handle("POST /api/v1/apps/{app}/dead-letters/replay", security.ScopeInvoke, a.replayDeadLetters)
}

// DeadLetter is one dead letter in a listing: the event whose delivery
// failed, and why.
type DeadLetter struct {
	// Seq identifies it for replay (its stream sequence).
	Seq uint64 `json:"seq"`
	// Time is when it was dead-lettered.
	Time time.Time `json:"time"`
	// DeadLetterTopic is the topic it is on.
	DeadLetterTopic string `json:"dead_letter_topic"`
	// The event's attributes; empty when the entry was not a CloudEvent
	// (Malformed).
	ID              string            `json:"id,omitempty"`
	Source          string            `json:"source,omitempty"`
	Type            string            `json:"type,omitempty"`
	Subject         string            `json:"subject,omitempty"`
	DataContentType string            `json:"datacontenttype,omitempty"`
	Extensions      map[string]string `json:"extensions,omitempty"`
	// DataSize is the size of the event's data in bytes. Data holds it
	// when it is UTF-8 text of at most 4 KiB, DataBase64 when it is other
	// bytes of at most 4 KiB; larger data is left out.
	DataSize   int     `json:"data_size"`
	Data       *string `json:"data,omitempty"`
	DataBase64 string  `json:"data_base64,omitempty"`
	Malformed  bool    `json:"malformed,omitempty"`
	// Error is the last failure, Attempts how many deliveries were tried.
	Error    string `json:"error"`
	Attempts int    `json:"attempts"`
	// Topic, Function and Trigger name the trigger whose delivery failed
	// (Topic is _cron_... for a cron trigger).
	Topic    string `json:"topic"`
	Function string `json:"function"`
	Trigger  string `json:"trigger"`
}

// DeadLetterList is the answer of GET /api/v1/apps/{app}/dead-letters.
type DeadLetterList struct {
	DeadLetters []DeadLetter `json:"dead_letters"`
	// Next is set when more dead letters follow: pass it as ?after= (with
	// the same order) for the next page.
	Next uint64 `json:"next,omitempty"`
}

func deadLetterJSON(dl events.DeadLetter) DeadLetter {
	out := DeadLetter{
		Seq: dl.Seq, Time: dl.Time.UTC(), DeadLetterTopic: dl.DeadLetterTopic,
		Error: dl.Error, Attempts: dl.Attempts, Topic: dl.Topic, Function: dl.Function, Trigger: dl.Trigger,
	}
	data := dl.Raw
	if e := dl.Event; e != nil {
		out.ID, out.Source, out.Type, out.Subject, out.DataContentType = e.ID, e.Source, e.Type, e.Subject, e.DataContentType
		out.Extensions = e.Extensions
		data = e.Data
	} else {
		out.Malformed = true
	}
	out.DataSize = len(data)
	if len(data) <= maxInlineData {
		if utf8.Valid(data) {
			s := string(data)
			out.Data = &s
		} else {
			out.DataBase64 = base64.StdEncoding.EncodeToString(data)
		}
	}
	return out
}

func (a *api) deadLetters(w http.ResponseWriter, r *http.Request) error {
	q := events.DeadLetterQuery{}
	v := r.URL.Query()
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > events.MaxDeadLetterPage {
			return apierror.New(http.StatusBadRequest, "bad_limit", fmt.Sprintf("limit must be 1 to %d", events.MaxDeadLetterPage))
		}
		q.Limit = n
	}
	if s := v.Get("after"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return apierror.New(http.StatusBadRequest, "bad_after", "after must be a sequence number: the \"next\" of the previous page")
		}
		q.After = n
	}
	switch v.Get("order") {
	case "", "oldest":
	case "newest":
		q.Newest = true
	default:
		return apierror.New(http.StatusBadRequest, "bad_order", "order must be oldest (the default) or newest")
	}
	page, err := a.p.DeadLetters(r.Context(), r.PathValue("app"), q)
	if err != nil {
		return err
	}
	out := DeadLetterList{DeadLetters: make([]DeadLetter, 0, len(page.Letters)), Next: page.Next}
	for _, dl := range page.Letters {
		out.DeadLetters = append(out.DeadLetters, deadLetterJSON(dl))
	}
	return writeJSON(w, http.StatusOK, out)
}

// ReplayRequest is the body of POST /api/v1/apps/{app}/dead-letters/replay:
// Seqs or All.
type ReplayRequest struct {
	// Seqs are the dead letters to replay (at most 1000).
	Seqs []uint64 `json:"seqs,omitempty"`
	// All replays every dead letter there is when the call starts.
	All bool `json:"all,omitempty"`
	// Topic, when set, publishes the events to this topic of the app (to
	// every trigger of it) instead of to the trigger that failed them.
	Topic string `json:"topic,omitempty"`
}

// ReplayAnswer is the answer of a replay.
type ReplayAnswer struct {
	Replayed int          `json:"replayed"`
	Failed   int          `json:"failed"`
	Results  []ReplayItem `json:"results"`
}

// ReplayItem is the outcome for one dead letter.
type ReplayItem struct {
	Seq uint64 `json:"seq"`
	// Function and Trigger name the trigger that failed it.
	Function string `json:"function,omitempty"`
	Trigger  string `json:"trigger,omitempty"`
	// To is where it went: "function/trigger", or "topic T".
	To string `json:"to,omitempty"`
	// NewSeq is the replayed event's sequence; Duplicate means an earlier
	// replay of this dead letter had appended it already.
	NewSeq    uint64 `json:"new_seq,omitempty"`
	Duplicate bool   `json:"duplicate,omitempty"`
	// Code and Error say why it failed: dead_letter_not_found,
	// not_a_dead_letter, not_replayable, trigger_gone, replay_failed.
	Code  string `json:"code,omitempty"`
	Error string `json:"error,omitempty"`
}

func (a *api) replayDeadLetters(w http.ResponseWriter, r *http.Request) error {
	var req ReplayRequest
	if err := decodeJSON(r, &req); err != nil {
		return err
	}
	switch {
	case req.All && len(req.Seqs) > 0:
		return apierror.New(http.StatusBadRequest, "bad_request", `give "seqs" or "all": true, not both`)
	case !req.All && len(req.Seqs) == 0:
		return apierror.New(http.StatusBadRequest, "bad_request", `give the dead letters to replay: {"seqs": [12, 15]} or {"all": true}; GET .../dead-letters lists them`)
	case len(req.Seqs) > MaxReplaySeqs:
		return apierror.New(http.StatusBadRequest, "too_many_seqs", fmt.Sprintf("%d seqs in one request, at most %d: split them, or use {\"all\": true}", len(req.Seqs), MaxReplaySeqs))
	}
	app := r.PathValue("app")
	res, err := a.p.ReplayDeadLetters(r.Context(), app, req)
	if err != nil {
		return err
	}
	out := ReplayAnswer{Results: make([]ReplayItem, 0, len(res))}
	for _, x := range res {
		item := ReplayItem{Seq: x.Seq, Function: x.Function, Trigger: x.Trigger, NewSeq: x.NewSeq, Duplicate: x.Duplicate}
		if x.Function != "" {
			item.To = x.Function + "/" + x.Trigger
		}
		if req.Topic != "" {
			item.To = "topic " + req.Topic
		}
		if x.Err != nil {
			item.Code, item.Error = replayError(app, x.Err)
			out.Failed++
		} else {
			out.Replayed++
		}
		out.Results = append(out.Results, item)
	}
	a.logger.Info("dead letters replayed", "app", app, "replayed", out.Replayed, "failed", out.Failed, "topic", req.Topic)
	return writeJSON(w, http.StatusOK, out)
}

// replayError is the code and message of a failed replay, with what to do.
func replayError(app string, err error) (string, string) {
	var gone *events.TriggerGoneError
	switch {
	case errors.As(err, &gone):
		return "trigger_gone", fmt.Sprintf("%v: a later deploy removed or renamed it; replay to a topic of the app instead (\"topic\" in the request, `nimbus dlq replay %s SEQ --topic TOPIC`), where every trigger of that topic gets it", err, app)
	case errors.Is(err, events.ErrDeadLetterNotFound):
		return "dead_letter_not_found", fmt.Sprintf("%v; `nimbus dlq ls %s` lists the pending ones", err, app)
	case errors.Is(err, events.ErrNotDeadLetter):
		return "not_a_dead_letter", fmt.Sprintf("%v; `nimbus dlq ls %s` lists its dead letters", err, app)
	case errors.Is(err, events.ErrNotReplayable):
		return "not_replayable", err.Error()
	}
	return "replay_failed", err.Error()
}
