package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/scaffold"
)

func newNew(g *globals) *cobra.Command {
	var opts scaffold.Options
	cmd := &cobra.Command{
		Use:   "new DIR",
		Short: "Start a function project of your own in DIR",
		Long: `Write a new app into DIR (created, or empty): a nimbus.yaml, a go.mod and
one function, ready for 'nimbus up DIR'. It builds anywhere, outside the
Nimbus repository and without network access.

Templates:
  go    a function written with the Nimbus Go SDK: an http.Handler built as a
        WASI reactor (pooled instances serve many requests). The SDK is not
        published as a module yet, so a copy of it (the version of this
        binary) is written to DIR/nimbus-sdk and go.mod requires it through a
        replace; once it is published, delete both and 'go get' it.
  lean  the same function with the SDK's lean API (nimbus.HandleRequest: its
        own request and response types, several times less work per
        request than net/http's); the SDK copy as for go.
  wagi  a plain Go program speaking WAGI (CGI over WASI): no SDK, the
        request in environment variables and stdin, the response on stdout.

The app is named after DIR unless --app says otherwise; its routes are
/APP and /APP/{name}. Needs Go 1.24 or later to build.`,
		Example: `  nimbus new hello-fn && nimbus up hello-fn
  nimbus new --template lean ./fast-fn
  nimbus new --template wagi --app cgi-demo ./cgi
  nimbus new --module example.com/shop/api ./api`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts.SDKVersion = version
			res, err := scaffold.Create(args[0], opts)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, res)
			}
			printNew(args[0], res)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&opts.Template, "template", "t", scaffold.TemplateGo, "what to start from: "+strings.Join(scaffold.Templates, ", ")+" (lean: the SDK's HandleRequest API)")
	f.StringVar(&opts.App, "app", "", "app name, a DNS label (default: DIR's name)")
	f.StringVar(&opts.Module, "module", "", "Go module path of the project (default: the app name)")
	return cmd
}

func printNew(dir string, res *scaffold.Result) {
	fmt.Printf("created app %s in %s (template %s):\n", res.App, dir, res.Template)
	sdkShown := false
	for _, f := range res.Files {
		if strings.HasPrefix(f, scaffold.SDKDir+"/") {
			if !sdkShown {
				fmt.Printf("  %s/  the Nimbus Go SDK %s (go.mod replaces %s with it)\n", scaffold.SDKDir, res.SDKVersion, scaffold.SDKModule)
				sdkShown = true
			}
			continue
		}
		fmt.Printf("  %s\n", f)
	}
	fmt.Printf("next:\n")
	fmt.Printf("  nimbus up %s   # build, deploy and serve it\n", dir)
	fmt.Printf("  curl http://127.0.0.1:8080/%s/you\n", res.App)
	fmt.Printf("  nimbus deploy %s   # ship a change to a running node\n", dir)
}
