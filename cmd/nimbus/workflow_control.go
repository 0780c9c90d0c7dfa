package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func newWFSignal(g *globals) *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "signal APP RUN NAME",
		Short: "Send a signal to a run (its code waits for it with WaitForEvent)",
		Long: `Send the signal NAME with a JSON payload to a run. The signal is durable
once this returns; a run that waits for NAME gets it now, one that does
not wait yet gets it at its wait (signals of a name are taken in the order
they arrived, each once). A finished run refuses signals (exit 1, 409); an
unknown run is a 404.`,
		Example: `  nimbus wf signal shop order-o-1 approval -d '{"approved":true,"by":"ana"}'
  nimbus wf signal shop order-o-1 approval -d '"yes"' --json`,
		Args: cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			if data != "" && !json.Valid([]byte(data)) {
				return fmt.Errorf("--data %q is not JSON: quote strings ('\"yes\"') and objects ('{\"approved\":true}')", data)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			res, err := c.Signal(cmd.Context(), args[0], args[1], args[2], json.RawMessage(data))
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, res)
			}
			fmt.Printf("signal %s sent to %s (run %s)\n", res.Signal, res.RunID, res.State)
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "the signal's payload, a JSON value (default null)")
	return cmd
}

func newWFCancel(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "cancel APP RUN",
		Short: "Cancel a run: it stops at its next step and runs its compensations",
		Long: `Request the cancellation of a run. It stops at its next operation (a step,
sleep or signal wait; a step running now finishes), runs the compensations
its code registered (wf.Compensate), in reverse order, each once, and ends
cancelled. Cancelling a finished run, or one already being cancelled, is
refused with a 409 (exit 1) and changes nothing.`,
		Example: `  nimbus wf cancel shop order-o-1
  nimbus wf cancel shop order-o-1 --reason "customer asked" --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			run, err := c.Cancel(cmd.Context(), args[0], args[1], reason)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, run)
			}
			fmt.Printf("%s  %s  %s: it stops at its next step and runs its compensations (nimbus wf show %s %s)\n",
				run.ID, run.Workflow, run.State, args[0], run.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the run's timeline")
	return cmd
}

func newWFPause(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "pause APP RUN",
		Short: "Pause a run: it starts no new step until resumed",
		Long: `Pause a run. A step running now finishes; the run then starts nothing
new (no step, sleep or wait) and holds no instance until "nimbus wf resume".
Signals sent meanwhile are kept. A restart keeps it paused. Pausing a
finished, cancelling or paused run is refused with a 409 (exit 1).`,
		Example: `  nimbus wf pause shop order-o-1 --reason "supplier outage"
  nimbus wf ls shop --state paused
  nimbus wf resume shop order-o-1`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			run, err := c.Pause(cmd.Context(), args[0], args[1], reason)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, run)
			}
			fmt.Printf("%s  %s  %s: it starts no new step until `nimbus wf resume %s %s`\n", run.ID, run.Workflow, run.State, args[0], run.ID)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the run's timeline")
	return cmd
}

func newWFResume(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "resume APP RUN",
		Short: "Resume a paused run",
		Long: `Resume a paused run: it goes on from where it stopped. Resuming a run that
is not paused is refused with a 409 (exit 1).`,
		Example: `  nimbus wf resume shop order-o-1
  nimbus wf resume shop order-o-1 --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			run, err := c.Resume(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, run)
			}
			fmt.Printf("%s  %s  %s\n", run.ID, run.Workflow, run.State)
			return nil
		},
	}
}

func newWFTerminate(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use:   "terminate APP RUN",
		Short: "End a run now, without running its compensations",
		Long: `Terminate a run: it ends at once in state terminated; no more of its code
runs, and its compensations do not run (use "nimbus wf cancel" to undo
what it did). Terminating a finished run is refused with a 409 (exit 1).`,
		Example: `  nimbus wf terminate shop order-o-1 --reason "stuck on a retired API"
  nimbus wf terminate shop order-o-1 --json`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			run, err := c.Terminate(cmd.Context(), args[0], args[1], reason)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, run)
			}
			fmt.Printf("%s  %s  %s\n", run.ID, run.Workflow, run.State)
			return nil
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the run's timeline")
	return cmd
}
