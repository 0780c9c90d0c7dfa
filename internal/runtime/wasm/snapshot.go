package wasm

import (
	"bytes"
	"fmt"

	"github.com/tetratelabs/wazero/api"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmrw"
)

// snapshotGlobals is the prefix under which Load exports a module's mutable
// globals (wasmrw.Options.ExportGlobals), so that an instance's whole state
// is its memory plus those globals.
const snapshotGlobals = "nimbus_snapshot_global_"

// snapshot is an SDK instance's state right after _initialize: every
// further instance of the revision starts from it instead of running
// _initialize again (the Go runtime's initialization is most of a cold
// start).
//
// What the image fixes for every instance of one revision on one node is
// what _initialize computed: the Go runtime's hash seed and the state of
// its internal random generator (math/rand's and math/rand/v2's top-level
// functions, map iteration order), which it draws from WASI random_get at
// initialization. They are still random (drawn again each time a node
// loads the revision) but equal across its instances: use crypto/rand,
// which calls random_get at every read, for anything that must be unique.
// Clocks are not part of it: the Go runtime reads time from WASI at every
// call, and wazero's monotonic clock is the node process's, so it goes on
// from the snapshot. Side effects of _initialize (log lines, host calls)
// happen once per revision and node, with the first instance.
type snapshot struct {
	memory  []byte
	globals []uint64 // in the order of module.snapGlobals
}

// snapshottable reports whether instances of a module so rewritten can be
// restored from a snapshot: it keeps no state beyond memory and mutable
// globals, and runs nothing at instantiation.
func snapshottable(st wasmrw.Stats, initialize bool) bool {
	return initialize && !st.Start && st.TableOrDropOps == 0
}

// capture takes the snapshot of mod, an instance that has just run
// _initialize.
func (m *module) capture(mod api.Module) (*snapshot, error) {
	s := &snapshot{globals: make([]uint64, len(m.snapGlobals))}
	if mem := mod.Memory(); mem != nil {
		b, ok := mem.Read(0, mem.Size())
		if !ok {
			return nil, fmt.Errorf("snapshot: memory of %d bytes unreadable", mem.Size())
		}
		s.memory = bytes.Clone(b)
	}
	for i, name := range m.snapGlobals {
		g := mod.ExportedGlobal(name)
		if g == nil {
			return nil, fmt.Errorf("snapshot: global %s not exported", name)
		}
		s.globals[i] = g.Get()
	}
	return s, nil
}

// restore makes mod, freshly instantiated without _initialize, the
// snapshot's state. Growing the memory goes through the instance's capped
// allocator, like any memory.grow. With prefilled (the allocator started
// the memory as a copy of the snapshot) only what instantiation wrote, the
// data segments, is copied again.
func (s *snapshot) restore(m *module, mod api.Module, prefilled bool) error {
	if n := uint32(len(s.memory)); n > 0 {
		mem := mod.Memory()
		if size := mem.Size(); size < n {
			if _, ok := mem.Grow((n - size) / pageSize); !ok {
				return fmt.Errorf("restore snapshot: memory cannot grow to %d bytes", n)
			}
		}
		img := s.memory
		if prefilled && m.dataEnd >= 0 {
			img = img[:min(int64(len(img)), m.dataEnd)]
		}
		if !mem.Write(0, img) {
			return fmt.Errorf("restore snapshot: %d bytes do not fit memory of %d", n, mem.Size())
		}
	}
	for i, name := range m.snapGlobals {
		g, ok := mod.ExportedGlobal(name).(api.MutableGlobal)
		if !ok {
			return fmt.Errorf("restore snapshot: global %s not exported as mutable", name)
		}
		g.Set(s.globals[i])
	}
	return nil
}
