package nimbus_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	nimbus "github.com/nimbus-dev/nimbus/sdk/go"
)

// A function is an http.Handler. Registered from init, it serves every
// request the function receives; on the host it can be tested with httptest.
func ExampleHandleFunc() {
	hello := func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		if name == "" {
			name = "world"
		}
		fmt.Fprintf(w, "hello, %s", name)
	}
	nimbus.HandleFunc(hello)

	// On the host, the same handler runs under httptest.
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/hello/gopher", nil)
	req.SetPathValue("name", "gopher")
	hello(rec, req)
	body, _ := io.ReadAll(rec.Result().Body)
	fmt.Println(string(body))
	// Output: hello, gopher
}

// HandleRequest is the lean alternative to HandleFunc: the SDK's own
// request and response types, no net/http maps. On the host, a handler is
// tested by calling it with a Request and Response of its own.
func ExampleHandleRequest() {
	hello := func(w *nimbus.Response, r *nimbus.Request) {
		w.SetHeader("Content-Type", "text/plain; charset=utf-8")
		w.WriteString("hello, ")
		w.WriteString(r.PathValue("name"))
	}
	nimbus.HandleRequest(hello)

	r := &nimbus.Request{Method: "GET", Path: "/hello/gopher"}
	r.SetPathValue("name", "gopher")
	var w nimbus.Response
	hello(&w, r)
	fmt.Println(w.Status(), w.Header("content-type"), string(w.Body()))
	// Output: 200 text/plain; charset=utf-8 hello, gopher
}
