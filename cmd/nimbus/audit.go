package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/audit"
)

func newAudit(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List and verify the audit log of control-plane actions",
		Long: `The audit log records every deploy, rollback, delete, key and secret
operation (names only, never values), refused calls, and the denials of
functions (a missing grant, an address the network guard blocked), with the
key that acted, the tenant, the time, the target and the outcome.

Entries are hash-chained: each records the hash of the one before. 'audit
verify' recomputes the chain and names the first entry that was altered,
removed or moved. These commands need an admin key; a tenant's admin key
lists its tenant's entries, and verify needs a node-wide key.`,
		Example: `  nimbus audit ls
  nimbus audit ls --action deploy --since 24h
  nimbus audit ls --json | jq 'select(.outcome == "denied")'
  nimbus audit verify`,
	}
	cmd.AddCommand(newAuditLs(g), newAuditVerify(g))
	return cmd
}

func newAuditLs(g *globals) *cobra.Command {
	var f audit.Filter
	var since string
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List audit entries, oldest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if since != "" {
				d, err := time.ParseDuration(since)
				if err != nil || d <= 0 {
					return fmt.Errorf("--since %q: use a duration such as 30m or 24h", since)
				}
				f.Since = time.Now().Add(-d)
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			entries, err := c.Audit(cmd.Context(), f)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, entries)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SEQ\tTIME\tACTOR\tTENANT\tACTION\tTARGET\tOUTCOME\tDETAIL")
			for _, e := range entries {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Seq, e.Time.Local().Format(time.DateTime), e.Actor,
					dash(e.Tenant), e.Action, dash(e.Target), e.Outcome, dash(e.Detail))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&f.Tenant, "tenant", "", "only tenant `T`'s entries")
	cmd.Flags().StringVar(&f.Action, "action", "", "only `ACTION` (deploy, rollback, delete, key.create, key.revoke, secret.set, secret.rm, capability.denied, egress.blocked, route.denied)")
	cmd.Flags().StringVar(&f.Target, "target", "", "only entries about `TARGET` (an app also selects its secrets)")
	cmd.Flags().StringVar(&since, "since", "", "only entries of the last `DURATION` (30m, 24h)")
	cmd.Flags().IntVar(&f.Limit, "limit", 0, "only the newest `N` entries")
	return cmd
}

// errAuditBroken makes `audit verify` exit non-zero on a broken chain.
var errAuditBroken = errors.New("the audit log's hash chain is broken")

func newAuditVerify(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Recompute the audit log's hash chain; name the first broken link",
		Long: `Reads every entry and checks that each hashes to the hash stored with it,
carries the next index and records the hash of the entry before it. It
prints the head (the last entry's index and hash): keep it elsewhere, since
removing the newest entries leaves a shorter chain that still verifies.
Exits 1 when the chain is broken.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			rep, err := c.VerifyAudit(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				if err := printJSON(os.Stdout, rep); err != nil {
					return err
				}
			} else if rep.OK() {
				fmt.Printf("audit log verified: %d entries, head %d %s\n", rep.Entries, rep.HeadSeq, rep.Head)
			} else {
				fmt.Printf("audit log BROKEN at entry %d (stream sequence %d): %s\n", rep.Broken.Seq, rep.Broken.StreamSeq, rep.Broken.Reason)
			}
			if !rep.OK() {
				return errAuditBroken
			}
			return nil
		},
	}
}
