package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/guestlog"
	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/server"
)

func newValidate(g *globals) *cobra.Command {
	var policyFile, tenant string
	cmd := &cobra.Command{
		Use:   "validate [DIR]",
		Short: "Check a nimbus.yaml without deploying it",
		Long: `Check the manifest in DIR (or a manifest file) by the rules a deploy of it
meets, short of building modules and what depends on the server (other
apps' routes). Every problem is reported with its file, line, column and
field, and what is allowed instead.

The operator's policy rules (nimbus up --policy) are checked too when given
the same file with --policy, for the tenant --tenant (default: default).
Without it they are not: a node checks them at deploy. Quotas depend on
what the tenant already holds and are checked only by a node.`,
		Example: `  nimbus validate examples/hello
  nimbus validate ./nimbus.yaml --json
  nimbus validate examples/hello --policy /etc/nimbus/policy.yaml --tenant team-a`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "."
			if len(args) == 1 {
				path = args[0]
			}
			var p *policy.Policy
			if policyFile != "" {
				var err error
				if p, err = policy.Load(policyFile); err != nil {
					return err
				}
			}
			m, err := deploy.Validate(path)
			if err == nil && p != nil {
				err = checkPolicy(m, p, tenant)
			}
			if g.json {
				out := map[string]any{"valid": err == nil}
				if err != nil {
					out["errors"] = jsonErrors(err)
				} else {
					out["app"] = m.App
					out["functions"] = len(m.Functions)
				}
				printJSON(os.Stdout, out)
				if err != nil {
					return &exitError{1}
				}
				return nil
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				return &exitError{1}
			}
			fmt.Printf("%s: app %s with %d function(s) is valid\n", m.File, m.App, len(m.Functions))
			if p != nil {
				fmt.Printf("%s: it passes the %d rule(s) of %s for tenant %s (quotas are checked at deploy)\n", m.File, len(p.Rules()), policyFile, model.TenantOr(tenant))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&policyFile, "policy", "", "also check the operator's policy `FILE` (the one given to nimbus up --policy)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "the tenant the rules see (default: default)")
	return cmd
}

// checkPolicy evaluates p's rules on the revision m plans (with
// placeholder modules: no rule sees a module's digest) as a node would
// for tenant; each rule broken is a manifest error at the manifest.
func checkPolicy(m *manifest.Manifest, p *policy.Policy, tenant string) error {
	modules := map[string]string{}
	for _, f := range m.Functions {
		modules[f.Name] = strings.Repeat("0", 64)
	}
	rev, err := server.Check(m.App, m.Spec(modules))
	if err != nil {
		return err
	}
	var de *policy.DeniedError
	if err := p.Check(rev, tenant); !errors.As(err, &de) {
		return err
	}
	var errs manifest.Errors
	for _, v := range de.Violations {
		msg := fmt.Sprintf("policy rule %q (%s): %s", v.Rule, p.File(), v.Message)
		if v.Error != "" {
			msg += " (the rule could not be evaluated: " + v.Error + ")"
		}
		errs = append(errs, &manifest.FieldError{Pos: manifest.Position{File: m.File}, Msg: msg})
	}
	return errs
}

func newDeploy(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "deploy [DIR]",
		Short: "Build DIR's app and deploy it as a new revision",
		Long: `Validate the manifest, run each function's build command (GOOS=wasip1
GOARCH=wasm are set), upload the modules the server does not have yet, and
activate the revision. A revision is content-addressed: deploying an
unchanged app is a no-op and says so.`,
		Example: `  nimbus deploy examples/hello
  NIMBUS_URL=http://10.0.0.5:8081 NIMBUS_TOKEN=nmb_... nimbus deploy .`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "."
			if len(args) == 1 {
				path = args[0]
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := deploy.Run(cmd.Context(), deploy.API{C: c}, path, func(e deploy.Event) {
				if !g.json {
					printProgress(e)
				}
			})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, res)
			}
			printDeployResult(res)
			return nil
		},
	}
}

