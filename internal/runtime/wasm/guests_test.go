package wasm

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nimbus-dev/nimbus/internal/runtime/wasm/wasmbin"
	"github.com/nimbus-dev/nimbus/sdk/go/wire"
)

// guestSrc is one real guest built with the local Go toolchain.
type guestSrc struct {
	name   string
	pkg    string // relative to the module root
	shared bool   // -buildmode=c-shared (an SDK reactor)
}

var guestSrcs = []guestSrc{
	{"sdk", "./internal/runtime/wasm/testdata/sdkguest", true},
	{"wagi", "./internal/runtime/wasm/testdata/wagiguest", false},
	{"hello-example", "./examples/hello/hello", true},
	{"wagi-example", "./examples/wagi/wagi", false},
}

// buildGuests builds every guest (GOOS=wasip1 GOARCH=wasm) and returns their
// bytes by name. Builds are cached under the user cache dir, keyed by the
// hash of the toolchain version and of every source they depend on in this
// repository, so a test run that changed nothing builds nothing.
func buildGuests() (map[string][]byte, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	version, err := exec.Command("go", "version").Output()
	if err != nil {
		return nil, fmt.Errorf("go version: %w", err)
	}
	cacheDir, err := os.UserCacheDir()
	if err != nil {
		cacheDir = os.TempDir()
	}
	cacheDir = filepath.Join(cacheDir, "nimbus-test", "wasm-guests")
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for _, g := range guestSrcs {
		h := sha256.New()
		fmt.Fprintf(h, "%s\n%s\n%v\n", version, g.pkg, g.shared)
		for _, dir := range []string{g.pkg, "./sdk/go"} {
			if err := hashDir(h, filepath.Join(root, dir)); err != nil {
				return nil, err
			}
		}
		if err := hashFile(h, filepath.Join(root, "go.mod")); err != nil {
			return nil, err
		}
		path := filepath.Join(cacheDir, g.name+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".wasm")
		if b, err := os.ReadFile(path); err == nil {
			out[g.name] = b
			continue
		}
		tmp := path + fmt.Sprintf(".%d.tmp", os.Getpid())
		args := []string{"build", "-o", tmp}
		if g.shared {
			args = append(args, "-buildmode=c-shared")
		}
		cmd := exec.Command("go", append(args, g.pkg)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s: %w\n%s", g.pkg, err, b)
		}
		if err := os.Rename(tmp, path); err != nil {
			return nil, err
		}
		if out[g.name], err = os.ReadFile(path); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}

func hashDir(h interface{ Write([]byte) (int, error) }, dir string) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(p, ".go") && !strings.HasSuffix(p, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	for _, f := range files {
		fmt.Fprintf(h, "%s\n", f)
		if err := hashFile(h, f); err != nil {
			return err
		}
	}
	return nil
}

func hashFile(h interface{ Write([]byte) (int, error) }, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	_, err = h.Write(b)
	return err
}

// Hand-written modules.

var (
	tVoid   = wasmbin.FuncType{}
	tAlloc  = wasmbin.FuncType{Params: []byte{wasmbin.I32}, Results: []byte{wasmbin.I32}}
	tHandle = wasmbin.FuncType{Params: []byte{wasmbin.I32, wasmbin.I32}, Results: []byte{wasmbin.I64}}
)

const minimalRespAt = 4096

// minimalResponse is what minimalSDK answers.
var minimalResponse = wire.EncodeResponse(nil, &wire.Response{Status: 200, Header: map[string][]string{"Content-Type": {"text/plain"}}, Body: []byte("ok")})

// minimalSDK is the smallest SDK reactor: no imports, one page of memory,
// nimbus_alloc returns 1024 and nimbus_handle returns handleBody's value
// (by default a fixed, pre-encoded response).
func minimalSDK(handleBody []byte) []byte {
	if handleBody == nil {
		handleBody = wasmbin.I64Const(int64(minimalRespAt)<<32 | int64(len(minimalResponse)))
	}
	m := &wasmbin.Module{
		Types: []wasmbin.FuncType{tVoid, tAlloc, tHandle},
		Funcs: []wasmbin.Func{
			{Type: 0},
			{Type: 1, Body: wasmbin.I32Const(1024)},
			{Type: 2, Body: handleBody},
		},
		MemoryPages: 1,
		Exports: []wasmbin.Export{
			{Name: "memory", Kind: wasmbin.KindMemory},
			{Name: wire.ExportMarker, Kind: wasmbin.KindFunc, Index: 0},
			{Name: wire.ExportAlloc, Kind: wasmbin.KindFunc, Index: 1},
			{Name: wire.ExportHandle, Kind: wasmbin.KindFunc, Index: 2},
		},
		Data: []wasmbin.Data{{Offset: minimalRespAt, Bytes: minimalResponse}},
	}
	return m.Encode()
}

// minimalWAGI is the smallest WAGI command: _start does nothing, so its
// output is empty (malformed CGI), or loops forever.
func minimalWAGI(startBody []byte) []byte {
	m := &wasmbin.Module{
		Types:       []wasmbin.FuncType{tVoid},
		Funcs:       []wasmbin.Func{{Type: 0, Body: startBody}},
		MemoryPages: 1,
		Exports:     []wasmbin.Export{{Name: "memory", Kind: wasmbin.KindMemory}, {Name: "_start", Kind: wasmbin.KindFunc}},
	}
	return m.Encode()
}
