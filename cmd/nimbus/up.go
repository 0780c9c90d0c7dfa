package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nimbus-dev/nimbus/internal/client"
	"github.com/nimbus-dev/nimbus/internal/deploy"
	"github.com/nimbus-dev/nimbus/internal/events"
	"github.com/nimbus-dev/nimbus/internal/manifest"
	"github.com/nimbus-dev/nimbus/internal/policy"
	"github.com/nimbus-dev/nimbus/internal/registry"
	"github.com/nimbus-dev/nimbus/internal/security"
	"github.com/nimbus-dev/nimbus/internal/server"
	"github.com/nimbus-dev/nimbus/internal/throttle"
	"github.com/nimbus-dev/nimbus/internal/workflow"
)

func newUp(g *globals) *cobra.Command {
	var cfg server.Config
	var logLevel string
	var redeploy bool
	var bodyBudget, bodyMinRate, idleCodeBytes, diskReserve string
	var allowCIDRs []string
	var policyFile string
	cmd := &cobra.Command{
		Use:   "up [DIR]",
		Short: "Start the platform; deploy DIR's app if it has a nimbus.yaml",
		Long: `Start Nimbus: an embedded NATS JetStream store (data under --data), the
function gateway (--listen) and the control plane API (--api-listen).

If DIR holds a nimbus.yaml and its app is not deployed yet, it is built and
deployed. Later starts serve the apps and revisions already deployed without
rebuilding; use 'nimbus deploy' (or --redeploy) to ship changes.

Progress goes to stderr; the banner with the gateway URL comes once the app
is deployed and answering.

On the first start of a data directory an admin token is created, printed
once, and saved with the API URL to the CLI config file, so the other
commands work without flags. The config keeps one entry per data directory:
starting another one does not lose the first one's token, and the last
started is the one the CLI talks to. Lost a token? 'nimbus token create
--data DIR' mints a new admin token. Ctrl-C stops the server cleanly.`,
		Example: `  nimbus up examples/hello
  nimbus up --listen 127.0.0.1:9000 --api-listen 127.0.0.1:9001 ./myapp
  nimbus up --data /var/lib/nimbus --nats-listen 127.0.0.1:4222
  nimbus up --policy /etc/nimbus/policy.yaml`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir := "."
			if len(args) == 1 {
				dir = args[0]
			}
			if cfg.DataDir == "" {
				cfg.DataDir = filepath.Join(dir, ".nimbus")
			}
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			cfg.Version = version
			if err := bodyFlags(&cfg, bodyBudget, bodyMinRate); err != nil {
				return err
			}
			if err := idleCodeFlags(&cfg, cfg.WasmIdleModules, idleCodeBytes); err != nil {
				return err
			}
			n, err := manifest.ParseSize(diskReserve)
			if err != nil || n > 1<<40 {
				return fmt.Errorf("--disk-reserve %q: use a size up to 1TiB, such as 64MiB, or 0B for none", diskReserve)
			}
			cfg.DiskReserve = int64(n)
			if n == 0 {
				cfg.DiskReserve = -1 // none
			}
			for _, c := range allowCIDRs {
				p, err := netip.ParsePrefix(c)
				if err != nil {
					return fmt.Errorf("--egress-allow-cidr %q: write a CIDR range such as 10.0.0.0/8 or 127.0.0.0/8", c)
				}
				cfg.EgressAllowCIDRs = append(cfg.EgressAllowCIDRs, p)
			}
			if env := os.Getenv("NIMBUS_MASTER_KEY"); env != "" {
				key, err := security.ParseMasterKey(env)
				if err != nil {
					return fmt.Errorf("NIMBUS_MASTER_KEY: %w", err)
				}
				cfg.MasterKey = key
			}
			if policyFile != "" {
				// A rule that does not compile stops the start here,
				// naming the file, line, column and rule.
				p, err := policy.Load(policyFile)
				if err != nil {
					return err
				}
				cfg.Policy = p
				if !g.json {
					stderrf("policy: %d rule(s) from %s\n", len(p.Rules()), policyFile)
				}
			}
			return runUp(cmd.Context(), g, cfg, dir, redeploy)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data", "", "data directory (default DIR/.nimbus)")
	f.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "gateway address for function routes")
	f.StringVar(&cfg.APIListen, "api-listen", "127.0.0.1:8081", "control plane API and /metrics address")
	f.StringVar(&cfg.NATSListen, "nats-listen", "", "also open a NATS client listener on this address, for clients with the NKey seed in DATA/nats-client.nk (default: none)")
	f.DurationVar(&cfg.IdleTimeout, "idle-timeout", 5*time.Minute, "close instances idle this long (scale to zero)")
	f.IntVar(&cfg.WasmIdleModules, "idle-code-modules", 1024, "wasm modules with no instance whose compiled code stays in memory (the most recently used); the others reload it at their next request (~150 ms of CPU for a Go guest instead of <1 ms)")
	f.StringVar(&idleCodeBytes, "idle-code-bytes", "64MiB", "most wasm bytes among those idle modules (a Go guest of 6 MB holds ~30 MiB of RAM while compiled)")
	f.StringVar(&cfg.CacheDir, "cache-dir", "", "where compiled WebAssembly is kept across restarts (default DATA/wasm-cache); entries are keyed by module and version, so nodes may share one")
	f.DurationVar(&cfg.EventsDuplicateWindow, "events-dedupe-window", events.DefaultDuplicateWindow, "how long an event's source and id are remembered to store a re-sent event once (each id costs ~140 B of RAM for the window)")
	f.IntVar(&cfg.EventsMaxLag, "events-max-lag", events.DefaultMaxLag, "per app: events waiting for its triggers beyond which publishes get 429 (negative: no limit)")
	f.IntVar(&cfg.EventsMaxWindowEvents, "events-max-window-events", events.DefaultMaxWindowEvents, "per node: events stored within the dedupe window beyond which publishes get 503 (negative: no limit)")
	f.StringVar(&diskReserve, "disk-reserve", "64MiB", "free space kept on the data directory's filesystem: below it writes get 507 disk_full and resume by themselves once there is room (a write that filled the disk would stop a JetStream stream until the node restarts); 0B for none")
	f.StringVar(&bodyBudget, "body-budget", "256MiB", "most bytes of request bodies held in memory at once, half of it per app; past it 503 body_budget")
	f.IntVar(&cfg.MaxWaiting, "max-waiting", throttle.DefaultMaxWaiting, "most HTTP requests (routes, nimbus invoke, workflow starts waiting for their result) waiting at once, node-wide, half of them per app; past it 503 busy with Retry-After at once, and a workflow start answers its run id at once (negative: no bound)")
	f.IntVar(&cfg.MaxActiveRuns, "max-active-runs", workflow.DefaultMaxActivePerApp, "per app: most workflow runs active at once (running, or queued for an instance or their flow) that starts from outside may make; past it a route's or the API's start gets 503 busy with Retry-After, and a trigger's start waits with its event in the log (negative: no bound)")
	f.StringVar(&bodyMinRate, "body-min-rate", "16KiB", "slowest average rate per second a request body may arrive at after --body-grace, else 408 body_too_slow; 0B turns it off")
	f.DurationVar(&cfg.BodyRate.Grace, "body-grace", 10*time.Second, "how long any request body may take, whatever its size")
	f.StringSliceVar(&allowCIDRs, "egress-allow-cidr", nil, "let functions' outbound HTTP reach this internal range (repeatable; default: the public Internet only; the node's own ports stay refused)")
	f.StringVar(&cfg.MasterKeyFile, "master-key-file", "", "file of the secrets' master key, created 0600 on first use if missing (default $XDG_CONFIG_HOME/nimbus/master.key; NIMBUS_MASTER_KEY, base64, wins)")
	f.StringSliceVar(&cfg.MasterKeyPreviousFiles, "master-key-previous", nil, "master key file being retired: its data keys are rewrapped with the current key at start (repeatable)")
	f.StringVar(&policyFile, "policy", "", "the operator's policy `FILE` (YAML or JSON): rules every deploy and rollback must pass, and per-tenant quotas (docs/security.md)")
	f.StringVar(&logLevel, "log-level", "info", "server log level: debug, info, warn, error")
	f.BoolVar(&redeploy, "redeploy", false, "build and deploy DIR's app even if it is already deployed")
	return cmd
}

