package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"

	"github.com/nimbus-dev/nimbus/internal/model"
	"github.com/nimbus-dev/nimbus/sdk"
)

// Template names.
const (
	TemplateGo   = "go"   // a function written with the Nimbus Go SDK
	TemplateLean = "lean" // the same with the SDK's lean API (nimbus.HandleRequest)
	TemplateWAGI = "wagi" // a plain Go program speaking WAGI, no SDK
)

// Templates are the template names, the default first.
var Templates = []string{TemplateGo, TemplateLean, TemplateWAGI}

// What a project is made of.
const (
	// SDKModule is the module path of the Go SDK, as projects require it.
	SDKModule = "github.com/nimbus-dev/nimbus/sdk/go"
	// SDKDir is the directory of a go project that holds the copy of the
	// SDK its go.mod replaces SDKModule with.
	SDKDir = "nimbus-sdk"
	// GoVersion is the go directive of the projects' go.mod files: the
	// SDK's reactor needs go:wasmexport (Go 1.24).
	GoVersion = "1.24"
	// Function is the name of the project's one function.
	Function = "hello"
)

// Errors of Create.
var (
	// ErrNotEmpty means the target directory exists and holds files.
	ErrNotEmpty = errors.New("directory is not empty")
	// ErrInvalid means an option is not valid (unknown template, bad app
	// name or module path).
	ErrInvalid = errors.New("invalid option")
)

//go:embed templates
var templates embed.FS

// Options say what to create. The zero value of each field is its default.
type Options struct {
	// Template is TemplateGo, TemplateLean or TemplateWAGI. Optional: default TemplateGo.
	Template string
	// App is the app's name, a DNS label. Optional: default the base name
	// of the directory.
	App string
	// Module is the go.mod module path. Optional: default App.
	Module string
	// SDKVersion is the version the go template requires SDKModule at,
	// normally the nimbus binary's (v-prefixed or not). Optional: a
	// version that is not semantic (a development build) becomes v0.0.0.
	SDKVersion string
}

// Result is what Create wrote.
type Result struct {
	Dir      string `json:"dir"`
	App      string `json:"app"`
	Template string `json:"template"`
	// Function is the name of the app's function.
	Function string `json:"function"`
	// Files are the paths written, relative to Dir, slash-separated, sorted.
	Files []string `json:"files"`
	// SDKVersion is the version the go.mod requires the SDK at ("" for a
	// template without the SDK).
	SDKVersion string `json:"sdk_version,omitempty"`
}

// vars are what the templates see.
type vars struct {
	App, Function, Module, GoVersion, SDKModule, SDKVersion, SDKDir string
}

// Create writes a new project into dir, which must not exist or be empty.
func Create(dir string, opts Options) (_ *Result, err error) {
	if opts.Template == "" {
		opts.Template = TemplateGo
	}
	if !slices.Contains(Templates, opts.Template) {
		return nil, fmt.Errorf("%w: template %q: use one of %s", ErrInvalid, opts.Template, strings.Join(Templates, ", "))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("new project %s: %w", dir, err)
	}
	if opts.App == "" {
		opts.App = filepath.Base(abs)
		if !model.ValidName(opts.App) {
			return nil, fmt.Errorf("%w: the directory name %q is not a valid app name (%s): pass one with --app", ErrInvalid, opts.App, model.NameRule)
		}
	}
	if !model.ValidName(opts.App) {
		return nil, fmt.Errorf("%w: app name %q: %s", ErrInvalid, opts.App, model.NameRule)
	}
	if opts.Module == "" {
		opts.Module = opts.App
	}
	if !validModulePath(opts.Module) {
		return nil, fmt.Errorf("%w: module path %q: use letters, digits and . _ ~ - separated by /, such as example.com/%s", ErrInvalid, opts.Module, opts.App)
	}
	v := vars{App: opts.App, Function: Function, Module: opts.Module, GoVersion: GoVersion,
		SDKModule: SDKModule, SDKVersion: sdkVersion(opts.SDKVersion), SDKDir: SDKDir}

	files, err := render(opts.Template, v)
	if err != nil {
		return nil, err
	}
	if opts.Template != TemplateWAGI {
		if err := addSDK(files, v); err != nil {
			return nil, err
		}
	}

	created, err := prepare(abs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			cleanup(abs, created, files)
		}
	}()
	res := &Result{Dir: abs, App: v.App, Template: opts.Template, Function: v.Function}
	if opts.Template != TemplateWAGI {
		res.SDKVersion = v.SDKVersion
	}
	for name := range files {
		res.Files = append(res.Files, name)
	}
	slices.Sort(res.Files)
	for _, name := range res.Files {
		p := filepath.Join(abs, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("new project: %w", err)
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return nil, fmt.Errorf("new project: %w", err)
		}
	}
	return res, nil
}

