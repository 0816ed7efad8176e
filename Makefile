# make test: installs what the tests need (root, Debian) and runs every test.
# make run:  serves Parley on its embedded defaults.
# make bench: runs the benchmarks whose figures the README quotes.

GO ?= go

.PHONY: test run check deps bench

test: deps check
	# -p 1: packages one at a time, so the browser tests and the timing-sensitive
	# TURN interop test do not starve each other on a 2-core machine.
	$(GO) test -race -count=1 -p 1 -timeout 30m ./...

deps:
	./scripts/install-test-deps.sh

check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

run:
	$(GO) run ./cmd/parley

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./signaling/
