package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/client"
)

type globals struct {
	server string
	json   bool
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "nimbus",
		Short: "Nimbus: a self-hosted serverless platform in one binary",
		Long: `Nimbus runs WebAssembly functions declared in a nimbus.yaml manifest,
on an embedded NATS JetStream store.

Start a server with an app, then talk to it from another terminal:`,
		Example: `  nimbus up examples/hello          # start the platform and deploy the app
  nimbus invoke hello/hello -d world  # call a function
  nimbus ls                           # list apps, functions, routes`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// pflag takes a back-quoted word of the usage as the value's name:
	// the first one is URL, not a command quoted later.
	root.PersistentFlags().StringVar(&g.server, "server", "", "API `URL`, e.g. 127.0.0.1:8081 (default: $NIMBUS_URL, then the config file written by 'nimbus up', then "+client.DefaultServer+")")
	root.PersistentFlags().BoolVar(&g.json, "json", false, "print machine-readable JSON")
	root.AddCommand(
		newNew(g), newUp(g), newValidate(g), newDeploy(g), newLs(g), newRollback(g),
		newInvoke(g), newInvocation(g), newWorkflow(g), newLogs(g), newKV(g), newPublish(g), newDLQ(g), newDelete(g), newToken(g), newSecret(g), newAudit(g), newVersion(g),
	)
	return root
}

// client returns an API client from flags, environment and config.
func (g *globals) client() (*client.Client, error) {
	t, err := client.ResolveTarget(g.server)
	if err != nil {
		return nil, err
	}
	c := client.New(t.Server, t.Token)
	c.TokenSource = t.TokenSource
	return c, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func stderrf(format string, a ...any) { fmt.Fprintf(os.Stderr, format, a...) }

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
