package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/client"
)

func newDLQ(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "List and replay an app's dead letters",
		Long: `An event whose delivery failed max_attempts times goes to the app's
dead-letter topic with the error and the attempt count attached. "dlq ls"
shows what is there; "dlq replay" sends dead letters back to the trigger that
failed them (only that one), as new deliveries with fresh attempts, and
removes them from the dead-letter topic. Fix the function first: a replayed
event that fails again comes back as a new dead letter.`,
		Example: `  nimbus dlq ls orders
  nimbus dlq replay orders 412 415
  nimbus dlq replay orders --all
  nimbus dlq replay orders 412 --topic orders   # its trigger is gone: publish to the topic`,
	}
	cmd.AddCommand(newDLQLs(g), newDLQReplay(g))
	return cmd
}

func newDLQLs(g *globals) *cobra.Command {
	var limit int
	var after uint64
	var newest bool
	cmd := &cobra.Command{
		Use:   "ls APP",
		Short: "List an app's dead letters",
		Long: `List the app's dead letters, oldest first: their sequence (what replay
takes), age, the function and trigger whose delivery failed, the attempts
made, the event id and the last error. --json prints every field, the event's
data included when it is small.`,
		Example: `  nimbus dlq ls orders
  nimbus dlq ls orders --newest --limit 10
  nimbus dlq ls orders --after 412     # the next page
  nimbus dlq ls orders --json | jq '.dead_letters[] | {seq, error}'`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > 1000 {
				return fmt.Errorf("--limit %d: use 1 to 1000", limit)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			app := args[0]
			list, err := c.DeadLetters(cmd.Context(), app, client.DeadLetterQuery{Limit: limit, After: after, Newest: newest})
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, list)
			}
			if len(list.DeadLetters) == 0 {
				if after > 0 {
					fmt.Printf("no more dead letters in %s\n", app)
				} else {
					fmt.Printf("no dead letters in %s\n", app)
				}
				return nil
			}
			printDeadLetters(os.Stdout, list.DeadLetters, time.Now())
			if list.Next != 0 {
				order := ""
				if newest {
					order = " --newest"
				}
				stderrf("more: nimbus dlq ls %s%s --limit %d --after %d\n", app, order, limit, list.Next)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many (1 to 1000)")
	cmd.Flags().Uint64Var(&after, "after", 0, "start after this sequence (the previous page's last)")
	cmd.Flags().BoolVar(&newest, "newest", false, "newest first")
	return cmd
}

func printDeadLetters(w io.Writer, dls []api.DeadLetter, now time.Time) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tAGE\tFUNCTION/TRIGGER\tATTEMPTS\tEVENT\tERROR")
	for _, dl := range dls {
		id := dl.ID
		if dl.Malformed {
			id = "(not a CloudEvent)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s/%s\t%d\t%s\t%s\n", dl.Seq, age(now.Sub(dl.Time)), dl.Function, dl.Trigger, dl.Attempts, clip(id, 24), clip(dl.Error, 60))
	}
	tw.Flush()
}

