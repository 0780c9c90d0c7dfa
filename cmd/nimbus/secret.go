package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newSecret(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Set, list and remove an app's secrets",
		Long: `Manage the secrets of an app. A function reads one with nimbus.Secret("NAME")
when nimbus.yaml grants it secret:NAME; setting it again takes effect on the
next read, without a redeploy. Values are encrypted at rest (see
docs/security.md) and never shown again: 'secret ls' lists names, versions
and times. These commands need a token with the secrets (or admin) scope.

A value is never an argument (it would be in the shell history and the
process list): it comes from standard input (one line, or everything with
a pipe) or from --from-file.`,
		Example: `  nimbus secret set shop STRIPE_KEY            # type the value, then Enter
  printf %s "$STRIPE_KEY" | nimbus secret set shop STRIPE_KEY
  nimbus secret set shop TLS_KEY --from-file key.pem
  nimbus secret ls shop
  nimbus secret rm shop STRIPE_KEY`,
	}
	cmd.AddCommand(newSecretSet(g), newSecretLs(g), newSecretRm(g))
	return cmd
}

func newSecretSet(g *globals) *cobra.Command {
	var fromFile string
	cmd := &cobra.Command{
		Use:   "set APP NAME",
		Short: "Set a secret from standard input or --from-file",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var value []byte
			var err error
			switch {
			case fromFile != "":
				value, err = os.ReadFile(fromFile)
			default:
				value, err = readSecretStdin(cmd.InOrStdin())
			}
			if err != nil {
				return fmt.Errorf("read the value: %w", err)
			}
			if len(value) == 0 {
				return fmt.Errorf("the value is empty: pipe it in or use --from-file")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			info, err := c.SetSecret(cmd.Context(), args[0], args[1], value)
			clear(value)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, info)
			}
			fmt.Printf("secret %s of %s set (version %d)\n", info.Name, args[0], info.Version)
			return nil
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the value from `FILE` (all of it, as is)")
	return cmd
}

// readSecretStdin reads one line from a terminal, or everything from a
// pipe (without one trailing newline, which echo and files add).
func readSecretStdin(in io.Reader) ([]byte, error) {
	if f, ok := in.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprint(os.Stderr, "value: ")
			line, err := bufio.NewReader(f).ReadBytes('\n')
			if err != nil && err != io.EOF {
				return nil, err
			}
			return trimNewline(line), nil
		}
	}
	b, err := io.ReadAll(io.LimitReader(in, 1<<20))
	return trimNewline(b), err
}

func trimNewline(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
		if n := len(b); n > 0 && b[n-1] == '\r' {
			b = b[:n-1]
		}
	}
	return b
}

func newSecretLs(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "ls APP",
		Short: "List an app's secrets: names, versions and times, never values",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			list, err := c.Secrets(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tVERSION\tUPDATED")
			for _, s := range list {
				fmt.Fprintf(tw, "%s\t%d\t%s\n", s.Name, s.Version, s.UpdatedAt.Local().Format(time.DateTime))
			}
			return tw.Flush()
		},
	}
}

func newSecretRm(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm APP NAME",
		Short: "Remove a secret",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSecret(cmd.Context(), args[0], args[1]); err != nil {
				return err
			}
			if !g.json {
				fmt.Printf("secret %s of %s removed\n", args[1], args[0])
			}
			return nil
		},
	}
}
