package wasm

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
//
// A code no instance uses is idle. With an artifact source
// (Config.Artifacts), the runtime keeps a budget of idle codes compiled,
// the most recently used (Config.IdleModules, Config.IdleModuleBytes), and
// evicts the others: their compiled module, data image and the snapshots
// of their functions are released, and the next instance reloads them
// (use): the artifact from the source, the machine code from the
// compilation cache. A function at zero scale then costs its module and
// code structs, not its compiled code (RATIONALE.md "Idle functions hold
// no compiled code").
type code struct {
	key  [sha256.Size]byte
	size int64 // bytes of the artifact: its weight in the idle budget
	// stats and rewrite are the first compile's (a reload gives the same).
	stats   wasmrw.Stats // Data moved to the image
	rewrite time.Duration

	// Guarded by Runtime.mu.
	refs    int                  // modules loaded from it (acquire, release)
	users   int                  // instances live or being made, and Loads checking it: not evicted while > 0
	mods    map[*module]struct{} // its modules, whose snapshots an eviction drops
	res     *compiled            // nil while evicted
	loading *reload              // the reload in flight, if any
	idle    *list.Element        // its place in Runtime.idle while resident and unused
	gone    bool                 // released by its last module: never reloaded
}

// compiled is what a resident code holds.
type compiled struct {
	module wazero.CompiledModule
	image  *memImage
}

func (c *compiled) close(ctx context.Context) error {
	c.image.close()
	return c.module.Close(ctx)
}

// reload is one reload of an evicted code, which every instance waiting
// for it shares; err is set before done is closed.
type reload struct {
	done chan struct{}
	err  error
}

// reloadTimeout bounds a reload, which runs detached from the context of
// the request that started it (so that one caller giving up does not fail
// the others waiting for it).
const reloadTimeout = 2 * time.Minute

// rewriteError is a rewrite's failure, which Load reports as an invalid
// module.
type rewriteError struct{ err error }

func (e *rewriteError) Error() string { return e.err.Error() }
func (e *rewriteError) Unwrap() error { return e.err }

// errRuntimeClosed means an instance was asked of a closed runtime.
var errRuntimeClosed = errors.New("wasm runtime closed")

// errCodeReleased means an instance was asked of a module closed meanwhile.
var errCodeReleased = errors.New("module closed")

// acquire returns the code of artifact, compiled and with a use (the
// caller's checks) that the caller ends with unuse: it rewrites and
// compiles the artifact unless a loaded function already holds it (and
// reloads it from artifact if it was evicted). Each acquire is paired with
// a release.
func (r *Runtime) acquire(ctx context.Context, m *module, artifact []byte) (*code, *compiled, error) {
	key := sha256.Sum256(artifact)
	have := func(context.Context) ([]byte, error) { return artifact, nil }
	r.mu.Lock()
	if c, ok := r.codes[key]; ok {
		c.refs++
		c.mods[m] = struct{}{}
		r.mu.Unlock()
		res, err := r.use(ctx, c, have)
		if err != nil {
			r.release(ctx, c, m)
			return nil, nil, err
		}
		return c, res, nil
	}
	r.mu.Unlock()

	res, stats, rewrite, err := r.compile(ctx, artifact)
	if err != nil {
		return nil, nil, err
	}
	c := &code{key: key, size: int64(len(artifact)), stats: stats, rewrite: rewrite,
		refs: 1, users: 1, mods: map[*module]struct{}{m: {}}, res: res}
	r.mu.Lock()
	if other, ok := r.codes[key]; ok {
		// Loaded concurrently: keep the first.
		other.refs++
		other.mods[m] = struct{}{}
		r.mu.Unlock()
		res.close(ctx)
		res, err := r.use(ctx, other, have)
		if err != nil {
			r.release(ctx, other, m)
			return nil, nil, err
		}
		return other, res, nil
	}
	r.codes[key] = c
	r.mu.Unlock()
	return c, res, nil
}

// compile rewrites artifact (loadOptions) and compiles the result, or
// loads its machine code from the compilation cache.
func (r *Runtime) compile(ctx context.Context, artifact []byte) (*compiled, wasmrw.Stats, time.Duration, error) {
	start := time.Now()
	b, stats, err := wasmrw.Rewrite(artifact, loadOptions)
	if err == nil && stats.Data != nil && !imageFits(b, stats.DataEnd) {
		// The segments reach past the initial memory (instantiation fails,
		// as it should, only with them in the module): keep them.
		b, stats, err = wasmrw.Rewrite(artifact, rewriteOptions)
	}
	if err != nil {
		return nil, stats, 0, &rewriteError{err}
	}
	rewrite := time.Since(start)
	cm, err := r.rt.CompileModule(ctx, b)
	if err != nil {
		return nil, stats, 0, err
	}
	res := &compiled{module: cm, image: newDataImage(stats.Data)}
	stats.Data = nil
	return res, stats, rewrite, nil
}

