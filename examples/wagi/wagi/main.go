// Command wagi is an example WAGI function: a plain WASI command with no
// SDK. The request arrives in CGI environment variables and stdin; the
// response is CGI on stdout. Build it with
//
//	GOOS=wasip1 GOARCH=wasm go build -o wagi.wasm .
package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	body, _ := io.ReadAll(os.Stdin)
	name := os.Getenv("X_PARAM_NAME") // the route's {name} parameter
	if name == "" {
		name = "world"
	}
	fmt.Print("Content-Type: text/plain; charset=utf-8\n\n")
	fmt.Printf("hello, %s\n", name)
	fmt.Printf("method: %s\npath: %s\nquery: %s\n", os.Getenv("REQUEST_METHOD"), os.Getenv("PATH_INFO"), os.Getenv("QUERY_STRING"))
	if len(body) > 0 {
		fmt.Printf("body: %s\n", body)
	}
}
