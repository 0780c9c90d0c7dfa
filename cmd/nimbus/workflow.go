package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

func newWorkflow(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "wf",
		Aliases: []string{"workflow"},
		Short:   "Start and inspect durable workflow runs",
		Long: `Durable workflows are functions with kind: workflow in nimbus.yaml (see
docs/workflows.md). A run's id is an idempotency key: starting an id that
exists shows that run and starts nothing.`,
	}
	cmd.AddCommand(newWFStart(g), newWFLs(g), newWFShow(g), newWFSignal(g), newWFCancel(g), newWFPause(g), newWFResume(g), newWFTerminate(g), newWFRetry(g), newWFRevisions(g))
	return cmd
}

func newWFStart(g *globals) *cobra.Command {
	var id, input, wait string
	cmd := &cobra.Command{
		Use:   "start APP/WORKFLOW",
		Short: "Start a run (or find the run with --id)",
		Long: `Start a run of a workflow with a JSON input. With --wait, wait for its
result (at most 1m); exits 1 if the run failed.`,
		Example: `  nimbus wf start shop/checkout -i '{"order":"o-1","amount":42}'
  nimbus wf start shop/checkout --id order-o-1 -i '{"order":"o-1"}' --wait 10s
  nimbus wf start shop/checkout --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, wf, ok := strings.Cut(args[0], "/")
			if !ok || app == "" || wf == "" {
				return fmt.Errorf("%q: name the workflow as APP/WORKFLOW, such as shop/checkout", args[0])
			}
			if input != "" && !json.Valid([]byte(input)) {
				return fmt.Errorf("--input %q is not JSON: quote strings ('\"text\"') and objects ('{\"k\":1}')", input)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.StartRun(cmd.Context(), app, wf, api.StartRunRequest{ID: id, Input: json.RawMessage(input), Wait: wait})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, res)
			}
			r := res.Run
			note := ""
			if !res.Created {
				note = " (existing run: nothing started)"
			}
			fmt.Printf("%s  %s  %s%s\n", r.ID, r.Workflow, r.State, note)
			printOutcome(r)
			if r.State == workflow.StateFailed || r.State == workflow.StateCancelled || r.State == workflow.StateTerminated {
				return &exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the run id (an idempotency key); default a random one")
	cmd.Flags().StringVarP(&input, "input", "i", "", "the run's input, a JSON value")
	cmd.Flags().StringVar(&wait, "wait", "", "wait this long for the result, such as 10s (at most 1m)")
	return cmd
}

func printOutcome(r *workflow.Run) {
	switch r.State {
	case workflow.StateCompleted:
		fmt.Printf("result: %s\n", r.Result)
	case workflow.StateFailed:
		fmt.Printf("error: %s\n", r.Error)
	case workflow.StateSleeping:
		fmt.Printf("sleeping until %s\n", r.WakeAt.Local().Format(time.RFC3339))
	case workflow.StateWaiting:
		if r.WakeAt.IsZero() {
			fmt.Println("waiting for a signal")
		} else {
			fmt.Printf("waiting for a signal until %s\n", r.WakeAt.Local().Format(time.RFC3339))
		}
	case workflow.StateCancelled, workflow.StateTerminated:
		fmt.Printf("%s: %s\n", r.State, r.Error)
	}
}

func newWFLs(g *globals) *cobra.Command {
	var o workflow.ListOptions
	cmd := &cobra.Command{
		Use:   "ls APP",
		Short: "List an app's runs, newest first",
		Example: `  nimbus wf ls shop
  nimbus wf ls shop --workflow checkout --state failed
  nimbus wf ls shop --limit 10 --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			runs, err := c.Runs(cmd.Context(), args[0], o)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, runs)
			}
			if len(runs) == 0 {
				stderrf("no runs\n")
				return nil
			}
			fmt.Printf("%-40s %-16s %-10s %-12s %5s  %s\n", "RUN", "WORKFLOW", "STATE", "REVISION", "STEPS", "STARTED")
			for _, r := range runs {
				fmt.Printf("%-40s %-16s %-10s %-12s %5d  %s\n", r.ID, r.Workflow, r.State, short(r.Revision), r.Steps, r.Created.Local().Format(time.DateTime))
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.Workflow, "workflow", "", "only runs of this workflow")
	cmd.Flags().StringVar(&o.State, "state", "", "only runs in this state: running, sleeping, waiting, paused, cancelling, completed, failed, cancelled, terminated")
	cmd.Flags().IntVar(&o.Limit, "limit", 100, "at most this many runs")
	cmd.Flags().BoolVar(&o.InFlight, "in-flight", false, "only runs that are not finished")
	return cmd
}