func newLs(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls [APP]",
		Short: "List apps, functions, revisions and routes",
		Example: `  nimbus ls
  nimbus ls hello          # one app, with its revision history
  nimbus ls --json`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if len(args) == 1 {
				app, err := c.App(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				revs, err := c.Revisions(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				if g.json {
					return printJSON(os.Stdout, map[string]any{"app": app, "revisions": revs})
				}
				printApps(os.Stdout, []appRow{{app.Name, app.Active, app.Functions, app.Instances}})
				fmt.Println()
				tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "HISTORY\tREVISION\tREASON\tACTIVATED")
				for i := len(app.History) - 1; i >= 0; i-- {
					h := app.History[i]
					mark := ""
					if i == len(app.History)-1 {
						mark = "*"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", mark, short(h.Revision), h.Reason, h.ActivatedAt.Local().Format(time.DateTime))
				}
				return tw.Flush()
			}
			apps, err := c.Apps(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, apps)
			}
			if len(apps) == 0 {
				fmt.Println("no apps deployed; `nimbus deploy DIR` deploys one")
				return nil
			}
			rows := make([]appRow, len(apps))
			for i, a := range apps {
				rows[i] = appRow{a.Name, a.Active, a.Functions, a.Instances}
			}
			printApps(os.Stdout, rows)
			return nil
		},
	}
}

func newRollback(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rollback APP [REVISION]",
		Short: "Move an app's traffic back to an earlier revision",
		Long: `Activate REVISION (an id or a unique prefix of at least 7 characters), or,
without it, the revision that was active before the current one.`,
		Example: `  nimbus rollback hello
  nimbus rollback hello 3f9a2c1`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			rev := ""
			if len(args) == 2 {
				rev = args[1]
			}
			res, err := c.Rollback(cmd.Context(), args[0], rev)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, res)
			}
			fmt.Printf("rolled back %s: revision %s is active\n", res.App, short(res.Revision.ID))
			return nil
		},
	}
}