// idleCodeFlags sets how much compiled wasm of functions with no instance
// cfg keeps (--idle-code-modules, --idle-code-bytes).
func idleCodeFlags(cfg *server.Config, modules int, bytes string) error {
	if modules < 1 {
		return fmt.Errorf("--idle-code-modules %d: use at least 1", modules)
	}
	n, err := manifest.ParseSize(bytes)
	if err != nil || n > 1<<40 {
		return fmt.Errorf("--idle-code-bytes %q: use a size up to 1TiB, such as 64MiB", bytes)
	}
	cfg.WasmIdleModules, cfg.WasmIdleModuleBytes = modules, max(int64(n), 1)
	return nil
}

// bodyFlags sets the body budget and minimum rate of cfg from their flags.
func bodyFlags(cfg *server.Config, budget, minRate string) error {
	n, err := manifest.ParseSize(budget)
	if err != nil || n < 1<<20 || n > 1<<40 {
		return fmt.Errorf("--body-budget %q: use a size from 1MiB to 1TiB, such as 256MiB", budget)
	}
	cfg.BodyBudget = int64(n)
	r, err := manifest.ParseSize(minRate)
	if err != nil || r > 1<<30 {
		return fmt.Errorf("--body-min-rate %q: use a size per second up to 1GiB, such as 16KiB, or 0B for none", minRate)
	}
	cfg.BodyRate.MinRate = int64(r)
	if r == 0 {
		cfg.BodyRate.MinRate = -1 // off
	}
	return nil
}

