// Command orders is the event pipeline example. One module plays five
// functions, told apart by the ROLE environment variable in nimbus.yaml:
//
//	place  takes an order over HTTP (POST /orders, a JSON body) and
//	       publishes it to the topic "orders" as an order.created event;
//	       an Idempotency-Key header becomes the event id, so a retried
//	       request is one order
//	count  subscribes to the topic "orders" and counts events in the bucket
//	       "counts" (key "orders.total"); GET /orders/stats reads the counts
//	audit  subscribes to "orders" too, and always fails: after max_attempts
//	       its events go to the app's dead-letter topic
//	dead   subscribes to "dead-letter" and counts what arrives there
//	watch  is invoked by every change of a key "orders.*" in the bucket
//	       (a bucket trigger): it copies the order count it was given to
//	       "seen.orders", where a real app would notify someone or refresh
//	       a cache
//
// An event arrives as an HTTP request in CloudEvents binary mode: its
// attributes in Ce-* headers, its data as the body. A bucket change is one
// too: the key in Ce-Subject, the new value as the body.
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

var counts = nimbus.Bucket("counts")

func init() {
	nimbus.HandleFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Ce-Id") == "" { // an HTTP request, not an event
			if os.Getenv("ROLE") == "place" {
				place(w, r)
				return
			}
			stats(w)
			return
		}
		switch os.Getenv("ROLE") {
		case "count":
			if err := increment("orders.total"); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		case "audit":
			http.Error(w, "audit service unavailable", http.StatusServiceUnavailable)
		case "watch":
			if r.Header.Get("Ce-Type") != "dev.nimbus.kv.put" {
				return // a delete: nothing to copy
			}
			value, err := io.ReadAll(r.Body)
			if err == nil {
				_, err = counts.Put("seen.orders", value)
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		case "dead":
			nimbus.Logf(nimbus.LevelWarn, "dead letter %s from %s: %s", r.Header.Get("Ce-Id"), r.Header.Get("Ce-Nimbusfunction"), r.Header.Get("Ce-Nimbuserror"))
			if err := increment("dead.total"); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		}
	})
}

func stats(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"orders": %d, "dead_letters": %d, "seen": %d}`+"\n", read("orders.total"), read("dead.total"), read("seen.orders"))
}

func read(key string) int {
	v, _, err := counts.Get(key)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(string(v))
	return n
}

// increment adds one to key with compare-and-swap: concurrent deliveries
// never lose an increment.
func increment(key string) error {
	for {
		v, rev, err := counts.Get(key)
		n := 0
		switch {
		case errors.Is(err, nimbus.ErrNotFound):
			rev = 0
		case err != nil:
			return err
		default:
			n, _ = strconv.Atoi(string(v))
		}
		_, err = counts.Put(key, []byte(strconv.Itoa(n+1)), nimbus.IfRevision(rev))
		if !errors.Is(err, nimbus.ErrRevisionMismatch) {
			return err
		}
	}
}

func main() {}

// place publishes the order in the request body. Publishing needs
// `capabilities: [publish:orders]`; the 202 means the event is on disk.
func place(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e := nimbus.Event{Type: "order.created", Source: "/shop/orders", ID: r.Header.Get("Idempotency-Key"),
		Subject: r.URL.Query().Get("customer"), Data: body}
	dup, err := nimbus.Publish("orders", e)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, `{"published": true, "duplicate": %t}`+"\n", dup)
}
