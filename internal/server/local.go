package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// LocalSocket is the path of the Unix socket a node opens in its data
// directory: the token endpoints, without a bearer token, for whoever can
// reach the data directory (see api.LocalHandler). The socket sits in a
// directory of mode 0700, so only the user running the node (and root) can
// connect.
func LocalSocket(dataDir string) string { return filepath.Join(dataDir, "local", "nimbus.sock") }

// maxSocketPath is the longest Unix socket path every platform takes
// (sun_path is 108 bytes on Linux, 104 on the BSDs).
const maxSocketPath = 103

// localSocket serves h on LocalSocket(dataDir).
type localSocket struct {
	path string
	ln   net.Listener
	srv  *http.Server
}

// openLocal listens on the data directory's socket. A data directory we
// hold the lock of has no other node, so a socket file left by a killed
// one is removed first.
func openLocal(dataDir string, h http.Handler, logger *slog.Logger) (*localSocket, error) {
	abs, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	path := LocalSocket(abs)
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is longer than %d bytes", path, maxSocketPath)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	return &localSocket{path: path, ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}}, nil
}

func (l *localSocket) serve() {
	_ = l.srv.Serve(l.ln) // ends with ErrServerClosed at close
}

func (l *localSocket) close(ctx context.Context) error {
	err := l.srv.Shutdown(ctx)
	l.ln.Close()
	return err
}

// startLocal runs the token watch (so a revocation on any node reaches this
// one's cache) and the local socket until ctx ends.
func (s *Server) startLocal(ctx context.Context) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.tokens.Watch(ctx); err != nil {
			s.logger.Warn("token watch stopped; tokens are checked against the store on every call", "error", err)
		}
	}()
	if s.local != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.local.serve() }()
	}
}
