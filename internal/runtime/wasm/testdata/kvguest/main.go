// Command kvguest is the test guest of the key-value host functions: each
// path does one kind of call through the SDK and answers with the result;
// see kv_test.go in package wasm.
//
//	GET  /get?b=BUCKET&k=KEY               value, X-Revision
//	POST /put?b=&k=&ttl=DURATION&if=REV    body is the value; answers the revision
//	POST /delete?b=&k=&if=REV
//	GET  /list?b=&p=PREFIX                 keys, one per line
//	GET  /incr?b=&k=&n=N                   N compare-and-swap increments
//	GET  /loop?op=get|put&b=&k=&n=N        N gets or puts (benchmarks)
//	GET  /hostile                          raw kv calls with bad pointers; the codes
//
// Errors answer 404 (ErrNotFound), 403 (ErrDenied), 409
// (ErrRevisionMismatch, X-Current-Revision), 400 (other) with the error.
package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unsafe"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

func init() {
	nimbus.HandleFunc(serve)
}

func main() {}

func fail(w http.ResponseWriter, err error) {
	var mm *nimbus.RevisionMismatchError
	status := http.StatusBadRequest
	switch {
	case errors.As(err, &mm):
		w.Header().Set("X-Current-Revision", strconv.FormatUint(mm.Current, 10))
		status = http.StatusConflict
	case errors.Is(err, nimbus.ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, nimbus.ErrDenied):
		status = http.StatusForbidden
	}
	w.WriteHeader(status)
	fmt.Fprint(w, err.Error())
}

func options(r *http.Request) ([]nimbus.Option, error) {
	var opts []nimbus.Option
	if s := r.URL.Query().Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nimbus.TTL(d))
	}
	if s := r.URL.Query().Get("if"); s != "" {
		rev, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return nil, err
		}
		opts = append(opts, nimbus.IfRevision(rev))
	}
	return opts, nil
}

func serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	b := nimbus.Bucket(q.Get("b"))
	key := q.Get("k")
	switch r.URL.Path {
	case "/get":
		v, rev, err := b.Get(key)
		if err != nil {
			fail(w, err)
			return
		}
		w.Header().Set("X-Revision", strconv.FormatUint(rev, 10))
		w.Write(v)
	case "/put":
		opts, err := options(r)
		if err != nil {
			fail(w, err)
			return
		}
		v, _ := io.ReadAll(r.Body)
		rev, err := b.Put(key, v, opts...)
		if err != nil {
			fail(w, err)
			return
		}
		fmt.Fprint(w, rev)
	case "/delete":
		opts, err := options(r)
		if err != nil {
			fail(w, err)
			return
		}
		if err := b.Delete(key, opts...); err != nil {
			fail(w, err)
		}
	case "/list":
		keys, err := b.List(q.Get("p"))
		if err != nil {
			fail(w, err)
			return
		}
		fmt.Fprint(w, strings.Join(keys, "\n"))
	case "/incr":
		n, _ := strconv.Atoi(q.Get("n"))
		conflicts := 0
		for i := 0; i < n; {
			v, rev, err := b.Get(key)
			if err != nil && !errors.Is(err, nimbus.ErrNotFound) {
				fail(w, err)
				return
			}
			c, _ := strconv.Atoi(string(v))
			_, err = b.Put(key, []byte(strconv.Itoa(c+1)), nimbus.IfRevision(rev))
			switch {
			case err == nil:
				i++
			case errors.Is(err, nimbus.ErrRevisionMismatch):
				conflicts++
			default:
				fail(w, err)
				return
			}
		}
		fmt.Fprint(w, conflicts)
	case "/loop":
		n, _ := strconv.Atoi(q.Get("n"))
		value := []byte("0123456789abcdef")
		for i := 0; i < n; i++ {
			var err error
			if q.Get("op") == "put" {
				_, err = b.Put(key, value)
			} else {
				_, _, err = b.Get(key)
			}
			if err != nil {
				fail(w, err)
				return
			}
		}
	case "/hostile":
		hostile(w)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// The raw imports, declared again with plain integers so the guest can pass
// any pointer a hostile guest could.

//go:wasmimport nimbus kv_get
func rawGet(bucket, bucketLen, key, keyLen, buf, bufCap, out uint32) int32

//go:wasmimport nimbus kv_put
func rawPut(bucket, bucketLen, key, keyLen, val, valLen uint32, ttlMS, ifRevision int64, out uint32) int32

var names = []byte("countsk")
var out [16]byte

func hostile(w http.ResponseWriter) {
	bucket := uint32(uintptr(unsafe.Pointer(&names[0])))
	key := bucket + 6
	o := uint32(uintptr(unsafe.Pointer(&out[0])))
	codes := []int32{
		rawGet(0xfffffff0, 6, key, 1, o, 8, o),               // bucket outside memory
		rawGet(bucket, 0xffffffff, key, 1, o, 8, o),          // bucket length 4GiB
		rawGet(bucket, 6, key, 1, 0xffffff00, 200, o),        // buffer outside memory
		rawGet(bucket, 6, key, 1, o, 8, 0xfffffffc),          // out outside memory
		rawPut(bucket, 6, key, 1, 0xfffffff0, 100, 0, -1, o), // value outside memory
		rawPut(bucket, 6, key, 1, o, 4, -5, -1, o),           // negative TTL
	}
	for _, c := range codes {
		fmt.Fprintln(w, c)
	}
}