func newInvoke(g *globals) *cobra.Command {
	var data, contentType, key string
	var async, wait bool
	cmd := &cobra.Command{
		Use:   "invoke APP/FUNCTION",
		Short: "Call a function directly, without HTTP routing",
		Long: `Call APP/FUNCTION with a request body and print its response body.
-d takes the data itself, @file to read a file, or @- to read standard input.
The function sees a POST to /. A response status of 400 or more exits 1.
--async queues the invocation and prints its id at once; it runs with
retries (see ` + "`nimbus invocation ID`" + `), once per --idempotency-key.`,
		Example: `  nimbus invoke hello/hello -d world
  nimbus invoke hello/hello -d @payload.json --content-type application/json
  echo hi | nimbus invoke hello/hello -d @-
  nimbus invoke hello/hello --async -d world --idempotency-key order-42
  nimbus invoke hello/hello --async --wait -d world`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, fn, ok := strings.Cut(args[0], "/")
			if !ok || app == "" || fn == "" {
				return fmt.Errorf("%q is not APP/FUNCTION (for example hello/hello)", args[0])
			}
			body, err := readData(data)
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			if async || wait || key != "" {
				return invokeAsync(cmd.Context(), g, c, app, fn, body, contentType, key, wait)
			}
			res, err := c.Invoke(cmd.Context(), app, fn, body, contentType)
			if err != nil {
				return err
			}
			if g.json {
				printJSON(os.Stdout, map[string]any{
					"status": res.Status, "headers": res.Header, "body": string(res.Body),
					"invocation_id": res.InvocationID, "traceparent": res.TraceParent,
				})
			} else {
				os.Stdout.Write(res.Body)
				if len(res.Body) > 0 && res.Body[len(res.Body)-1] != '\n' {
					fmt.Println()
				}
			}
			if res.Status >= 400 {
				if !g.json {
					stderrf("function answered %d (invocation %s)\n", res.Status, res.InvocationID)
				}
				return &exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "request body: text, @file, or @- for standard input")
	cmd.Flags().StringVar(&contentType, "content-type", "", "Content-Type of the request body")
	cmd.Flags().BoolVar(&async, "async", false, "queue the invocation and print its id (it runs with retries)")
	cmd.Flags().BoolVar(&wait, "wait", false, "with --async: wait for the invocation to finish and show it")
	cmd.Flags().StringVar(&key, "idempotency-key", "", "with --async: run once per key (implies --async)")
	return cmd
}

func readData(d string) ([]byte, error) {
	switch {
	case d == "@-":
		return io.ReadAll(os.Stdin)
	case strings.HasPrefix(d, "@"):
		b, err := os.ReadFile(d[1:])
		if err != nil {
			return nil, fmt.Errorf("-d %s: %w", d, err)
		}
		return b, nil
	}
	return []byte(d), nil
}

func newLogs(g *globals) *cobra.Command {
	var q client.LogQuery
	cmd := &cobra.Command{
		Use:   "logs APP[/FUNCTION]",
		Short: "Show what functions wrote to stdout, stderr and the log",
		Long: `Show guest output, each line tagged with its function and invocation id,
and a workflow's lines with their run, and the step, position and attempt
running when the line was written. --run keeps one run's lines.
--since takes a duration (10m) or an RFC 3339 time; -f keeps following.
--json prints one JSON object per line.`,
		Example: `  nimbus logs hello
  nimbus logs hello/hello --since 10m
  nimbus logs shop --run order-1
  nimbus logs hello -f --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, fn, _ := strings.Cut(args[0], "/")
			q.Function = fn
			c, err := g.client()
			if err != nil {
				return err
			}
			if fn != "" {
				if err := checkFunction(cmd.Context(), c, app, fn); err != nil {
					return err
				}
			}
			enc := json.NewEncoder(os.Stdout) // one object per line (NDJSON)
			return c.Logs(cmd.Context(), app, q, func(e guestlog.Entry) error {
				if g.json {
					return enc.Encode(e)
				}
				inv := e.Invocation
				if len(inv) > 12 {
					inv = inv[len(inv)-12:]
				}
				level := e.Stream
				if e.Level != "" {
					level = e.Level
				}
				_, err := fmt.Printf("%s %s %s %-6s %s%s\n", e.Time.Local().Format("15:04:05.000"), e.Function, inv, level, runTag(e), e.Message)
				return err
			})
		},
	}
	cmd.Flags().BoolVarP(&q.Follow, "follow", "f", false, "keep streaming new lines")
	cmd.Flags().StringVar(&q.Since, "since", "", "only lines newer than this (10m, 2h, or RFC 3339)")
	cmd.Flags().IntVar(&q.Limit, "limit", 0, "at most this many lines (0: no limit)")
	cmd.Flags().StringVar(&q.Run, "run", "", "only the lines of this workflow run")
	return cmd
}

// runTag is how a line of a workflow run shows its run and step:
// "[run order-1 step 2 charge attempt 1] ", "[run order-1] " outside
// steps, "" for other invocations.
func runTag(e guestlog.Entry) string {
	switch {
	case e.Run == "":
		return ""
	case e.Step == nil:
		return "[run " + e.Run + "] "
	}
	return fmt.Sprintf("[run %s step %d %s attempt %d] ", e.Run, e.Step.Position, e.Step.Name, e.Step.Attempt)
}

// checkFunction fails unless app has (or had, in some revision) a function
// named fn, so a typo in logs APP/FUNCTION is not an empty answer.
func checkFunction(ctx context.Context, c *client.Client, app, fn string) error {
	revs, err := c.Revisions(ctx, app)
	if err != nil {
		return err
	}
	var names []string
	for _, r := range revs {
		for _, f := range r.Functions {
			if f.Name == fn {
				return nil
			}
			if !slices.Contains(names, f.Name) {
				names = append(names, f.Name)
			}
		}
	}
	sort.Strings(names)
	return fmt.Errorf("app %s has no function %q in any revision (functions: %s)", app, fn, strings.Join(names, ", "))
}

func newDelete(g *globals) *cobra.Command {
	var yes bool
	cmd := &cobra.Command{
		Use:   "delete APP",
		Short: "Stop serving an app and forget its revisions",
		Long: `Delete APP: its routes stop answering, its triggers and cron schedules
stop, and its revisions are forgotten (a rollback is no longer possible).
The data in its key-value buckets is kept. Asks you to type the app's name
to confirm; --yes skips that (needed when standard input is not a
terminal).`,
		Example: `  nimbus delete hello
  nimbus delete hello --yes --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			c, err := g.client()
			if err != nil {
				return err
			}
			app, err := c.App(cmd.Context(), name)
			if err != nil {
				return err
			}
			if !yes {
				if err := confirm(name, "delete app "+name, fmt.Sprintf("%d function(s) and %d revision(s) go; its bucket data stays", len(app.Functions), app.Revisions)); err != nil {
					return err
				}
			}
			if err := c.DeleteApp(cmd.Context(), name); err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, map[string]any{"app": name, "deleted": true})
			}
			fmt.Printf("deleted app %s\n", name)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	return cmd
}

