package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/api"
	"github.com/nimbus-dev/nimbus/internal/audit"
	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/store"
)

func newToken(g *globals) *cobra.Command {
	var dataDir string
	cmd := &cobra.Command{
		Use:     "token",
		Aliases: []string{"key", "keys", "tokens"},
		Short:   "Create, list and revoke API tokens (keys), node-wide or of one tenant",
		Long: `Manage the API tokens of a server. Tokens carry scopes: read (list, show,
logs, kv get), invoke (invoke, publish, kv put/del, dlq replay), deploy
(deploy, rollback, delete) and admin (everything, tokens included). The
server keeps only a token's sha256: a token is shown once, when created;
'token ls' shows ids, never secrets.

Through the API these commands need an admin token. With --data DIR they
work on that data directory instead, without a token: through the running
node's local socket, or by opening the store if no node runs. That is how an
operator who lost the admin token mints a new one; only the user who can
reach the data directory can do it.

'nimbus key' is the same command. A token made with --tenant T is a key of
tenant T: it reaches only T's apps (an app belongs to the tenant whose key
first deployed it), and everything else of another tenant answers 403. A
tenant's admin key makes, lists and revokes keys of its own tenant only.`,
		Example: `  nimbus token create ci --scope deploy,read --expires 90d
  nimbus token ls
  nimbus token revoke ci
  nimbus token create --data examples/hello/.nimbus   # a new admin token, saved for the CLI
  nimbus key create shop-ci --tenant shop --scope deploy,read --expires 30d`,
	}
	cmd.PersistentFlags().StringVar(&dataDir, "data", "", "work on data directory `DIR` without a token (local access only)")
	cmd.AddCommand(newTokenCreate(g, &dataDir), newTokenLs(g, &dataDir), newTokenRevoke(g, &dataDir))
	return cmd
}

func newTokenCreate(g *globals, dataDir *string) *cobra.Command {
	var scopes []string
	var expires, tenant string
	cmd := &cobra.Command{
		Use:   "create [NAME]",
		Short: "Create a token and print it once",
		Long: `Create a token named NAME with the given scopes (--scope, repeated or
comma-separated) and, with --expires, a lifetime (90m, 12h, 30d). The token
is printed once, alone on its line; store it now.

With --data DIR, NAME defaults to local-admin and --scope to admin, and an
admin token is saved in the CLI config as that data directory's token (and
its server becomes the one the CLI talks to).`,
		Example: `  nimbus token create ci --scope deploy --scope read --expires 30d
  TOKEN=$(nimbus token create reader --scope read --json | jq -r .token)
  nimbus token create --data /var/lib/nimbus`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.CreateTokenRequest{Scopes: scopes, ExpiresIn: expires, Tenant: tenant}
			if len(args) == 1 {
				req.Name = args[0]
			}
			if *dataDir != "" {
				if req.Name == "" {
					req.Name = "local-admin"
				}
				if len(req.Scopes) == 0 {
					req.Scopes = []string{string(security.ScopeAdmin)}
				}
			}
			if req.Name == "" {
				return errors.New("name the token: nimbus token create NAME --scope SCOPE (for example: nimbus token create ci --scope deploy)")
			}
			if len(req.Scopes) == 0 {
				return errors.New("give the token at least one --scope: read, invoke, deploy, secrets or admin")
			}
			b, err := openTokens(cmd.Context(), g, *dataDir)
			if err != nil {
				return err
			}
			defer b.close()
			created, err := b.create(cmd.Context(), req)
			if err != nil {
				return err
			}
			saved := ""
			if *dataDir != "" && created.Allows(security.ScopeAdmin) {
				if saved, err = saveLocalToken(*dataDir, b.apiURL, created.Token); err != nil {
					return fmt.Errorf("the token was created but not saved (%w); it is: %s", err, created.Token)
				}
			}
			if g.json {
				return printJSON(os.Stdout, struct {
					*api.CreatedToken
					SavedTo string `json:"saved_to,omitempty"`
				}{created, saved})
			}
			fmt.Printf("created token %s (id %s, %s) with scopes %s%s on %s:\n", created.Name, created.ID, tenantOf(created.Tenant), joinScopes(created.Scopes), expiry(created.ExpiresAt), b.where)
			fmt.Println(created.Token)
			if saved != "" {
				fmt.Printf("shown once; saved for the CLI in %s\n", saved)
			} else {
				fmt.Println("shown once: store it now (the server keeps only its hash)")
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&scopes, "scope", nil, "scopes: read, invoke, deploy, secrets, admin (repeat, or separate with commas)")
	cmd.Flags().StringVar(&expires, "expires", "", "lifetime: 90m, 12h, 30d (default: never expires)")
	cmd.Flags().StringVar(&tenant, "tenant", "", "bind the key to tenant `T`: it reaches only T's apps (default: node-wide, or your key's tenant)")
	return cmd
}

func newTokenLs(g *globals, dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "ls",
		Short: "List tokens: id, name, scopes, creation and expiry (never secrets)",
		Example: `  nimbus token ls
  nimbus token ls --json
  nimbus token ls --data /var/lib/nimbus`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := openTokens(cmd.Context(), g, *dataDir)
			if err != nil {
				return err
			}
			defer b.close()
			list, err := b.list(cmd.Context())
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, list)
			}
			tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tTENANT\tSCOPES\tCREATED\tEXPIRES\tCREATED BY")
			for _, t := range list {
				exp := "never"
				if t.ExpiresAt != nil {
					exp = t.ExpiresAt.Local().Format(time.DateTime)
					if t.Expired {
						exp += " (expired)"
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, tenantOf(t.Tenant), joinScopes(t.Scopes), t.CreatedAt.Local().Format(time.DateTime), exp, dash(t.CreatedBy))
			}
			return tw.Flush()
		},
	}
}

