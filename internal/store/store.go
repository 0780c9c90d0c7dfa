package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names of the JetStream assets Nimbus creates. They are part of the on-disk
// format: renaming one orphans existing data.
const (
	// ArtifactsBucket is the object store of function artifacts.
	ArtifactsBucket = "nimbus_artifacts"
	// RegistryBucket is the KV bucket of apps and revisions.
	RegistryBucket = "nimbus_registry"
	// SecurityBucket is the KV bucket of tokens, keys and secrets.
	SecurityBucket = "nimbus_security"
	// LegacyLogsStream is the stream of guest logs that versions before
	// per-app log streams (package guestlog) created, on subjects
	// nimbus.logs.>. It is no longer created or read; in an older data
	// directory it empties as its entries age out (7 days).
	LegacyLogsStream = "NIMBUS_LOGS"
)

// Errors returned by the store.
var (
	// ErrNotFound means the artifact is not in the artifact store.
	ErrNotFound = errors.New("artifact not found")
	// ErrLocked means another process (another `nimbus up`) holds the data
	// directory.
	ErrLocked = errors.New("data directory is in use by another nimbus up")
)

// MaxPayload is the largest NATS message the embedded server accepts.
const MaxPayload = 2 << 20

// SyncInterval is how often the embedded server fsyncs what streams in
// async persist mode wrote (nats-server's default is 2 minutes): such a
// stream's writes are on disk at most SyncInterval after they were
// acknowledged. The workflow engine keeps its log that long past the
// views it materialized into such a stream (RATIONALE.md "Durable
// workflows: one log message per group commit").
const SyncInterval = 10 * time.Second

// Options configure Open. The zero value is not usable: DataDir is required.
type Options struct {
	// DataDir holds everything Nimbus stores on this node. JetStream keeps
	// its files under DataDir/jetstream. Required.
	DataDir string
	// Listen is the host:port the embedded NATS server accepts clients on
	// (the `nimbus up --nats-listen` flag). Optional: default "", which opens
	// no listener at all; Nimbus itself always connects in-process. A port of
	// 0 picks a free port (see ClientURL). Clients must authenticate with
	// the NKey seed in DataDir/nats-client.nk (ClientSeedFile), created on
	// the first start with a listener.
	Listen string
	// Logger receives the NATS server's warnings and errors, and notices at
	// debug level. Optional: default slog.Default().
	Logger *slog.Logger
	// DiskReserve is the free space, on the data directory's filesystem,
	// below which the store refuses writes with ErrDiskFull (they resume
	// once there is more). Optional: default DefaultDiskReserve (64 MiB);
	// negative keeps no reserve.
	DiskReserve int64
}

// Store is an open embedded JetStream server, a connection to it, and the
// buckets Nimbus uses. It is safe for concurrent use.
type Store struct {
	ns     *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	lock   *dirLock
	logger *slog.Logger

	artifacts jetstream.ObjectStore
	registry  jetstream.KeyValue
	security  jetstream.KeyValue
	committer *Committer
	space     *spaceGuard // the free-space reserve (Options.DiskReserve)
	nlog      *natsLogger // the server's log, which reports stopped streams

	listening bool
	seedPath  string        // ClientSeedFile's path; "" when not listening
	closed    chan struct{} // closed by the connection's ClosedHandler

	closeOnce sync.Once
	closeErr  error
}

// setupTimeout bounds Open when ctx has no deadline.
const setupTimeout = 30 * time.Second