func runUp(ctx context.Context, g *globals, cfg server.Config, dir string, redeploy bool) error {
	// Check the manifest before starting anything, so a typo fails fast.
	var m *manifest.Manifest
	if _, err := os.Stat(filepath.Join(dir, "nimbus.yaml")); err == nil {
		if m, err = manifest.Load(dir); err != nil {
			return err
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}

	if !g.json {
		stderrf("starting Nimbus %s (data in %s)...\n", version, cfg.DataDir)
	}
	srv, err := server.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		stderrf("stopping...\n")
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Close(cctx); err != nil {
			stderrf("stop: %v\n", err)
		}
	}()

	confPath, warning, err := saveUpConfig(ctx, srv, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("write CLI config: %w", err)
	}
	if warning != "" {
		stderrf("warning: %s\n", warning)
	}

	info := map[string]any{
		"gateway_url": srv.GatewayURL(), "api_url": srv.APIURL(), "data_dir": cfg.DataDir,
		"config_file": confPath, "version": version,
	}
	if warning != "" {
		info["warning"] = warning
	}
	if u := srv.NATSURL(); u != "" {
		info["nats_url"], info["nats_nkey_file"] = u, srv.NATSSeedFile()
	}
	if tok := srv.AdminToken(); tok != "" {
		info["admin_token"] = tok
	}

	// Deploy first, with progress on stderr, so that when the banner shows
	// the gateway URL the app answers there.
	var status string
	if m != nil {
		_, err := srv.Registry().App(ctx, m.App)
		deployed := err == nil
		if !deployed && !errors.Is(err, registry.ErrAppNotFound) {
			return err
		}
		if deployed && !redeploy {
			status = fmt.Sprintf("app %s is already deployed; serving its active revision (use `nimbus deploy %s` to ship changes)", m.App, dir)
		} else {
			if !g.json {
				stderrf("deploying %s...\n", dir)
			}
			res, err := deploy.Run(ctx, deploy.Local{S: srv}, dir, func(e deploy.Event) {
				if !g.json {
					printProgress(e)
				}
			})
			if err != nil {
				return err
			}
			info["deploy"] = res
			status = deployResult(res)
		}
	}
	if g.json {
		printJSON(os.Stdout, info)
	} else {
		if status != "" {
			fmt.Println(status)
		}
		fmt.Printf("Nimbus %s is up\n", version)
		fmt.Printf("  gateway      %s\n", srv.GatewayURL())
		fmt.Printf("  API          %s   (metrics at %s/metrics)\n", srv.APIURL(), srv.APIURL())
		if u := srv.NATSURL(); u != "" {
			fmt.Printf("  NATS         %s   (authenticate with the NKey seed in %s)\n", u, srv.NATSSeedFile())
		}
		fmt.Printf("  data         %s\n", cfg.DataDir)
		if tok := srv.AdminToken(); tok != "" {
			fmt.Printf("  admin token  %s\n", tok)
			fmt.Printf("               shown once; saved for the CLI in %s\n", confPath)
		}
		printRoutes(ctx, srv)
		fmt.Println("Press Ctrl-C to stop.")
	}
	<-ctx.Done()
	return nil
}

