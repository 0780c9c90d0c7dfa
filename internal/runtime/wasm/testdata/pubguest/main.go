// Command pubguest is the test guest of the publish host function: see
// publish_test.go in package wasm.
//
//	POST /publish?t=TOPIC&type=&id=&source=&subject=&ct=&ext=NAME=VALUE
//	     body is the data; answers "new" or "duplicate"
//	GET  /hostile    raw publish calls with bad pointers; the codes
//
// Errors answer 403 (ErrDenied), 404 (ErrTopicNotFound), 400
// (ErrBadArgument), 413 (ErrTooLarge), 503 (ErrUnavailable), 500 (other)
// with the error.
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unsafe"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(serve)
}

func main() {}

func serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/publish":
		publish(w, r)
	case "/hostile":
		hostile(w)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func publish(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	e := nimbus.Event{ID: q.Get("id"), Source: q.Get("source"), Type: q.Get("type"), Subject: q.Get("subject"), DataContentType: q.Get("ct")}
	if body, _ := io.ReadAll(r.Body); len(body) > 0 {
		e.Data = body
	}
	for _, kv := range q["ext"] {
		k, v, _ := strings.Cut(kv, "=")
		if e.Extensions == nil {
			e.Extensions = map[string]string{}
		}
		e.Extensions[k] = v
	}
	dup, err := nimbus.Publish(q.Get("t"), e)
	if err != nil {
		status := http.StatusInternalServerError
		for _, c := range []struct {
			err    error
			status int
		}{
			{nimbus.ErrDenied, http.StatusForbidden}, {nimbus.ErrTopicNotFound, http.StatusNotFound},
			{nimbus.ErrBadArgument, http.StatusBadRequest}, {nimbus.ErrTooLarge, http.StatusRequestEntityTooLarge},
			{nimbus.ErrUnavailable, http.StatusServiceUnavailable},
		} {
			if errors.Is(err, c.err) {
				status = c.status
				break
			}
		}
		w.WriteHeader(status)
		fmt.Fprint(w, err.Error())
		return
	}
	if dup {
		fmt.Fprint(w, "duplicate")
		return
	}
	fmt.Fprint(w, "new")
}

// The raw import, declared again with plain integers so the guest can pass
// any pointer a hostile guest could.
//
//go:wasmimport nimbus publish
func rawPublish(topic, topicLen, event, eventLen, out uint32) int32

var (
	topic = []byte("orders")
	event = []byte(`{"specversion":"1.0","id":"h","type":"t"}`)
	out   [8]byte
)

func hostile(w http.ResponseWriter) {
	t := uint32(uintptr(unsafe.Pointer(&topic[0])))
	e := uint32(uintptr(unsafe.Pointer(&event[0])))
	o := uint32(uintptr(unsafe.Pointer(&out[0])))
	n := uint32(len(event))
	codes := []int32{
		rawPublish(0xfffffff0, 6, e, n, o),   // topic outside memory
		rawPublish(t, 0xffffffff, e, n, o),   // topic length 4GiB
		rawPublish(t, 6, 0xffffff00, 200, o), // event outside memory
		rawPublish(t, 6, e, n, 0xfffffffc),   // out outside memory
		rawPublish(t, 6, e, 0xffffffff, o),   // event length 4GiB: too large
		rawPublish(t, 6, e, n-1, o),          // event cut short: invalid JSON
	}
	for _, c := range codes {
		fmt.Fprintln(w, c)
	}
}