func newTokenRevoke(g *globals, dataDir *string) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke ID|NAME",
		Short: "Revoke a token: it is refused from the next call on",
		Long: `Revoke the token with this id (as 'token ls' shows it, or a unique prefix of
at least 6 characters) or this name (if only one token has it). The token is
refused from the next call on.`,
		Example: `  nimbus token revoke 3f9a2c1b4d5e
  nimbus token revoke ci`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := openTokens(cmd.Context(), g, *dataDir)
			if err != nil {
				return err
			}
			defer b.close()
			info, err := b.revoke(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if g.json {
				return printJSON(os.Stdout, info)
			}
			fmt.Printf("revoked token %s (id %s)\n", info.Name, info.ID)
			return nil
		},
	}
}

// tokenBackend is where token commands act: the API (with a token), a
// running node's local socket, or a stopped node's store.
type tokenBackend struct {
	create func(context.Context, api.CreateTokenRequest) (*api.CreatedToken, error)
	list   func(context.Context) ([]api.TokenInfo, error)
	revoke func(context.Context, string) (*api.TokenInfo, error)
	close  func()
	where  string // for messages
	apiURL string // the node's API, when known
}

func clientBackend(c *client.Client, where, apiURL string) *tokenBackend {
	return &tokenBackend{create: c.CreateToken, list: c.Tokens, revoke: c.RevokeToken, close: func() {}, where: where, apiURL: apiURL}
}