// render executes the template's files: name.tmpl becomes name, and
// gitignore becomes .gitignore (a dotfile would not be embedded).
func render(tmpl string, v vars) (map[string][]byte, error) {
	root := "templates/" + tmpl
	entries, err := templates.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("template %s: %w", tmpl, err)
	}
	files := map[string][]byte{}
	for _, e := range entries {
		src, err := templates.ReadFile(root + "/" + e.Name())
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", tmpl, err)
		}
		t, err := template.New(e.Name()).Option("missingkey=error").Parse(string(src))
		if err != nil {
			return nil, fmt.Errorf("template %s: %w", tmpl, err)
		}
		var out bytes.Buffer
		if err := t.Execute(&out, v); err != nil {
			return nil, fmt.Errorf("template %s: %w", tmpl, err)
		}
		name := strings.TrimSuffix(e.Name(), ".tmpl")
		if name == "gitignore" {
			name = ".gitignore"
		}
		files[name] = out.Bytes()
	}
	return files, nil
}

// addSDK adds the SDK's copy under SDKDir: its go.mod and every source
// file but the tests.
func addSDK(files map[string][]byte, v vars) error {
	files[SDKDir+"/go.mod"] = fmt.Appendf(nil, "// The Nimbus Go SDK %s, written by `nimbus new`; see ../go.mod.\nmodule %s\n\ngo %s\n",
		v.SDKVersion, SDKModule, GoVersion)
	return fs.WalkDir(sdk.Go, "go", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := sdk.Go.ReadFile(p)
		if err != nil {
			return err
		}
		files[path.Join(SDKDir, strings.TrimPrefix(p, "go/"))] = b
		return nil
	})
}

// prepare makes sure dir exists and is empty; created says it made it.
func prepare(dir string) (created bool, err error) {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return false, fmt.Errorf("new project: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("new project: %w", err)
	case len(entries) > 0:
		return false, fmt.Errorf("new project %s: %w (it has %s): nimbus new starts a project in a new or empty directory", dir, ErrNotEmpty, entries[0].Name())
	}
	return false, nil
}

// cleanup removes what a failed Create wrote.
func cleanup(dir string, created bool, files map[string][]byte) {
	if created {
		os.RemoveAll(dir)
		return
	}
	for name := range files {
		first, _, _ := strings.Cut(name, "/")
		os.RemoveAll(filepath.Join(dir, first))
	}
}

// semver is a semantic version, with or without the v.
var semver = regexp.MustCompile(`^v?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`)

// sdkVersion is the module version to require the SDK at.
func sdkVersion(v string) string {
	if !semver.MatchString(v) {
		return "v0.0.0"
	}
	return "v" + strings.TrimPrefix(v, "v")
}

// modulePath is what validModulePath accepts: the characters the go
// command allows in an import path, elements separated by single slashes.
var modulePath = regexp.MustCompile(`^[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*$`)

func validModulePath(p string) bool { return modulePath.MatchString(p) && !strings.Contains(p, "..") }
