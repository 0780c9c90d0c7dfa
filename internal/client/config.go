package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// DefaultServer is the API address `nimbus up` listens on by default.
const DefaultServer = "http://127.0.0.1:8081"

// Config is the CLI's configuration file, written by `nimbus up`.
//
// It keeps one Entry per data directory a `nimbus up` started, so the admin
// token of each survives the others; Current names the one the CLI talks to
// (the last started), and Server and Token repeat its address and token (for
// older readers and `jq -r .token`). A file from before entries existed has
// only Server and Token.
type Config struct {
	Server  string  `json:"server"`
	Token   string  `json:"token"`
	Current string  `json:"current,omitempty"`
	Servers []Entry `json:"servers,omitempty"`
}

// Entry is what the CLI knows of one data directory's server.
type Entry struct {
	// DataDir is the data directory's absolute path.
	DataDir string `json:"data_dir"`
	// Server is the API URL it was last started with.
	Server string `json:"server,omitempty"`
	// Token is an admin token of its store.
	Token string `json:"token,omitempty"`
}

// Entry returns the entry of dataDir (an absolute path), or nil.
func (c *Config) Entry(dataDir string) *Entry {
	for i := range c.Servers {
		if c.Servers[i].DataDir == dataDir {
			return &c.Servers[i]
		}
	}
	return nil
}

// Use records e (replacing the entry of its data directory, keeping the
// others) and makes it current: the CLI talks to it from now on.
func (c *Config) Use(e Entry) {
	out := c.Servers[:0:0]
	for _, old := range c.Servers {
		if old.DataDir != e.DataDir {
			out = append(out, old)
		}
	}
	c.Servers = append(out, e) // the last one is the most recently used
	c.Current, c.Server, c.Token = e.DataDir, e.Server, e.Token
}

// ForServer returns the entry for the API URL server: the current entry if
// it has that URL, else the most recently used one with it; nil if none.
func (c *Config) ForServer(server string) *Entry {
	if e := c.Entry(c.Current); e != nil && c.Current != "" && sameServer(e.Server, server) {
		return e
	}
	for i := len(c.Servers) - 1; i >= 0; i-- {
		if sameServer(c.Servers[i].Server, server) {
			return &c.Servers[i]
		}
	}
	return nil
}

func sameServer(a, b string) bool {
	return a != "" && strings.TrimRight(a, "/") == strings.TrimRight(b, "/")
}

// ConfigPath is $NIMBUS_CONFIG, or nimbus/config.json in the user's config
// directory ($XDG_CONFIG_HOME or ~/.config on Linux).
func ConfigPath() (string, error) {
	if p := os.Getenv("NIMBUS_CONFIG"); p != "" {
		return p, nil
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("locate the config directory (set NIMBUS_CONFIG): %w", err)
	}
	return filepath.Join(dir, "nimbus", "config.json"), nil
}

// LoadConfig reads the config file; a missing file is an empty Config.
func LoadConfig() (Config, error) {
	var c Config
	p, err := ConfigPath()
	if err != nil {
		return c, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return c, fmt.Errorf("%s: %w (delete it and restart `nimbus up` to rewrite it)", p, err)
	}
	return c, nil
}

// SaveConfig writes the config file, readable only by its owner because it
// holds tokens.
func SaveConfig(c Config) (string, error) {
	p, err := ConfigPath()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return "", err
	}
	data, _ := json.MarshalIndent(c, "", "  ")
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// Target is the server the CLI talks to and the token it presents.
type Target struct {
	Server string
	Token  string
	// TokenSource says where Token came from ("$NIMBUS_TOKEN", the config
	// file and entry), for error messages; empty when there is no token.
	TokenSource string
}

// ResolveTarget picks the server and token. The server: the --server flag,
// then NIMBUS_URL, then the config file's current entry, then
// DefaultServer; a URL without a scheme gets http://. The token:
// NIMBUS_TOKEN, else the config entry for that server (the current one if
// no server was named, or none matches).
func ResolveTarget(flagServer string) (Target, error) {
	c, err := LoadConfig()
	if err != nil {
		return Target{}, err
	}
	path, _ := ConfigPath()
	var t Target
	named, from := flagServer, "--server"
	if named == "" {
		named, from = os.Getenv("NIMBUS_URL"), "NIMBUS_URL"
	}
	var entry *Entry
	if named != "" {
		if t.Server, err = NormalizeServer(named); err != nil {
			return Target{}, fmt.Errorf("%s: %w", from, err)
		}
		entry = c.ForServer(t.Server)
	} else {
		t.Server = firstNonEmpty(c.Server, DefaultServer)
		entry = c.Entry(c.Current)
	}
	switch {
	case os.Getenv("NIMBUS_TOKEN") != "":
		t.Token, t.TokenSource = os.Getenv("NIMBUS_TOKEN"), "$NIMBUS_TOKEN"
	case entry != nil && entry.Token != "":
		t.Token, t.TokenSource = entry.Token, fmt.Sprintf("config file %s, entry of data dir %s", path, entry.DataDir)
	case c.Token != "":
		t.Token, t.TokenSource = c.Token, fmt.Sprintf("config file %s, current entry (%s)", path, firstNonEmpty(c.Current, c.Server))
	}
	return t, nil
}

// Resolve is ResolveTarget without the token's source.
func Resolve(flagServer string) (server, token string, err error) {
	t, err := ResolveTarget(flagServer)
	return t.Server, t.Token, err
}

// NormalizeServer turns what a user typed for --server into an API URL:
// "127.0.0.1:8081" becomes "http://127.0.0.1:8081"; a trailing slash goes.
func NormalizeServer(s string) (string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	bad := fmt.Errorf("%q is not an API URL: use http://HOST:PORT, for example %s", strings.TrimPrefix(s, "http://"), DefaultServer)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		return "", bad
	}
	return strings.TrimRight(s, "/"), nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
