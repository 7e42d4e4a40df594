# gcsfuse-csi. The Go toolchain is the one go.mod asks for (gcsfuse v3.13.0
# needs go1.27.2); the module proxy serves it.
export GOTOOLCHAIN := go1.27.2
GO      ?= go
BIN     := bin
MODULE  := github.com/gcsfuse-csi/gcsfuse-csi
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GCSFUSE_VERSION := $(shell awk '$$1=="github.com/googlecloudplatform/gcsfuse/v3"{print $$2}' go.mod)
LDFLAGS := -X $(MODULE)/pkg/driver.Version=$(VERSION)

.PHONY: all build deps test unit sanity e2e bench demo lint clean

all: build

## build: the driver and gcsfuse (at the version go.mod pins) into bin/
build: $(BIN)/gcsfuse-csi $(BIN)/gcsfuse

$(BIN)/gcsfuse-csi: FORCE
	$(GO) build -ldflags "$(LDFLAGS)" -o $@ ./cmd/gcsfuse-csi

$(BIN)/gcsfuse: go.mod go.sum
	$(GO) build -ldflags "-X github.com/googlecloudplatform/gcsfuse/v3/common.gcsfuseVersion=$(GCSFUSE_VERSION:v%=%)" -o $@ github.com/googlecloudplatform/gcsfuse/v3

## deps: OS packages the driver needs (fusermount3 from Debian's fuse3)
deps:
	@command -v fusermount3 >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null; \
	  else echo "fuse3 is missing: sudo apt-get install fuse3" >&2; exit 1; fi; }

## test: unit tests (race detector), csi-sanity, and end-to-end tests on real mounts
test: deps build
	$(GO) vet ./...
	$(GO) test -race -count=1 ./pkg/...
	$(GO) test -count=1 -timeout 20m ./test/...

unit:
	$(GO) test -race -count=1 ./pkg/...

sanity: deps build
	$(GO) test -count=1 -v ./test/sanity/...

e2e: deps build
	$(GO) test -count=1 -v ./test/e2e/...

## bench: latency and throughput, against baselines measured in the same run
bench: deps build
	$(GO) run ./test/bench

## demo: a bucket on a local fake GCS, mounted through the driver (Ctrl-C cleans up)
demo: deps build
	$(GO) run ./test/demo

## lint: gofmt, go vet, staticcheck (pinned in go.mod)
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

clean:
	rm -rf $(BIN)

FORCE:
