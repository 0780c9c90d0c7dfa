# `make test` is the one test command: go.mod/go.sum tidy, formatting, vet,
# staticcheck, and every test under the race detector. CI (.ci/run) runs
# exactly this. `make check` is the same.
GO ?= go

.PHONY: test check tidy fmt vet lint prewarm build bench

test: tidy fmt vet lint prewarm
	$(GO) test -race -count=1 -timeout 15m ./...

# prewarm builds the test suites' wasm guests and compiles them into the
# shared compilation cache outside the race detector (several times faster
# than under it); the test binaries then load them from the cache. Both
# caches are keyed by content, so a run that changed nothing does nothing.
#
# wazero keeps its cache in a directory named after its version, which it
# reads from the binary's build info; test binaries carry no module
# versions, so they use "dev". prewarm (and the nimbus binary the CLI tests
# build) set the same name, or the tests would compile every guest again
# under the race detector.
WAZERO_TEST_VERSION = -ldflags=-X=github.com/tetratelabs/wazero/internal/version.version=dev

prewarm:
	$(GO) run $(WAZERO_TEST_VERSION) ./internal/guesttest/prewarm

check: test

# tidy fails when `go mod tidy` would change go.mod or go.sum, so a stale
# requirement (or a direct one marked indirect) cannot land.
tidy:
	@$(GO) mod tidy -diff || { echo "go.mod/go.sum not tidy (or tidy failed): run 'go mod tidy'"; exit 1; }

fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# lint runs staticcheck at the version pinned as a tool in go.mod (go get
# -tool), so every machine runs the same checks. It checks the host build;
# the sdk's wasip1 files are not linted (staticcheck does not see that
# //go:wasmexport functions are used).
lint:
	$(GO) tool staticcheck ./...

build:
	$(GO) build -o bin/nimbus ./cmd/nimbus

bench:
	$(GO) run ./bench
