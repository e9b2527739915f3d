# livefix developer entry points. `make test` is what CI runs.
GO ?= go
BIN := bin

.PHONY: all setup build lint test demo bench clean deb

all: build

setup:
	bash scripts/setup.sh

# Builds every main under ./cmd into bin/, statically.
build:
	@mkdir -p $(BIN)
	@if [ -n "$$($(GO) list ./cmd/... 2>/dev/null)" ]; then \
		echo "CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/..."; \
		CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/ ./cmd/...; \
	else \
		echo "build: no commands under ./cmd yet"; \
	fi

lint:
	@out=$$(find . -path ./.git -prune -o -name testdata -prune -o -name '*.go' -print | xargs -r gofmt -l); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# LIVEFIX_REQUIRE_VM=1 turns "no kernel/qemu" skips into failures, so CI
# can never pass by silently skipping the kernel tests. -count=1: the
# end-to-end tests build the programs in a subprocess, which Go's test
# cache cannot see, so a cached pass could hide a change.
test: setup lint
	LIVEFIX_REQUIRE_VM=1 $(GO) test -count=1 -timeout 35m ./...

demo: setup build
	bash scripts/demo.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

# Debian packages livefix, livefix-build and livefix-server into dist/
# (docs/packaging.md). The version comes from git describe unless
# VERSION=... is given.
deb:
	$(GO) run ./packaging/mkdeb -o dist $(if $(VERSION),-version '$(VERSION)')

clean:
	rm -rf $(BIN) dist
