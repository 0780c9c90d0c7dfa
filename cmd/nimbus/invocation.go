package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/events"
)

// invokeAsync is `nimbus invoke --async`: queue, print the id, and with
// wait follow the invocation to its end.
func invokeAsync(ctx context.Context, g *globals, c *client.Client, app, fn string, body []byte, contentType, key string, wait bool) error {
	acc, err := c.InvokeAsync(ctx, app, fn, body, contentType, key)
	if err != nil {
		return err
	}
	if wait {
		return showInvocation(ctx, g, c, acc.ID, true)
	}
	if g.json {
		return printJSON(os.Stdout, acc)
	}
	if acc.Duplicate {
		fmt.Printf("%s (already queued with this idempotency key)\n", acc.ID)
	} else {
		fmt.Println(acc.ID)
	}
	stderrf("queued; `nimbus invocation %s` shows its state\n", acc.ID)
	return nil
}

func newInvocation(g *globals) *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use:   "invocation ID",
		Short: "Show the state of an async invocation",
		Long: `Show an async invocation (queued with ` + "`nimbus invoke --async`" + ` or an HTTP
request with "Prefer: respond-async"): its state (queued, running, retrying,
succeeded, failed, superseded), attempts, and the function's answer or the
last error. --wait follows it until it is done. Exits 1 if it failed.`,
		Example: `  nimbus invocation inv-42
  nimbus invocation inv-42 --wait --json
  nimbus invocation $(nimbus invoke hello/hello --async -d world) --wait`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			return showInvocation(cmd.Context(), g, c, args[0], wait)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the invocation succeeded or failed")
	return cmd
}

// showInvocation prints an invocation, after waiting for its end if wait.
func showInvocation(ctx context.Context, g *globals, c *client.Client, id string, wait bool) error {
	inv, err := c.Invocation(ctx, id)
	if err != nil {
		return err
	}
	last := ""
	delay := 50 * time.Millisecond
	for wait && !inv.Done() {
		if s := fmt.Sprintf("%s %d", inv.State, inv.Attempts); s != last && !g.json {
			if inv.Attempts > 0 {
				stderrf("%s: %s (attempt %d)\n", id, inv.State, inv.Attempts)
			} else {
				stderrf("%s: %s\n", id, inv.State)
			}
			last = s
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, time.Second)
		if inv, err = c.Invocation(ctx, id); err != nil {
			return err
		}
	}
	if g.json {
		printJSON(os.Stdout, inv)
	} else {
		fmt.Printf("%s  %s/%s  %s  attempts %d", inv.ID, inv.App, inv.Function, inv.State, inv.Attempts)
		if inv.Status != 0 {
			fmt.Printf("  status %d", inv.Status)
		}
		fmt.Println()
		if inv.Error != "" {
			fmt.Printf("error: %s\n", inv.Error)
		}
		if inv.DeadLetter != "" {
			fmt.Printf("dead letter: topic %s (`nimbus dlq ls %s`)\n", inv.DeadLetter, inv.App)
		}
		if inv.State == events.StateRetrying && !inv.NextAttempt.IsZero() {
			fmt.Printf("next attempt in about %s\n", time.Until(inv.NextAttempt).Round(time.Second))
		}
		if len(inv.Body) > 0 {
			os.Stdout.Write(inv.Body)
			if inv.Body[len(inv.Body)-1] != '\n' {
				fmt.Println()
			}
			if inv.BodyTruncated {
				fmt.Printf("(body cut at %d bytes)\n", events.MaxRecordedBody)
			}
		}
	}
	if inv.State == events.StateFailed {
		return &exitError{1}
	}
	return nil
}