// saveUpConfig records the node in the CLI config as its data directory's
// entry and makes it current: the API URL, and the admin token if this
// start created one. Otherwise the entry keeps the token it has; an entry
// without one adopts the config's current token if this node accepts it (a
// config written before entries). The warning says when the CLI will have
// no working token for this node, and how to get one.
func saveUpConfig(ctx context.Context, srv *server.Server, dataDir string) (path, warning string, err error) {
	conf, err := client.LoadConfig()
	if err != nil {
		return "", "", err
	}
	if path, err = client.ConfigPath(); err != nil {
		return "", "", err
	}
	dir := canonicalDir(dataDir)
	e := client.Entry{DataDir: dir}
	if old := conf.Entry(dir); old != nil {
		e = *old
	}
	e.Server = srv.APIURL()
	mint := fmt.Sprintf("`nimbus token create --data %s` mints a new admin token and saves it for the CLI", dataDir)
	switch {
	case srv.AdminToken() != "":
		e.Token = srv.AdminToken()
	case e.Token != "":
		if _, err := srv.Tokens().Verify(ctx, e.Token); errors.Is(err, security.ErrUnauthorized) {
			warning = fmt.Sprintf("the token saved for %s in %s is refused (%v); %s", dataDir, path, err, mint)
		}
	default:
		if conf.Token != "" {
			if _, err := srv.Tokens().Verify(ctx, conf.Token); err == nil {
				e.Token = conf.Token
			}
		}
		if e.Token == "" {
			warning = fmt.Sprintf("%s has no token for %s, so the CLI cannot call this node; %s", path, dataDir, mint)
		}
	}
	conf.Use(e)
	if _, err := client.SaveConfig(conf); err != nil {
		return "", "", err
	}
	return path, warning, nil
}

func printRoutes(ctx context.Context, srv *server.Server) {
	apps, err := srv.Registry().Apps(ctx)
	if err != nil {
		return
	}
	for _, app := range apps {
		rev, err := srv.Registry().Active(ctx, app.Name)
		if err != nil {
			continue
		}
		for _, fn := range rev.Functions {
			for _, r := range fn.Routes {
				method := r.Method
				if method == "" {
					method = "*"
				}
				fmt.Printf("  %-6s %s%s  ->  %s/%s\n", method, srv.GatewayURL(), r.Path, app.Name, fn.Name)
			}
		}
	}
}

func printProgress(e deploy.Event) {
	who := ""
	if e.Function != "" {
		who = e.Function + ": "
	}
	stderrf("  [%-8s] %s%s\n", e.Step, who, strings.TrimSpace(e.Message))
}

func printDeployResult(res *deploy.Result) { fmt.Println(deployResult(res)) }

func deployResult(res *deploy.Result) string {
	if !res.Changed {
		return fmt.Sprintf("app %s is unchanged: revision %s is already active, nothing to deploy", res.App, short(res.Revision.ID))
	}
	return fmt.Sprintf("deployed %s: revision %s is active (%d function(s), %d module(s) uploaded)",
		res.App, short(res.Revision.ID), len(res.Revision.Functions), res.Uploaded)
}
