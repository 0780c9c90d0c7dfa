package model

import (
	"fmt"
	"time"
)

// Defaults and bounds of a function's limits. Plan fills a zero field with
// its default and refuses a value out of bounds, whichever way the function
// arrived (manifest, API, test), so the scheduler, the runtimes and the
// gateway read complete, valid limits and apply no defaults of their own.
// docs/manifest.md documents them.
const (
	DefaultMemoryBytes uint64 = 128 << 20
	MinMemoryBytes     uint64 = 1 << 20
	MaxMemoryBytes     uint64 = 4 << 30

	DefaultTimeout = 30 * time.Second
	MinTimeout     = time.Millisecond
	MaxTimeout     = 15 * time.Minute

	DefaultConcurrency = 1
	MaxConcurrency     = 1000

	DefaultMaxInstances = 16
	MaxMaxInstances     = 1000

	DefaultMaxBodyBytes int64 = 6 << 20
	MaxBodyBytes        int64 = 64 << 20
)

// Timeout is the function's deadline per invocation.
func (f *Function) Timeout() time.Duration { return time.Duration(f.TimeoutMS) * time.Millisecond }

// withLimits fills f's zero limits with their defaults and checks every
// limit against its bounds. Negative values are refused, not defaulted.
func withLimits(f Function) (Function, error) {
	if f.MemoryBytes == 0 {
		f.MemoryBytes = DefaultMemoryBytes
	}
	if f.TimeoutMS == 0 {
		f.TimeoutMS = DefaultTimeout.Milliseconds()
	}
	if f.Concurrency == 0 {
		f.Concurrency = DefaultConcurrency
	}
	if f.MaxInstances == 0 {
		f.MaxInstances = DefaultMaxInstances
	}
	if f.MaxRequestBytes == 0 {
		f.MaxRequestBytes = DefaultMaxBodyBytes
	}
	if f.MaxResponseBytes == 0 {
		f.MaxResponseBytes = DefaultMaxBodyBytes
	}
	switch {
	case f.MemoryBytes < MinMemoryBytes || f.MemoryBytes > MaxMemoryBytes:
		return f, fmt.Errorf("memory_bytes %d is out of range: use %s to %s", f.MemoryBytes, FormatBytes(MinMemoryBytes), FormatBytes(MaxMemoryBytes))
	case f.TimeoutMS < MinTimeout.Milliseconds() || f.TimeoutMS > MaxTimeout.Milliseconds():
		return f, fmt.Errorf("timeout_ms %d is out of range: use %d to %d (%s to %s)", f.TimeoutMS, MinTimeout.Milliseconds(), MaxTimeout.Milliseconds(), MinTimeout, "15m")
	case f.Concurrency < 1 || f.Concurrency > MaxConcurrency:
		return f, fmt.Errorf("concurrency %d is out of range: use 1 to %d", f.Concurrency, MaxConcurrency)
	case f.MaxInstances < 1 || f.MaxInstances > MaxMaxInstances:
		return f, fmt.Errorf("max_instances %d is out of range: use 1 to %d", f.MaxInstances, MaxMaxInstances)
	case f.MaxRequestBytes < 1 || f.MaxRequestBytes > MaxBodyBytes:
		return f, fmt.Errorf("max_request_bytes %d is out of range: use 1 to %d (%s)", f.MaxRequestBytes, MaxBodyBytes, FormatBytes(uint64(MaxBodyBytes)))
	case f.MaxResponseBytes < 1 || f.MaxResponseBytes > MaxBodyBytes:
		return f, fmt.Errorf("max_response_bytes %d is out of range: use 1 to %d (%s)", f.MaxResponseBytes, MaxBodyBytes, FormatBytes(uint64(MaxBodyBytes)))
	}
	return f, nil
}

// FormatBytes formats n bytes with the largest binary unit that divides it,
// the way a manifest writes sizes: "64MiB", "512KiB", "1000B".
func FormatBytes(n uint64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
