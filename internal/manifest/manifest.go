package manifest

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nimbus-dev/nimbus/internal/model"
)

// FileNames are the names Load looks for in a directory, in order.
var FileNames = []string{"nimbus.yaml", "nimbus.yml"}

// Runtimes. The list of runtimes a function may name is the model's
// (model.Runtimes), so the manifest and the server cannot disagree.
const (
	// RuntimeWasm runs WebAssembly (WASI preview 1) modules on wazero.
	RuntimeWasm = model.RuntimeWasm
	// RuntimeProcess runs an executable as a worker (HTTP on $PORT).
	RuntimeProcess = model.RuntimeProcess
)

// Defaults and limits of function settings: the model's (model.Plan
// applies the same ones to a function deployed through the API).
// docs/manifest.md documents them.
const (
	DefaultMemoryBytes           = model.DefaultMemoryBytes
	MinMemoryBytes               = model.MinMemoryBytes
	MaxMemoryBytes               = model.MaxMemoryBytes
	WasmPageBytes         uint64 = 64 << 10
	DefaultTimeout               = model.DefaultTimeout
	MinTimeout                   = model.MinTimeout
	MaxTimeout                   = model.MaxTimeout
	DefaultConcurrency           = model.DefaultConcurrency
	DefaultMaxInstances          = model.DefaultMaxInstances
	MaxMaxInstances              = model.MaxMaxInstances
	DefaultMaxBodyBytes          = model.DefaultMaxBodyBytes
	MaxBodyBytes                 = model.MaxBodyBytes
	defaultMaxConcurrency        = model.MaxConcurrency
)

// Manifest is a validated nimbus.yaml. Every default is filled in.
type Manifest struct {
	// File is the absolute path of the manifest.
	File string
	// Dir is the absolute path of the directory holding it; module and build
	// paths are relative to it.
	Dir string
	// App is the app's name, a DNS label.
	App string
	// Functions in the order the file declares them; at least one.
	Functions []*Function
	// Topics in the order the file declares them, then the dead-letter
	// topic (Implicit) unless declared, whenever the app has any topic or
	// trigger. Empty for an app without events.
	Topics []Topic
	// Buckets in the order the file declares them.
	Buckets []Bucket
}

// Function is one validated function of a manifest.
type Function struct {
	Name string
	// Kind is "" for a plain function or model.KindWorkflow (kind: workflow).
	Kind    string
	Runtime string // "wasm" (default) or "process"
	// Module is the absolute path of the artifact (inside Manifest.Dir):
	// the .wasm file, or for a process the directory deploy packs (default
	// the manifest's directory).
	Module string
	// Process is how a process function starts (command, contract,
	// readiness, isolation, defaults filled in); nil for wasm.
	Process *model.Process
	// Build is how to produce Module; nil if the manifest has no build step.
	Build *Build

	MemoryBytes  uint64        // default 128MiB; a multiple of 64KiB
	Timeout      time.Duration // default 30s
	Concurrency  int           // max concurrent requests per instance; 1 for wasm
	MaxInstances int           // default 16

	MaxRequestBytes  int64 // default 6MiB
	MaxResponseBytes int64 // default 6MiB

	Env map[string]string // never nil
	// Capabilities are the grants as written: log, kv:<bucket>,
	// kv:<bucket>:read, publish:<topic> (see capability.Parse); every bucket
	// and topic named is declared.
	Capabilities []string
	Routes       []model.Route
	// Triggers in the order the file declares them, names unique.
	Triggers []Trigger
	// Flow is nil when the function declares none, or only defaults.
	Flow *Flow
	// Async is the retry policy of async invocations; nil when the
	// function declares none (the node's defaults apply).
	Async *model.AsyncPolicy

	// Pos is where the function is declared (its name).
	Pos Position
}

// Build is a function's build step.
type Build struct {
	// Command is run with sh -c.
	Command string
	// Dir is the absolute working directory of Command.
	Dir string
	// Pos is the position of build.command in the manifest.
	Pos Position
}

// Registry returns the registry record of f, naming its module by
// moduleSHA256 (hex), as stored in the artifact store.
func (f *Function) Registry(moduleSHA256 string) model.Function {
	return model.Function{
		Name:             f.Name,
		Kind:             f.Kind,
		Runtime:          f.Runtime,
		Module:           moduleSHA256,
		MemoryBytes:      f.MemoryBytes,
		TimeoutMS:        f.Timeout.Milliseconds(),
		Concurrency:      f.Concurrency,
		MaxInstances:     f.MaxInstances,
		MaxRequestBytes:  f.MaxRequestBytes,
		MaxResponseBytes: f.MaxResponseBytes,
		Env:              maps.Clone(f.Env),
		Capabilities:     slices.Clone(f.Capabilities),
		Routes:           slices.Clone(f.Routes),
		Triggers:         f.registryTriggers(),
		Flow:             f.Flow.Registry(),
		Async:            f.Async,
		Process:          f.registryProcess(),
	}
}

// Spec is the deploy m resolves to, as the API takes it: every function
// (Registry) naming its module by the digest modules holds for it, and
// the app's topics and buckets.
func (m *Manifest) Spec(modules map[string]string) model.Spec {
	fns := make([]model.Function, 0, len(m.Functions))
	for _, f := range m.Functions {
		fns = append(fns, f.Registry(modules[f.Name]))
	}
	return model.Spec{Functions: fns, Topics: m.RegistryTopics(), Buckets: m.RegistryBuckets()}
}

func (f *Function) registryProcess() *model.Process {
	if f.Process == nil {
		return nil
	}
	p := *f.Process
	p.Command = slices.Clone(p.Command)
	return &p
}

func (f *Function) registryTriggers() []model.Trigger {
	var out []model.Trigger
	for _, t := range f.Triggers {
		out = append(out, t.Registry())
	}
	return out
}

// addDeadLetter adds the implicit dead-letter topic to an app that has
// events: a declared topic or a trigger.
func (m *Manifest) addDeadLetter() {
	events := len(m.Topics) > 0
	for _, f := range m.Functions {
		events = events || len(f.Triggers) > 0
	}
	if !events || slices.ContainsFunc(m.Topics, func(t Topic) bool { return t.Name == model.DeadLetterTopic }) {
		return
	}
	m.Topics = append(m.Topics, Topic{Name: model.DeadLetterTopic, MaxEventBytes: MaxEventBytes,
		Retention: DefaultRetention, Implicit: true})
}

// Function returns the function called name, or nil.
func (m *Manifest) Function(name string) *Function {
	for _, f := range m.Functions {
		if f.Name == name {
			return f
		}
	}
	return nil
}

// Load reads and validates a manifest. path is either the manifest file or a
// directory, in which Load reads nimbus.yaml, or else nimbus.yml.
//
// Positions in errors name the file relative to the current directory when
// it is below it, else by its absolute path. A manifest that does not
// validate yields Errors; a file that cannot be read yields the os error,
// wrapped.
func Load(path string) (*Manifest, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("load manifest %s: %w", path, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	if st.IsDir() {
		found := ""
		for _, name := range FileNames {
			p := filepath.Join(abs, name)
			if _, err := os.Stat(p); err == nil {
				found = p
				break
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("load manifest: %w", err)
			}
		}
		if found == "" {
			return nil, fmt.Errorf("load manifest: no %s in %s: %w", FileNames[0], displayName(abs), fs.ErrNotExist)
		}
		abs = found
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, fmt.Errorf("load manifest: %w", err)
	}
	return parse(displayName(abs), abs, data)
}

// Parse validates the manifest in data. filename is used in error positions
// as given; its absolute form (relative to the current directory) is where
// module and build paths are resolved from.
func Parse(filename string, data []byte) (*Manifest, error) {
	abs, err := filepath.Abs(filename)
	if err != nil {
		return nil, fmt.Errorf("parse manifest %s: %w", filename, err)
	}
	return parse(filename, abs, data)
}

// displayName is abs relative to the working directory when it is below it,
// else abs.
func displayName(abs string) string {
	wd, err := os.Getwd()
	if err != nil {
		return abs
	}
	rel, err := filepath.Rel(wd, abs)
	if err != nil || !filepath.IsLocal(rel) {
		return abs
	}
	return rel
}
