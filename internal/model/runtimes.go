package model

import (
	"fmt"
	"slices"
	"strings"
)

// Runtime names (Function.Runtime).
const (
	// RuntimeWasm runs WebAssembly (WASI preview 1) modules on wazero. It is
	// the default.
	RuntimeWasm = "wasm"
	// RuntimeProcess runs an executable (any language) as a long-lived
	// worker that speaks a contract (Process.Contract), isolated by what
	// the host offers (namespaces, cgroups, rlimits, a private uid).
	RuntimeProcess = "process"
)

// Process contracts (Process.Contract): how Nimbus talks to a process.
const (
	// ContractHTTP is HTTP on $PORT (the Cloud Run and Knative contract):
	// the process listens on the port Nimbus gives it in PORT and answers
	// the requests Nimbus proxies to it. The default.
	ContractHTTP = "http"
	// ContractLambda is the AWS Lambda Runtime API: the process (a function
	// built with a Lambda runtime client, or a custom runtime bootstrap)
	// polls AWS_LAMBDA_RUNTIME_API for invocations, one at a time.
	ContractLambda = "lambda"
)

// Process isolation modes (Process.Isolation).
const (
	// IsolationSandbox runs the process in its own namespaces (pid, ipc,
	// uts, mount, network), cgroup and uid, with rlimits. The default; a
	// node that cannot provide it refuses the function.
	IsolationSandbox = "sandbox"
	// IsolationNone is the manifest's explicit opt-in to running the
	// process unisolated (the node's uid and network, rlimits only), for
	// hosts without root or namespaces.
	IsolationNone = "none"
)

// Bounds of a process function's configuration.
const (
	maxCommandArgs  = 256
	maxCommandBytes = 16 << 10
)

// Process is how a process function (Runtime RuntimeProcess) is started
// and spoken to; nil for every other runtime. Its artifact is a tar of the
// function's directory, unpacked read-only on the node.
type Process struct {
	// Command is the program and its arguments. Command[0] is a path
	// relative to the function's directory ("./server") or a program name
	// looked up in the process's PATH (/usr/local/bin:/usr/bin:/bin).
	Command []string `json:"command"`
	// Contract is how Nimbus talks to the process: ContractHTTP (default)
	// or ContractLambda.
	Contract string `json:"contract"`
	// ReadinessPath, when set, is polled with GET until it answers below
	// 500 before the first request; otherwise the process is ready when
	// its port accepts a connection.
	ReadinessPath string `json:"readiness_path,omitempty"`
	// Isolation is IsolationSandbox (default) or IsolationNone.
	Isolation string `json:"isolation"`
}

// checkProcess validates and defaults a function's process configuration
// against its runtime.
func checkProcess(f Function) (*Process, error) {
	if f.Runtime != RuntimeProcess {
		if f.Process != nil {
			return nil, fmt.Errorf("process configuration (command) is only for runtime %q, and this function's runtime is %q", RuntimeProcess, f.Runtime)
		}
		return nil, nil
	}
	if f.Process == nil || len(f.Process.Command) == 0 {
		return nil, fmt.Errorf("runtime %q needs a command: the program to start and its arguments, such as [\"python3\", \"app.py\"]", RuntimeProcess)
	}
	p := *f.Process
	p.Command = slices.Clone(p.Command)
	if len(p.Command) > maxCommandArgs {
		return nil, fmt.Errorf("command has %d arguments, over the limit of %d", len(p.Command), maxCommandArgs)
	}
	n := 0
	for _, a := range p.Command {
		if strings.ContainsRune(a, 0) {
			return nil, fmt.Errorf("command argument %q contains NUL", a)
		}
		n += len(a)
	}
	if n > maxCommandBytes {
		return nil, fmt.Errorf("command is %d bytes, over the limit of %d", n, maxCommandBytes)
	}
	if strings.TrimSpace(p.Command[0]) == "" {
		return nil, fmt.Errorf("command[0] is empty: name the program to start")
	}
	if p.Contract == "" {
		p.Contract = ContractHTTP
	}
	switch p.Contract {
	case ContractHTTP, ContractLambda:
	default:
		return nil, fmt.Errorf("unknown contract %q: use %q (HTTP on $PORT) or %q (the AWS Lambda Runtime API)", p.Contract, ContractHTTP, ContractLambda)
	}
	if p.Contract == ContractLambda && p.ReadinessPath != "" {
		return nil, fmt.Errorf("readiness path %q is for contract %q: a Lambda runtime is ready when it asks for its first invocation", p.ReadinessPath, ContractHTTP)
	}
	if p.ReadinessPath != "" && (!strings.HasPrefix(p.ReadinessPath, "/") || strings.ContainsFunc(p.ReadinessPath, func(c rune) bool { return c <= ' ' || c == 0x7f })) {
		return nil, fmt.Errorf("readiness path %q must start with '/' and contain no spaces or control characters", p.ReadinessPath)
	}
	if p.Isolation == "" {
		p.Isolation = IsolationSandbox
	}
	if p.Isolation != IsolationSandbox && p.Isolation != IsolationNone {
		return nil, fmt.Errorf("unknown isolation %q: use %q (default) or %q to opt in to running unisolated", p.Isolation, IsolationSandbox, IsolationNone)
	}
	return &p, nil
}

// Runtimes are the runtime names a function may give, the default first.
// It is the one list the manifest parser and revision validation share;
// a node runs some of them (its scheduler's runtime.Set) and refuses at
// deploy a function whose runtime it does not run.
func Runtimes() []string { return []string{RuntimeWasm, RuntimeProcess} }

// reservedRuntimes are names kept for runtimes still to come.
var reservedRuntimes = []string{}

// CheckRuntime fails when name is not one of Runtimes, with a message
// that says which are.
func CheckRuntime(name string) error {
	known := Runtimes()
	if slices.Contains(known, name) {
		return nil
	}
	if slices.Contains(reservedRuntimes, name) {
		if len(known) == 1 {
			return fmt.Errorf("runtime %q is not available yet: only %q is", name, known[0])
		}
		return fmt.Errorf("runtime %q is not available yet: use one of %s", name, quoteList(known))
	}
	if len(known) == 1 {
		return fmt.Errorf("unknown runtime %q: only %q is available", name, known[0])
	}
	return fmt.Errorf("unknown runtime %q: use one of %s", name, quoteList(known))
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