// confirm asks the user on the terminal to type want before action (what
// it does: detail); it refuses when standard input is not a terminal.
func confirm(want, action, detail string) error {
	if fi, err := os.Stdin.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("refusing to %s without confirmation: standard input is not a terminal; pass --yes", action)
	}
	stderrf("%s: %s.\nType %q to confirm: ", action, detail, want)
	line, _ := bufio.NewReader(os.Stdin).ReadString('\n')
	if strings.TrimSpace(line) != want {
		return errors.New("not confirmed; nothing was deleted (--yes skips the question)")
	}
	return nil
}

func newVersion(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print the version",
		Example: "  nimbus version",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if g.json {
				return printJSON(os.Stdout, map[string]string{"version": version})
			}
			fmt.Println("nimbus", version)
			return nil
		},
	}
}

type appRow struct {
	name      string
	active    string
	functions []model.Function
	instances map[string]api.Instances
}

func printApps(w io.Writer, rows []appRow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tFUNCTION\tREVISION\tINSTANCES\tROUTES")
	for _, r := range rows {
		fns := append([]model.Function(nil), r.functions...)
		sort.Slice(fns, func(i, j int) bool { return fns[i].Name < fns[j].Name })
		if len(fns) == 0 {
			fmt.Fprintf(tw, "%s\t-\t%s\t-\t-\n", r.name, short(r.active))
		}
		for _, fn := range fns {
			var routes []string
			for _, rt := range fn.Routes {
				if rt.Method != "" {
					routes = append(routes, rt.Method+" "+rt.Path)
				} else {
					routes = append(routes, rt.Path)
				}
			}
			if len(routes) == 0 {
				routes = []string{"-"}
			}
			in := r.instances[fn.Name]
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d idle, %d busy\t%s\n", r.name, fn.Name, short(r.active), in.Idle, in.Busy, strings.Join(routes, ", "))
		}
	}
	tw.Flush()
}

// validationError is one manifest problem in `validate --json`.
type validationError struct {
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	Col     int    `json:"col,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func jsonErrors(err error) []validationError {
	var fes manifest.Errors
	var one *manifest.FieldError
	switch {
	case errors.As(err, &fes):
	case errors.As(err, &one):
		fes = manifest.Errors{one}
	default:
		return []validationError{{Message: err.Error()}}
	}
	out := make([]validationError, len(fes))
	for i, fe := range fes {
		out[i] = validationError{File: fe.Pos.File, Line: fe.Pos.Line, Col: fe.Pos.Col, Field: fe.Field, Message: fe.Msg}
	}
	return out
}
