package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/workflow"
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

// runControl describes one of the commands that act on a run and answer
// it (cancel, pause, resume, terminate).
type runControl struct {
	use, short, long, example string
	// withReason adds --reason, recorded in the run's timeline.
	withReason bool
	// call asks the API; next, when set, says what happens to the run now.
	call func(c *client.Client, ctx context.Context, app, run, reason string) (*workflow.Run, error)
	next func(app string, run *workflow.Run) string
}

func (rc runControl) command(g *globals) *cobra.Command {
	var reason string
	cmd := &cobra.Command{
		Use: rc.use, Short: rc.short, Long: rc.long, Example: rc.example,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			run, err := rc.call(c, cmd.Context(), args[0], args[1], reason)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, run)
			}
			line := fmt.Sprintf("%s  %s  %s", run.ID, run.Workflow, run.State)
			if rc.next != nil {
				line += ": " + rc.next(args[0], run)
			}
			fmt.Println(line)
			return nil
		},
	}
	if rc.withReason {
		cmd.Flags().StringVar(&reason, "reason", "", "why, recorded in the run's timeline")
	}
	return cmd
}

func newWFCancel(g *globals) *cobra.Command {
	return runControl{
		use:   "cancel APP RUN",
		short: "Cancel a run: it stops at its next step and runs its compensations",
		long: `Request the cancellation of a run. It stops at its next operation (a step,
sleep or signal wait; a step running now finishes), runs the compensations
its code registered (wf.Compensate), in reverse order, each once, and ends
cancelled. Cancelling a finished run, or one already being cancelled, is
refused with a 409 (exit 1) and changes nothing.`,
		example: `  nimbus wf cancel shop order-o-1
  nimbus wf cancel shop order-o-1 --reason "customer asked" --json`,
		withReason: true,
		call:       (*client.Client).Cancel,
		next: func(app string, run *workflow.Run) string {
			return fmt.Sprintf("it stops at its next step and runs its compensations (nimbus wf show %s %s)", app, run.ID)
		},
	}.command(g)
}

func newWFPause(g *globals) *cobra.Command {
	return runControl{
		use:   "pause APP RUN",
		short: "Pause a run: it starts no new step until resumed",
		long: `Pause a run. A step running now finishes; the run then starts nothing
new (no step, sleep or wait) and holds no instance until "nimbus wf resume".
Signals sent meanwhile are kept. A restart keeps it paused. Pausing a
finished, cancelling or paused run is refused with a 409 (exit 1).`,
		example: `  nimbus wf pause shop order-o-1 --reason "supplier outage"
  nimbus wf ls shop --state paused
  nimbus wf resume shop order-o-1`,
		withReason: true,
		call:       (*client.Client).Pause,
		next: func(app string, run *workflow.Run) string {
			return fmt.Sprintf("it starts no new step until `nimbus wf resume %s %s`", app, run.ID)
		},
	}.command(g)
}

func newWFResume(g *globals) *cobra.Command {
	return runControl{
		use:   "resume APP RUN",
		short: "Resume a paused run",
		long: `Resume a paused run: it goes on from where it stopped. Resuming a run that
is not paused is refused with a 409 (exit 1).`,
		example: `  nimbus wf resume shop order-o-1
  nimbus wf resume shop order-o-1 --json`,
		call: func(c *client.Client, ctx context.Context, app, run, _ string) (*workflow.Run, error) {
			return c.Resume(ctx, app, run)
		},
	}.command(g)
}

func newWFTerminate(g *globals) *cobra.Command {
	return runControl{
		use:   "terminate APP RUN",
		short: "End a run now, without running its compensations",
		long: `Terminate a run: it ends at once in state terminated; no more of its code
runs, and its compensations do not run (use "nimbus wf cancel" to undo
what it did). Terminating a finished run is refused with a 409 (exit 1).`,
		example: `  nimbus wf terminate shop order-o-1 --reason "stuck on a retired API"
  nimbus wf terminate shop order-o-1 --json`,
		withReason: true,
		call:       (*client.Client).Terminate,
	}.command(g)
}

func newWFRetry(g *globals) *cobra.Command {
	return runControl{
		use:   "retry APP RUN",
		short: "Retry a failed run from its failed step",
		long: `Retry a failed run: it goes on from the step that failed (the last one
that failed for good). The steps before it keep their recorded results and
do not run again; the failed step runs again with its whole retry policy
and the same idempotency key; the timeline keeps the failure. Deploy a fix
first if the failure was a bug. A run that is not failed, or whose
compensations ran, is refused with a 409 (exit 1) and nothing changes.`,
		example: `  nimbus wf retry shop order-o-2
  nimbus wf retry shop order-o-2 --json`,
		call: func(c *client.Client, ctx context.Context, app, run, _ string) (*workflow.Run, error) {
			return c.Retry(ctx, app, run)
		},
		next: func(app string, run *workflow.Run) string {
			return fmt.Sprintf("it goes on from position %d (nimbus wf show %s %s)", run.Steps, app, run.ID)
		},
	}.command(g)
}
