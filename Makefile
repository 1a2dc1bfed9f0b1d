# tcptrail: `make demo` runs the story under the tracer, `make test` runs
# every test (as root, the privileged ones load the real BPF programs).

GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: all build demo test test-short generate check-generated bench bench-systax bench-report soak fmt vet clean release

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/tcptrail ./cmd/tcptrail
	$(GO) build -o $(BIN)/demo-server ./demo/server
	$(GO) build -o $(BIN)/demo-client ./demo/client

# Static binaries for every architecture tcptrail supports:
# bin/linux-amd64/, bin/linux-arm64/.
ARCHES := amd64 arm64
build-all: $(ARCHES:%=build-linux-%)

build-linux-%:
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/linux-$*/tcptrail ./cmd/tcptrail
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -o $(BIN)/linux-$*/demo-server ./demo/server
	CGO_ENABLED=0 GOOS=linux GOARCH=$* $(GO) build -trimpath -o $(BIN)/linux-$*/demo-client ./demo/client

# Release binaries: dist/tcptrail-$(VERSION)-linux-{amd64,arm64}, static,
# and their SHA256SUMS (check with: cd dist && sha256sum -c SHA256SUMS).
release: build-all
	rm -rf dist && mkdir -p dist
	for a in $(ARCHES); do cp $(BIN)/linux-$$a/tcptrail dist/tcptrail-$(VERSION)-linux-$$a || exit 1; done
	cd dist && sha256sum tcptrail-$(VERSION)-linux-* > SHA256SUMS

# The story from the README, traced live.
demo: build
	$(SUDO) BIN=$(BIN) OUT=out ./demo/run.sh

# Every test. The privileged tests need root; under CI=true they fail
# rather than skip when they cannot load the programs.
test: build vet
	@test -z "$$(gofmt -l .)" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	$(SUDO) env "PATH=$$PATH" CI=$(CI) $(GO) test -race -count=1 -timeout 20m ./...

# The kernel matrix: Debian's kernels (5.10, 6.1, 6.12 on amd64, 6.1 on
# arm64) booted under qemu, the demo and the privileged tests inside each
# (vm/main.go). No root needed. KERNELS picks some: KERNELS="6.1 arm64-6.1".
KERNELS ?=
test-kernels:
	$(GO) run ./vm $(KERNELS)

# Pure tests only: no privileges needed.
test-short:
	$(GO) test -race -short ./...

vet:
	$(GO) vet ./...

fmt:
	gofmt -w .

# Rebuild the BPF objects (needs clang and libbpf headers).
generate:
	$(GO) generate ./tracer/kernel

# Fail if the committed BPF objects are not what the sources build.
check-generated: generate
	git diff --exit-code -- tracer/kernel

# Go benchmarks of the user-space path, the loopback churn benchmark
# (untraced, a minimal tracer, the live table, -q -o and --json in rotating
# cycles, then a moderate load; root, about five minutes), then the
# syscall tax.
bench: build
	$(GO) test -run '^$$' -bench 'Decode|Transition|Pipeline|Session' -benchmem ./tracer/ ./tracer/event ./tracer/timeline ./tracer/capture
	$(GO) build -o $(BIN)/churn ./bench/churn
	$(GO) build -o $(BIN)/floor ./bench/floor
	$(SUDO) $(BIN)/churn -tracer $(BIN)/tcptrail -floor $(BIN)/floor
	$(MAKE) --no-print-directory bench-systax

# Ten minutes of churn and CLOSE_WAIT leaks under the tracer, its RSS,
# threads, fds and goroutines sampled (root; not part of make test).
# SOAK_ARGS="-duration 2m" shortens it; -tracer-args picks the command.
SOAK_ARGS ?=
soak: build
	$(GO) build -o $(BIN)/soak ./bench/soak
	$(SUDO) $(BIN)/soak -tracer $(BIN)/tcptrail $(SOAK_ARGS)

# What an idle tracer adds to every syscall of unrelated processes:
# untraced and traced rounds alternating, beside the floor (empty programs
# on the raw_syscalls tracepoints) that tracepoint hooks cannot go below
# (root; about half a minute).
bench-systax: build
	$(GO) build -o $(BIN)/systax ./bench/systax
	$(SUDO) $(BIN)/systax -floor tp_btf,syscall-tp -tracer $(BIN)/tcptrail -hooks auto,tracepoint -rounds 7

# Reading and rendering a one-million-event capture.
bench-report:
	$(GO) test -run '^$$' -bench 1M -benchtime 3x -benchmem ./tracer/report/

clean:
	rm -rf $(BIN) out dist
