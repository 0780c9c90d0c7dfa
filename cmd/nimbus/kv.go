package main

import (
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newKV(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kv",
		Short: "Read and write an app's key-value buckets",
		Long: `Read and write the key-value buckets an app declares under buckets: in
nimbus.yaml. Functions reach the same buckets through the SDK when their
manifest grants kv:BUCKET (read-write) or kv:BUCKET:read.`,
		Example: `  nimbus kv put shop/counts orders.eu 41
  nimbus kv get shop/counts orders.eu
  nimbus kv ls shop/counts orders.
  nimbus kv del shop/counts orders.eu`,
	}
	cmd.AddCommand(newKVGet(g), newKVPut(g), newKVDel(g), newKVLs(g))
	return cmd
}

func appBucket(arg string) (string, string, error) {
	app, bucket, ok := strings.Cut(arg, "/")
	if !ok || app == "" || bucket == "" {
		return "", "", fmt.Errorf("%q is not APP/BUCKET (for example shop/counts)", arg)
	}
	return app, bucket, nil
}

func newKVGet(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "get APP/BUCKET KEY",
		Short:   "Print a key's value",
		Example: "  nimbus kv get shop/counts orders.eu\n  nimbus kv get shop/counts orders.eu --json",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, bucket, err := appBucket(args[0])
			if err != nil {
				return err
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			v, rev, err := c.KVGet(cmd.Context(), app, bucket, args[1])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, map[string]any{"key": args[1], "value": string(v), "revision": rev})
			}
			os.Stdout.Write(v)
			if len(v) > 0 && v[len(v)-1] != '\n' {
				fmt.Println()
			}
			return nil
		},
	}
}

func newKVPut(g *globals) *cobra.Command {
	var data string
	var ttl time.Duration
	var ifRev int64 = -1
	cmd := &cobra.Command{
		Use:   "put APP/BUCKET KEY [VALUE]",
		Short: "Write a key",
		Long: `Write VALUE (or -d DATA, @file, @- for standard input) to KEY.
--if-revision N writes only if the key is at revision N (0: only if it does
not exist yet): compare-and-swap. --ttl expires the key.`,
		Example: "  nimbus kv put shop/counts orders.eu 41\n  nimbus kv put shop/counts orders.eu 42 --if-revision 7\n  nimbus kv put shop/sessions abc -d @session.json --ttl 30m",
		Args:    cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, bucket, err := appBucket(args[0])
			if err != nil {
				return err
			}
			var value []byte
			switch {
			case len(args) == 3 && data != "":
				return fmt.Errorf("give the value as an argument or with -d, not both")
			case len(args) == 3:
				value = []byte(args[2])
			default:
				if value, err = readData(data); err != nil {
					return err
				}
			}
			cond := optRevision(ifRev)
			c, err := g.client()
			if err != nil {
				return err
			}
			if ttl < 0 {
				return fmt.Errorf("--ttl %s: use a positive duration such as 30s or 1h", ttl)
			}
			rev, err := c.KVPut(cmd.Context(), app, bucket, args[1], value, ttl, cond)
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, map[string]any{"key": args[1], "revision": rev})
			}
			fmt.Printf("%s/%s %s = revision %d\n", app, bucket, args[1], rev)
			return nil
		},
	}
	cmd.Flags().StringVarP(&data, "data", "d", "", "value: text, @file, or @- for standard input")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "expire the key after this long (e.g. 30s, 1h; default: never)")
	cmd.Flags().Int64Var(&ifRev, "if-revision", -1, "write only if the key is at this revision (0: only if absent)")
	return cmd
}

func newKVDel(g *globals) *cobra.Command {
	var ifRev int64 = -1
	cmd := &cobra.Command{
		Use:     "del APP/BUCKET KEY",
		Short:   "Delete a key",
		Example: "  nimbus kv del shop/counts orders.eu\n  nimbus kv del shop/counts orders.eu --if-revision 8",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, bucket, err := appBucket(args[0])
			if err != nil {
				return err
			}
			cond := optRevision(ifRev)
			c, err := g.client()
			if err != nil {
				return err
			}
			if err := c.KVDelete(cmd.Context(), app, bucket, args[1], cond); err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, map[string]any{"key": args[1], "deleted": true})
			}
			fmt.Printf("deleted %s/%s %s\n", app, bucket, args[1])
			return nil
		},
	}
	cmd.Flags().Int64Var(&ifRev, "if-revision", -1, "delete only if the key is at this revision")
	return cmd
}

func newKVLs(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls APP/BUCKET [PREFIX]",
		Short:   "List keys, optionally those starting with PREFIX",
		Example: "  nimbus kv ls shop/counts\n  nimbus kv ls shop/counts orders. --json",
		Args:    cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			app, bucket, err := appBucket(args[0])
			if err != nil {
				return err
			}
			prefix := ""
			if len(args) == 2 {
				prefix = args[1]
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			var all []string
			after := ""
			for {
				page, err := c.KVList(cmd.Context(), app, bucket, prefix, after)
				if err != nil {
					return err
				}
				all = append(all, page.Keys...)
				if !page.More || len(page.Keys) == 0 {
					break
				}
				after = page.Keys[len(page.Keys)-1]
			}
			if g.json {
				if all == nil {
					all = []string{}
				}
				return printJSON(os.Stdout, all)
			}
			for _, k := range all {
				fmt.Println(k)
			}
			return nil
		},
	}
}

// optRevision turns an --if-revision flag into a condition: negative (the
// default) is none.
func optRevision(n int64) *uint64 {
	if n < 0 {
		return nil
	}
	u := uint64(n)
	return &u
}
