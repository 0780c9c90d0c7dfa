package security

// Watching reports whether Watch is running (and Verify may cache).
func (t *Tokens) Watching() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.watching
}

// Cached reports how many answers Verify holds in its cache.
func (t *Tokens) Cached() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.cache)
}
