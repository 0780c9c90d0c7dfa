package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DefaultServer is the API address `nimbus up` listens on by default.
const DefaultServer = "http://127.0.0.1:8081"

// Config is the CLI's configuration file, written by `nimbus up`.
type Config struct {
	Server string `json:"server"`
	Token  string `json:"token"`
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
// holds a token.
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

// Resolve picks the server and token: the --server flag, then NIMBUS_URL,
// then the config file, then DefaultServer; the token from NIMBUS_TOKEN,
// then the config file.
func Resolve(flagServer string) (server, token string, err error) {
	c, err := LoadConfig()
	if err != nil {
		return "", "", err
	}
	server = firstNonEmpty(flagServer, os.Getenv("NIMBUS_URL"), c.Server, DefaultServer)
	token = firstNonEmpty(os.Getenv("NIMBUS_TOKEN"), c.Token)
	return server, token, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
