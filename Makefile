# make test: installs what the tests need (root, Debian) and runs every test.
# make run:  serves Parley on its embedded defaults.
# make bench: runs the benchmarks whose figures the README quotes.

GO ?= go

.PHONY: test run check deps bench

test: deps check
	$(GO) test -race -count=1 -timeout 20m ./...

deps:
	./scripts/install-test-deps.sh

check:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(GO) vet ./...

run:
	$(GO) run ./cmd/parley

bench:
	$(GO) test -run '^$$' -bench . -benchtime 3s ./signaling/
