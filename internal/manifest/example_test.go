package manifest_test

import (
	"errors"
	"fmt"

	"github.com/nimbus-dev/nimbus/internal/manifest"
)

func ExampleParse() {
	m, err := manifest.Parse("nimbus.yaml", []byte(`
app: hello
functions:
  hello:
    module: hello/hello.wasm
    memory: 64MiB
    routes: ["GET /hello/{name}"]
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	f := m.Functions[0]
	fmt.Println(m.App, f.Name, f.Runtime, f.MemoryBytes>>20, f.Timeout, f.Routes[0].Method, f.Routes[0].Path)
	// Output: hello hello wasm 64 30s GET /hello/{name}
}

func ExampleParse_errors() {
	_, err := manifest.Parse("nimbus.yaml", []byte(`
app: hello
functions:
  hello:
    module: hello.wasm
    memory: lots
    concurency: 1
`))
	fmt.Println(err)
	var errs manifest.Errors
	if errors.As(err, &errs) {
		fmt.Println(len(errs), "errors; first field:", errs[0].Field)
	}
	// Output:
	// nimbus.yaml:6:13: functions.hello.memory: "lots" is not a size: use a whole number with a unit, such as 64MiB
	// nimbus.yaml:7:5: functions.hello.concurency: unknown field: did you mean "concurrency"? (allowed: runtime, module, command, contract, readiness, isolation, build, memory, timeout, concurrency, max_instances, max_request_body, max_response_body, env, capabilities, routes, triggers, flow, async, kind)
	// 2 errors; first field: functions.hello.memory
}
