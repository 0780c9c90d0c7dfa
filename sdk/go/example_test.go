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