// openTokens picks the backend: the API without --data; with it, the
// running node's local socket, else the data directory's store.
func openTokens(ctx context.Context, g *globals, dataDir string) (*tokenBackend, error) {
	if dataDir == "" {
		c, err := g.client()
		if err != nil {
			return nil, err
		}
		return clientBackend(c, "the server at "+c.BaseURL, c.BaseURL), nil
	}
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, "jetstream")); err != nil {
		return nil, fmt.Errorf("%s is not a Nimbus data directory (it has no jetstream/ store); `nimbus up --data %s` creates one", dataDir, dataDir)
	}
	sock := server.LocalSocket(dir)
	local := client.NewLocal(sock)
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	info, sockErr := local.LocalInfo(sctx)
	cancel()
	if sockErr == nil {
		return clientBackend(local, "the node running on "+dataDir, info.APIURL), nil
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	st, err := store.Open(ctx, store.Options{DataDir: dir, Logger: quiet})
	if errors.Is(err, store.ErrLocked) {
		return nil, fmt.Errorf("a nimbus up runs on %s, but its local socket %s does not answer (%v); stop that node and run this again", dataDir, sock, sockErr)
	}
	if err != nil {
		return nil, err
	}
	tokens := security.NewTokens(st.Security())
	alog, err := audit.Open(ctx, st.Committer())
	if err != nil {
		st.Close()
		return nil, err
	}
	// record appends what was done offline to the audit log, as the
	// local socket would.
	record := func(ctx context.Context, action, tenant, target, detail string) error {
		_, err := alog.Append(ctx, audit.Entry{Actor: api.LocalIdentity.Name, Tenant: tenant, Action: action, Target: target, Outcome: audit.OutcomeOK, Detail: detail})
		return err
	}
	return &tokenBackend{
		create: func(ctx context.Context, req api.CreateTokenRequest) (*api.CreatedToken, error) {
			scopes, err := security.ParseScopes(req.Scopes)
			if err != nil {
				return nil, err
			}
			ttl, err := api.ParseTTL(req.ExpiresIn)
			if err != nil {
				return nil, err
			}
			tok, info, err := tokens.Issue(ctx, security.TokenSpec{Name: req.Name, Scopes: scopes, TTL: ttl, CreatedBy: api.LocalIdentity.Name, Tenant: req.Tenant})
			if err != nil {
				return nil, err
			}
			if err := record(ctx, "key.create", info.Tenant, info.ID, "name "+info.Name+", scopes "+joinScopes(info.Scopes)); err != nil {
				return nil, fmt.Errorf("key %s created, but not audited: %w", info.ID, err)
			}
			return &api.CreatedToken{Token: tok, TokenInfo: api.TokenInfo{TokenInfo: info}}, nil
		},
		list: func(ctx context.Context) ([]api.TokenInfo, error) {
			all, err := tokens.List(ctx)
			out := make([]api.TokenInfo, len(all))
			for i, t := range all {
				out[i] = api.TokenInfo{TokenInfo: t, Expired: t.Expired(time.Now())}
			}
			return out, err
		},
		revoke: func(ctx context.Context, ref string) (*api.TokenInfo, error) {
			info, err := tokens.Revoke(ctx, ref)
			if err != nil {
				return nil, err
			}
			if err := record(ctx, "key.revoke", info.Tenant, info.ID, "name "+info.Name); err != nil {
				return nil, fmt.Errorf("key %s revoked, but not audited: %w", info.ID, err)
			}
			return &api.TokenInfo{TokenInfo: info, Expired: info.Expired(time.Now())}, nil
		},
		close: func() { st.Close() },
		where: "the data directory " + dataDir + " (no node running)",
	}, nil
}

// saveLocalToken records token as the admin token of dataDir in the CLI
// config and makes that entry current; apiURL (if known) is its server.
func saveLocalToken(dataDir, apiURL, token string) (string, error) {
	conf, err := client.LoadConfig()
	if err != nil {
		return "", err
	}
	dir := canonicalDir(dataDir)
	e := client.Entry{DataDir: dir}
	if old := conf.Entry(dir); old != nil {
		e = *old
	}
	if apiURL != "" {
		e.Server = apiURL
	}
	e.Token = token
	conf.Use(e)
	return client.SaveConfig(conf)
}

// canonicalDir is the absolute path of dir, symbolic links resolved when it
// exists: the key of its config entry.
func canonicalDir(dir string) string {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		return real
	}
	return abs
}

func joinScopes(s []security.Scope) string {
	out := make([]string, len(s))
	for i, v := range s {
		out[i] = string(v)
	}
	return strings.Join(out, ",")
}

func expiry(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ", expiring " + t.Local().Format(time.DateTime)
}

// tenantOf names a key's tenant, "*" for a node-wide key.
func tenantOf(t string) string {
	if t == "" {
		return "*"
	}
	return t
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