// use returns c's compiled module, reloading it if it was evicted, and
// keeps it from eviction until the matching unuse. Concurrent uses of an
// evicted code share one reload; a caller whose ctx ends stops waiting
// (the reload goes on for the others). fetch gives the artifact for a
// reload.
func (r *Runtime) use(ctx context.Context, c *code, fetch func(context.Context) ([]byte, error)) (*compiled, error) {
	r.mu.Lock()
	c.users++
	if c.idle != nil {
		r.idle.Remove(c.idle)
		c.idle = nil
		r.idleBytes -= c.size
	}
	for {
		if c.gone {
			r.mu.Unlock()
			r.unuse(ctx, c)
			return nil, errCodeReleased
		}
		if res := c.res; res != nil {
			r.mu.Unlock()
			return res, nil
		}
		l := c.loading
		if l == nil && r.ctx.Err() != nil {
			r.mu.Unlock()
			r.unuse(ctx, c)
			return nil, errRuntimeClosed
		}
		if l == nil {
			l = &reload{done: make(chan struct{})}
			c.loading = l
			r.reloads.Add(1)
			go r.reload(c, l, fetch)
		}
		r.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			r.unuse(ctx, c)
			return nil, ctx.Err()
		}
		if l.err != nil {
			r.unuse(ctx, c)
			return nil, l.err
		}
		r.mu.Lock()
	}
}

// reload compiles c again from its artifact; it runs in its own goroutine
// (use), which Close waits for.
func (r *Runtime) reload(c *code, l *reload, fetch func(context.Context) ([]byte, error)) {
	defer r.reloads.Done()
	ctx, cancel := context.WithTimeout(r.ctx, reloadTimeout)
	defer cancel()
	start := time.Now()
	res, err := func() (*compiled, error) {
		b, err := fetch(ctx)
		if err != nil {
			return nil, fmt.Errorf("reload compiled code: %w", err)
		}
		if sha256.Sum256(b) != c.key {
			return nil, fmt.Errorf("reload compiled code: artifact %s: the bytes fetched do not match their digest", hex.EncodeToString(c.key[:]))
		}
		res, _, _, err := r.compile(ctx, b)
		if err != nil {
			return nil, fmt.Errorf("reload compiled code of artifact %s: %w", hex.EncodeToString(c.key[:]), err)
		}
		return res, nil
	}()
	r.reloaded.Add(1)
	r.mu.Lock()
	c.loading = nil
	l.err = err
	var victims []*compiled
	var snaps []*snapshot
	if err == nil {
		if c.gone {
			victims = append(victims, res)
		} else {
			c.res = res
			if c.users == 0 { // every waiter gave up
				victims, snaps = r.idleLocked(c)
			}
		}
	}
	close(l.done)
	r.mu.Unlock()
	r.logger.Debug("compiled code reloaded", "artifact", hex.EncodeToString(c.key[:8]), "bytes", c.size, "seconds", time.Since(start).Seconds(), "error", err)
	r.evict(ctx, victims, snaps)
}

// unuse ends a use. A code no instance uses joins the idle list, and the
// least recently used idle codes beyond the budget are evicted.
func (r *Runtime) unuse(ctx context.Context, c *code) {
	r.mu.Lock()
	c.users--
	var victims []*compiled
	var snaps []*snapshot
	if c.users == 0 && c.res != nil && !c.gone {
		victims, snaps = r.idleLocked(c)
	}
	r.mu.Unlock()
	r.evict(ctx, victims, snaps)
}

// idleLocked puts c, resident and unused, at the front of the idle list
// and takes the compiled code and snapshots of the codes beyond the budget
// off the list's back, for evict. The most recently used stays, whatever
// its size. r.mu is held.
func (r *Runtime) idleLocked(c *code) ([]*compiled, []*snapshot) {
	c.idle = r.idle.PushFront(c)
	r.idleBytes += c.size
	if r.src == nil {
		return nil, nil // nothing to reload from: keep everything
	}
	var victims []*compiled
	var snaps []*snapshot
	for r.idle.Len() > r.idleMax || (r.idleBytes > r.idleMaxBytes && r.idle.Len() > 1) {
		v := r.idle.Remove(r.idle.Back()).(*code)
		v.idle = nil
		r.idleBytes -= v.size
		victims = append(victims, v.res)
		v.res = nil
		for m := range v.mods {
			if s := m.snap.Swap(nil); s != nil {
				snaps = append(snaps, s)
			}
		}
	}
	return victims, snaps
}

// evict closes what idleLocked took.
func (r *Runtime) evict(ctx context.Context, victims []*compiled, snaps []*snapshot) {
	for _, s := range snaps {
		s.memory.close()
	}
	for _, v := range victims {
		if err := v.close(ctx); err != nil {
			r.logger.Warn("close evicted compiled code", "error", err)
		}
	}
	if n := len(victims); n > 0 {
		r.evicted.Add(int64(n))
	}
}

// release drops m's reference to c, closing c with the last.
func (r *Runtime) release(ctx context.Context, c *code, m *module) error {
	r.mu.Lock()
	c.refs--
	delete(c.mods, m)
	if c.refs > 0 {
		r.mu.Unlock()
		return nil
	}
	delete(r.codes, c.key)
	c.gone = true
	if c.idle != nil {
		r.idle.Remove(c.idle)
		c.idle = nil
		r.idleBytes -= c.size
	}
	res := c.res
	c.res = nil
	r.mu.Unlock()
	if res == nil {
		return nil
	}
	return res.close(ctx)
}

// fetcher returns how use gets c's artifact back from the source.
func (r *Runtime) fetcher(c *code) func(context.Context) ([]byte, error) {
	return func(ctx context.Context) ([]byte, error) {
		if r.src == nil {
			return nil, errors.New("no artifact source to reload from")
		}
		return r.src.GetArtifact(ctx, hex.EncodeToString(c.key[:]))
	}
}
