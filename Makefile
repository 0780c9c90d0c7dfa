# `make test` is the one test command: formatting, vet, and every test under
# the race detector. CI (.ci/run) runs exactly this. `make check` is the same.
GO ?= go

.PHONY: test check fmt vet build bench

test: fmt vet
	$(GO) test -race -count=1 -timeout 15m ./...

check: test

fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

build:
	$(GO) build -o bin/nimbus ./cmd/nimbus

bench:
	$(GO) run ./bench
