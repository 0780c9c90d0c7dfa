// Command nimbus is the Nimbus server and CLI in one binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/nimbus-dev/nimbus/internal/client"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRoot()
	err := root.ExecuteContext(ctx)
	stop()
	if err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		if asJSON, _ := root.PersistentFlags().GetBool("json"); asJSON {
			json.NewEncoder(os.Stderr).Encode(jsonError(err))
		} else {
			fmt.Fprintln(os.Stderr, "error:", err)
		}
		os.Exit(1)
	}
}

// errorBody is how an error is printed with --json (on stderr), the same
// envelope as the API's: {"error": {"code", "message", "status"}}.
type errorBody struct {
	Error struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Status  int             `json:"status,omitempty"`
		Details json.RawMessage `json:"details,omitempty"`
	} `json:"error"`
}

// jsonError describes err for --json: the server's code and status when it
// answered one, else code "error".
func jsonError(err error) errorBody {
	var b errorBody
	b.Error.Code, b.Error.Message = "error", err.Error()
	var ce *client.Error
	if errors.As(err, &ce) {
		b.Error.Code, b.Error.Status, b.Error.Details = ce.Code, ce.Status, ce.Details
	}
	return b
}

// exitError ends the program with a code after the command printed its own
// message.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }
