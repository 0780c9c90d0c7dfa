package wasm

import (
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
//
// The image is a memory file each instance maps copy-on-write
// (cappedAllocator), so an instance costs the pages it writes, not a copy
// of the whole memory.
type snapshot struct {
	memory  *memImage
	size    uint32   // bytes of memory
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
	for i, name := range m.snapGlobals {
		g := mod.ExportedGlobal(name)
		if g == nil {
			return nil, fmt.Errorf("snapshot: global %s not exported", name)
		}
		s.globals[i] = g.Get()
	}
	if mem := mod.Memory(); mem != nil {
		b, ok := mem.Read(0, mem.Size())
		if !ok {
			return nil, fmt.Errorf("snapshot: memory of %d bytes unreadable", mem.Size())
		}
		s.memory, s.size = captureImage(b), mem.Size()
	}
	return s, nil
}

// restore makes mod, freshly instantiated without _initialize from a memory
// that starts as the snapshot's image (cappedAllocator), the snapshot's
// state: the memory grows to the snapshot's size (through the instance's
// capped allocator, like any memory.grow; nothing is copied) and the
// globals are set.
func (s *snapshot) restore(m *module, mod api.Module) error {
	if s.size > 0 {
		mem := mod.Memory()
		if size := mem.Size(); size < s.size {
			if _, ok := mem.Grow((s.size - size) / pageSize); !ok {
				return fmt.Errorf("restore snapshot: memory cannot grow to %d bytes", s.size)
			}
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
