# `make check` is the one test command: formatting, vet, and every test under
# the race detector. CI (.ci/run) runs exactly this.
GO ?= go

.PHONY: check fmt vet test build bench

check: fmt vet test

fmt:
	@out="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

test:
	$(GO) test -race -count=1 -timeout 15m ./...

build:
	$(GO) build -o bin/nimbus ./cmd/nimbus

bench:
	$(GO) run ./bench