// Open starts the embedded NATS server with JetStream on opts.DataDir,
// connects to it in-process and creates every stream and bucket Nimbus uses.
// It fails with an error wrapping ErrLocked if another process uses DataDir.
func Open(ctx context.Context, opts Options) (_ *Store, err error) {
	if opts.DataDir == "" {
		return nil, errors.New("open store: data directory is required")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, setupTimeout)
		defer cancel()
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, fmt.Errorf("open store: data directory %q: %w", opts.DataDir, err)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create data directory: %w", err)
	}
	lock, err := lockDir(dataDir)
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	defer func() {
		if err != nil {
			_ = lock.release()
		}
	}()

	sopts := &server.Options{
		ServerName: "nimbus",
		JetStream:  true,
		StoreDir:   filepath.Join(dataDir, "jetstream"),
		// What JetStream acknowledges is fsynced (DESIGN.md "Durability").
		// The default (fsync every 2 minutes) loses acknowledged writes on
		// power loss.
		SyncAlways:   true,
		SyncInterval: SyncInterval,
		NoSigs:       true,
		// Room for the largest value, event or artifact chunk Nimbus
		// accepts (1MiB) plus its headers; the NATS default is 1MB.
		MaxPayload: MaxPayload,
		// The embedded server has no monitoring, cluster or leaf listeners.
		HTTPPort: 0,
	}
	if opts.Listen == "" {
		sopts.DontListen = true
	} else {
		host, port, err := splitListen(opts.Listen)
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		sopts.Host, sopts.Port = host, port
	}
	// Every connection authenticates, the in-process one included (the
	// server applies its authorization to in-process clients too), so a
	// listener never admits an anonymous client.
	au, err := newAuth(dataDir, opts.Listen != "")
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	if err := au.configure(sopts); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	authOpt, err := au.connectOption()
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("open store: configure NATS server: %w", err)
	}
	nlog := &natsLogger{l: logger.With("component", "nats")}
	ns.SetLoggerV2(nlog, false, false, false)
	ns.Start()
	defer func() {
		if err != nil {
			ns.Shutdown()
			ns.WaitForShutdown()
		}
	}()
	if err := waitReady(ctx, ns, nlog); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}

	closed := make(chan struct{})
	nc, err := nats.Connect("",
		nats.InProcessServer(ns),
		nats.Name("nimbus"),
		authOpt,
		nats.ClosedHandler(func(*nats.Conn) { close(closed) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			logger.Warn("nats client error", "subject", subj, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("open store: connect in-process: %w", err)
	}
	defer func() {
		if err != nil {
			nc.Close()
		}
	}()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("open store: jetstream: %w", err)
	}

	s := &Store{
		ns:        ns,
		nc:        nc,
		js:        js,
		lock:      lock,
		logger:    logger,
		listening: opts.Listen != "",
		seedPath:  au.seedPath,
		closed:    closed,
		nlog:      nlog,
	}
	if err := s.setup(ctx); err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	reserve := opts.DiskReserve
	if reserve == 0 {
		reserve = DefaultDiskReserve
	}
	s.space = &spaceGuard{dir: dataDir, reserve: uint64(max(reserve, 0)), free: freeSpace}
	s.committer, err = NewCommitter(js, CommitterOptions{Logger: logger, CheckSpace: s.space.check, StreamStopped: nlog.streamFailed})
	if err != nil {
		return nil, fmt.Errorf("open store: %w", err)
	}
	return s, nil
}

// setup creates or updates every stream and bucket. It is idempotent.
func (s *Store) setup(ctx context.Context) error {
	var err error
	s.artifacts, err = s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      ArtifactsBucket,
		Description: "Nimbus function artifacts, named by sha256 hex",
		Storage:     jetstream.FileStorage,
		Replicas:    1,
	})
	if err != nil {
		return fmt.Errorf("object store %s: %w", ArtifactsBucket, err)
	}
	// History 1: an app head carries its own activation history and a
	// revision is never rewritten, so older values of a key are not needed.
	s.registry, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      RegistryBucket,
		Description: "Nimbus apps (apps.<app>) and revisions (revisions.<app>.<id>)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", RegistryBucket, err)
	}
	s.security, err = s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      SecurityBucket,
		Description: "Nimbus tokens, keys and secrets",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    1,
	})
	if err != nil {
		return fmt.Errorf("kv %s: %w", SecurityBucket, err)
	}
	return nil
}

// Conn returns the in-process connection to the embedded server.
func (s *Store) Conn() *nats.Conn { return s.nc }

// JetStream returns the JetStream context of Conn.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// Committer returns the node's commit path: every durable write of the
// event log, the async invocation records and app KV buckets goes through
// it, so concurrent writers share commits (see Committer).
func (s *Store) Committer() *Committer { return s.committer }

// CheckSpace returns a *DiskFullError (ErrDiskFull) when the data
// directory's filesystem has less free space than the store keeps in
// reserve. The committer asks it before every commit; writers outside the
// committer (artifact uploads, registry records) ask it before writing.
func (s *Store) CheckSpace() error { return s.space.check() }

// Registry returns the KV bucket of apps and revisions.
func (s *Store) Registry() jetstream.KeyValue { return s.registry }