// age is a short rendering of a duration: 42s, 5m, 3h, 2d.
func age(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", max(0, int(d/time.Second)))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// clip shortens s to n runes, marking the cut.
func clip(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func newDLQReplay(g *globals) *cobra.Command {
	var all bool
	var topic string
	cmd := &cobra.Command{
		Use:   "replay APP (SEQ... | --all)",
		Short: "Send dead letters back to the trigger that failed them",
		Long: `Replay dead letters (by the SEQ that "dlq ls" shows, or --all of them):
each goes back to the one trigger whose delivery failed, not to the other
subscribers of its topic, as a new delivery with fresh attempts, and leaves
the dead-letter topic. Replaying the same dead letter twice delivers it once.

If that trigger no longer exists (a later deploy removed it or its function),
the replay of its dead letters fails and says so; --topic T publishes them
to topic T of the app instead, where every trigger of T gets them.

--all replays what is there when the command starts; an event that fails
again comes back as a new dead letter and is left for next time. The command
exits 1 if any dead letter could not be replayed.`,
		Example: `  nimbus dlq replay orders 412
  nimbus dlq replay orders 412 415 420
  nimbus dlq replay orders --all
  nimbus dlq replay orders --all --topic orders --json`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			app := args[0]
			var seqs []uint64
			for _, a := range args[1:] {
				n, err := strconv.ParseUint(a, 10, 64)
				if err != nil || n == 0 {
					return fmt.Errorf("%q is not a dead letter's sequence number; `nimbus dlq ls %s` shows them", a, app)
				}
				seqs = append(seqs, n)
			}
			switch {
			case all && len(seqs) > 0:
				return fmt.Errorf("give sequence numbers or --all, not both")
			case !all && len(seqs) == 0:
				return fmt.Errorf("which dead letters? give their sequence numbers (`nimbus dlq ls %s` shows them) or --all", app)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if all {
				// What is there now; replays that fail again land after it.
				var after uint64
				for {
					page, err := c.DeadLetters(ctx, app, client.DeadLetterQuery{Limit: 1000, After: after})
					if err != nil {
						return err
					}
					for _, dl := range page.DeadLetters {
						seqs = append(seqs, dl.Seq)
					}
					if page.Next == 0 {
						break
					}
					after = page.Next
				}
				if len(seqs) == 0 {
					if g.json {
						return printJSON(os.Stdout, api.ReplayAnswer{Results: []api.ReplayItem{}})
					}
					fmt.Printf("no dead letters in %s\n", app)
					return nil
				}
			}
			const batch = 100 // per request: the answer stays small and progress shows
			progress := !g.json && len(seqs) > batch
			if progress {
				stderrf("replaying %d dead letters of %s\n", len(seqs), app)
			}
			total := api.ReplayAnswer{Results: []api.ReplayItem{}}
			for i := 0; i < len(seqs); i += batch {
				ans, err := c.ReplayDeadLetters(ctx, app, api.ReplayRequest{Seqs: seqs[i:min(i+batch, len(seqs))], Topic: topic})
				if err != nil {
					if total.Replayed > 0 {
						stderrf("replayed %d of %d before this error\n", total.Replayed, len(seqs))
					}
					return err
				}
				total.Replayed += ans.Replayed
				total.Failed += ans.Failed
				total.Results = append(total.Results, ans.Results...)
				if progress {
					stderrf("  %d/%d\n", min(i+batch, len(seqs)), len(seqs))
				}
			}
			if g.json {
				if err := printJSON(os.Stdout, total); err != nil {
					return err
				}
			} else {
				printReplay(app, topic, total)
			}
			if total.Failed > 0 {
				return &exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "replay every dead letter of the app")
	cmd.Flags().StringVar(&topic, "topic", "", "publish to this topic of the app (all its triggers) instead of the trigger that failed")
	return cmd
}

func printReplay(app, topic string, ans api.ReplayAnswer) {
	dups := 0
	for _, r := range ans.Results {
		switch {
		case r.Error != "":
			who := ""
			if r.Function != "" {
				who = " (" + r.Function + "/" + r.Trigger + ")"
			}
			fmt.Fprintf(os.Stderr, "seq %d%s: %s\n", r.Seq, who, r.Error)
		case r.Duplicate:
			dups++
		}
	}
	if ans.Replayed > 0 {
		to := "to the triggers that failed them"
		if topic != "" {
			to = "to topic " + topic
		}
		fmt.Printf("replayed %d dead letter(s) of %s %s", ans.Replayed, app, to)
		if dups > 0 {
			fmt.Printf(" (%d had been replayed before: not sent twice)", dups)
		}
		fmt.Println()
	}
	if ans.Failed > 0 {
		fmt.Printf("%d dead letter(s) of %s could not be replayed (see above)\n", ans.Failed, app)
	}
}