func newWFRevisions(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revisions APP",
		Short: "Show which revisions still have runs in flight",
		Long: `Count an app's runs that are not finished by the function revision each
started on (nimbus wf ls shows each run's revision). A revision listed here
still has runs on its code: a run stays on the revision it started on, and
the node keeps that revision's module loaded until its last run ends.`,
		Example: `  nimbus wf revisions shop
  nimbus wf revisions shop --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			runs, err := c.Runs(cmd.Context(), args[0], workflow.ListOptions{InFlight: true, Limit: 10000})
			if err != nil {
				return err
			}
			type row struct {
				Revision string `json:"revision"`
				Workflow string `json:"workflow"`
				Runs     int    `json:"runs"`
			}
			var rows []row
			at := map[[2]string]int{}
			for _, r := range runs {
				k := [2]string{r.Revision, r.Workflow}
				i, ok := at[k]
				if !ok {
					i = len(rows)
					at[k] = i
					rows = append(rows, row{Revision: r.Revision, Workflow: r.Workflow})
				}
				rows[i].Runs++
			}
			if g.json {
				if rows == nil {
					rows = []row{}
				}
				return printJSON(os.Stdout, rows)
			}
			if len(rows) == 0 {
				stderrf("no runs in flight\n")
				return nil
			}
			fmt.Printf("%-12s %-16s %s\n", "REVISION", "WORKFLOW", "RUNS IN FLIGHT")
			for _, r := range rows {
				fmt.Printf("%-12s %-16s %d\n", short(r.Revision), r.Workflow, r.Runs)
			}
			return nil
		},
	}
}

func newWFShow(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show APP RUN",
		Short: "Show a run and its timeline (steps, attempts, sleeps)",
		Example: `  nimbus wf show shop order-o-1
  nimbus wf show shop order-o-1 --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.Run(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, info)
			}
			queued := ""
			if info.Queued {
				queued = " (queued: waiting for its turn under the workflow's flow control)"
			}
			fmt.Printf("%s  %s  %s%s  revision %s\n", info.ID, info.Workflow, info.State, queued, short(info.Revision))
			if info.Parent != "" {
				fmt.Printf("child of run %s\n", info.Parent)
			}
			fmt.Printf("trace: %s\n", info.TraceID)
			fmt.Printf("input: %s\n", info.Input)
			printOutcome(&info.Run)
			start := info.Created
			for _, e := range info.Timeline {
				at := e.Time.Sub(start).Round(time.Millisecond)
				line := fmt.Sprintf("  +%-9s %-9s", at, e.Type)
				switch e.Type {
				case workflow.EntryStep:
					line += fmt.Sprintf(" #%d %s (attempt %d, %dms)", e.Pos, e.Name, e.Attempt, e.DurationMS)
					if e.Failed {
						line += " failed: " + e.Error
					} else {
						line += " -> " + clip(string(e.Result), 80)
					}
				case workflow.EntryAttempt:
					line += fmt.Sprintf(" #%d %s attempt %d failed: %s; retry at +%s", e.Pos, e.Name, e.Attempt, clip(e.Error, 80), e.WakeAt.Sub(start).Round(time.Millisecond))
				case workflow.EntrySleep:
					line += fmt.Sprintf(" #%d until +%s", e.Pos, e.WakeAt.Sub(start).Round(time.Millisecond))
				case workflow.EntryFailed, workflow.EntryCancelled, workflow.EntryCancel, workflow.EntryPause, workflow.EntryTerminated:
					line += " " + clip(e.Error, 120)
				case workflow.EntrySignal:
					line += fmt.Sprintf(" %s %s", e.Name, clip(string(e.Result), 80))
				case workflow.EntryWaiting:
					line += fmt.Sprintf(" #%d for signal %s", e.Pos, e.Name)
					if !e.WakeAt.IsZero() {
						line += fmt.Sprintf(" until +%s", e.WakeAt.Sub(start).Round(time.Millisecond))
					}
				case workflow.EntryWait:
					if e.Failed {
						line += fmt.Sprintf(" #%d %s: %s", e.Pos, e.Name, e.Error)
					} else {
						line += fmt.Sprintf(" #%d %s -> %s", e.Pos, e.Name, clip(string(e.Result), 80))
					}
				case workflow.EntryRetry:
					line += fmt.Sprintf(" from #%d %s (was: %s)", e.Pos, e.Name, clip(e.Error, 80))
				case workflow.EntryCut:
					line += fmt.Sprintf(" #%d cancelled here (instead of %s)", e.Pos, e.Name)
				}
				fmt.Println(line)
			}
			return nil
		},
	}
}