// Security returns the KV bucket of tokens, keys and secrets.
func (s *Store) Security() jetstream.KeyValue { return s.security }

// ClientURL returns the URL external NATS clients connect to, or "" when the
// server does not listen (Options.Listen was empty).
func (s *Store) ClientURL() string {
	if !s.listening {
		return ""
	}
	return s.ns.ClientURL()
}

// ClientSeedFile returns the path of the NKey seed file external NATS
// clients authenticate with, or "" when the server does not listen.
func (s *Store) ClientSeedFile() string { return s.seedPath }

// Close drains the connection, shuts the server down, waits for it and
// releases the data directory. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
		if err := s.committer.Close(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
		if err := s.nc.Drain(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
			errs = append(errs, fmt.Errorf("drain: %w", err))
			s.nc.Close()
		}
		select {
		case <-s.closed:
		case <-time.After(drainTimeout):
			s.nc.Close()
			<-s.closed
		}
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		if err := s.lock.release(); err != nil {
			errs = append(errs, err)
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("close store: %w", err)
		}
	})
	return s.closeErr
}

// drainTimeout bounds how long Close waits for in-flight messages.
const drainTimeout = 10 * time.Second

// waitReady waits until the server accepts connections. It fails fast when
// the server reported a fatal error (for example, the listen port is taken):
// our logger does not exit the process the way nats-server's own does.
func waitReady(ctx context.Context, ns *server.Server, nlog *natsLogger) error {
	for {
		if ns.ReadyForConnections(20 * time.Millisecond) {
			return nil
		}
		if msg := nlog.fatal(); msg != "" {
			return fmt.Errorf("NATS server did not start: %s", msg)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("NATS server did not become ready: %w", err)
		}
	}
}

// splitListen parses "host:port"; port 0 asks for a free port.
func splitListen(listen string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return "", 0, fmt.Errorf("listen address %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("listen address %q: port must be a number from 0 to 65535", listen)
	}
	if port == 0 {
		// nats-server treats 0 as "default port 4222"; -1 is "any free port".
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

// natsLogger routes the NATS server's log into slog: warnings and errors at
// their level, notices at debug level (quiet by default). Debug and trace are
// never enabled on the server.
type natsLogger struct {
	l *slog.Logger

	mu       sync.Mutex
	fatalMsg string
	failed   map[string]string // stream -> the write error that stopped it
}

// streamWriteErrorFormat is how nats-server (stream.go, setWriteErrLocked)
// reports the write error after which a stream refuses, unanswered, every
// write until the server restarts; its arguments are the account, the
// stream and the error. TestStreamStoppedByAFullDisk fails if it changes.
const streamWriteErrorFormat = "JetStream stream '%s > %s' critical write error: %v"

func (n *natsLogger) Noticef(format string, v ...any) {
	n.l.Debug(fmt.Sprintf(format, v...))
}
func (n *natsLogger) Warnf(format string, v ...any) { n.l.Warn(fmt.Sprintf(format, v...)) }
func (n *natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	n.mu.Lock()
	n.fatalMsg = msg
	n.mu.Unlock()
	n.l.Error(msg)
}
func (n *natsLogger) Errorf(format string, v ...any) {
	if format == streamWriteErrorFormat && len(v) == 3 {
		n.mu.Lock()
		if n.failed == nil {
			n.failed = map[string]string{}
		}
		n.failed[fmt.Sprint(v[1])] = fmt.Sprint(v[2])
		n.mu.Unlock()
	}
	n.l.Error(fmt.Sprintf(format, v...))
}

// stopped lists the streams the server stopped after a failed write,
// sorted.
func (n *natsLogger) stopped() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Sorted(maps.Keys(n.failed))
}

// streamFailed returns a *StreamStoppedError when nats-server stopped
// stream's writes after a failed one, nil otherwise.
func (n *natsLogger) streamFailed(stream string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if cause, ok := n.failed[stream]; ok {
		return &StreamStoppedError{Stream: stream, Cause: cause}
	}
	return nil
}
func (n *natsLogger) Debugf(format string, v ...any) {}
func (n *natsLogger) Tracef(format string, v ...any) {}

// fatal returns the last fatal message, "" if none.
func (n *natsLogger) fatal() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.fatalMsg
}
