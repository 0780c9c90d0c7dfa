package wasm

import (
	"context"
	"crypto/sha256"
	"time"

	"github.com/tetratelabs/wazero"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmrw"
)

// code is one rewritten and compiled module, shared by every function
// loaded from the same artifact (functions of one app built into one
// binary, or many deployments of one module): Load rewrites and compiles
// an artifact once per runtime, and the decoded module, its compiled code
// and its data image exist once however many functions use it. What
// differs per function (limits, environment, grants, the snapshot, which
// _initialize may compute from the environment) stays in module.
type code struct {
	key      [sha256.Size]byte
	compiled wazero.CompiledModule
	stats    wasmrw.Stats // Data moved to image
	image    *memImage
	rewrite  time.Duration
	refs     int // guarded by Runtime.mu
}

// rewriteError is a rewrite's failure, which Load reports as an invalid
// module.
type rewriteError struct{ err error }

func (e *rewriteError) Error() string { return e.err.Error() }
func (e *rewriteError) Unwrap() error { return e.err }

// acquire returns the code of artifact, rewriting and compiling it unless
// a loaded function already holds it. Each acquire is paired with a
// release.
func (r *Runtime) acquire(ctx context.Context, artifact []byte) (*code, error) {
	key := sha256.Sum256(artifact)
	r.mu.Lock()
	if c, ok := r.codes[key]; ok {
		c.refs++
		r.mu.Unlock()
		return c, nil
	}
	r.mu.Unlock()

	start := time.Now()
	b, stats, err := wasmrw.Rewrite(artifact, loadOptions)
	if err == nil && stats.Data != nil && !imageFits(b, stats.DataEnd) {
		// The segments reach past the initial memory (instantiation fails,
		// as it should, only with them in the module): keep them.
		b, stats, err = wasmrw.Rewrite(artifact, rewriteOptions)
	}
	if err != nil {
		return nil, &rewriteError{err}
	}
	rewrite := time.Since(start)
	compiled, err := r.rt.CompileModule(ctx, b)
	if err != nil {
		return nil, err
	}
	c := &code{key: key, compiled: compiled, stats: stats, image: newDataImage(stats.Data), rewrite: rewrite, refs: 1}
	c.stats.Data = nil

	r.mu.Lock()
	defer r.mu.Unlock()
	if other, ok := r.codes[key]; ok {
		// Loaded concurrently: keep the first.
		other.refs++
		compiled.Close(ctx)
		return other, nil
	}
	r.codes[key] = c
	return c, nil
}

// release drops a reference to c, closing it with the last.
func (r *Runtime) release(ctx context.Context, c *code) error {
	r.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last {
		delete(r.codes, c.key)
	}
	r.mu.Unlock()
	if !last {
		return nil
	}
	c.image.close()
	return c.compiled.Close(ctx)
}
