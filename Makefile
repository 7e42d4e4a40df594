# gcsfuse-csi. The Go toolchain is the one go.mod asks for (gcsfuse v3.13.0
# needs go1.27.2); the module proxy serves it.
export GOTOOLCHAIN := go1.27.2
GO      ?= go
BIN     := bin
MODULE  := github.com/gcsfuse-csi/gcsfuse-csi
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GCSFUSE_VERSION := $(shell awk '$$1=="github.com/googlecloudplatform/gcsfuse/v3"{print $$2}' go.mod)
LDFLAGS := -X $(MODULE)/pkg/driver.Version=$(VERSION)

.PHONY: all build deps test unit sanity e2e e2e-k8s bench demo lint clean

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
test: deps image-deps build
	$(GO) vet ./...
	$(GO) test -race -count=1 ./pkg/... ./internal/...
	$(GO) test -count=1 -timeout 20m ./test/...

unit:
	$(GO) test -race -count=1 ./pkg/... ./internal/...

sanity: deps build
	$(GO) test -count=1 -v ./test/sanity/...

e2e: deps build
	$(GO) test -count=1 -v ./test/e2e/...

## e2e-k8s: single-node Kubernetes v1.35.4 (built from the module proxy, cached in
## $GCSFUSE_CSI_CACHE, default /var/cache/gcsfuse-csi), driver deployed from `make images`
## and the Helm chart, restricted pods using buckets on fake GCS, full teardown (root)
e2e-k8s:
	test/k8s/run.sh

## bench: latency, read throughput per profile and small-file listing, against
## baselines measured in the same run; rewrites docs/benchmarks.md and its charts
bench: deps build
	$(GO) run ./test/bench -doc docs/benchmarks.md

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

## images: the node driver image as a tarball (bin/images/gcsfuse-csi.tar) built
## without a Docker engine or registry by hack/imgbuild, with the Dockerfile's
## layout; load it with `ctr -n k8s.io images import` or `docker load -i`
IMAGE_REPO   ?= ghcr.io/gcsfuse-csi/gcsfuse-csi
IMAGE_TAR    ?= $(BIN)/images/gcsfuse-csi.tar
IMAGE_BIN    := $(BIN)/linux-amd64
IMAGE_COMMIT := $(shell git rev-parse HEAD 2>/dev/null)
IMAGE_SHORT  := $(shell git rev-parse --short HEAD 2>/dev/null)
# The image has no libc: static binaries (CGO_ENABLED=0), without build paths,
# symbol table or DWARF. Separate from the dev binaries in bin/.
IMAGE_GOENV  := CGO_ENABLED=0 GOOS=linux GOARCH=amd64

.PHONY: images image-deps
images: image-deps $(IMAGE_BIN)/gcsfuse-csi $(IMAGE_BIN)/gcsfuse
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) $(GO) run ./hack/imgbuild \
	  -driver $(IMAGE_BIN)/gcsfuse-csi -gcsfuse $(IMAGE_BIN)/gcsfuse -repo $(IMAGE_REPO) \
	  -version $(VERSION) -commit $(IMAGE_COMMIT) -short-commit $(IMAGE_SHORT) -o $(IMAGE_TAR)

# tini-static (PID 1 of the image) and the CA bundle come from Debian packages.
image-deps:
	@[ -x /usr/bin/tini-static ] && [ -s /etc/ssl/certs/ca-certificates.crt ] || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tini ca-certificates >/dev/null; \
	  else echo "tini or ca-certificates is missing: sudo apt-get install tini ca-certificates" >&2; exit 1; fi; }

$(IMAGE_BIN)/gcsfuse-csi: FORCE
	$(IMAGE_GOENV) $(GO) build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $@ ./cmd/gcsfuse-csi

$(IMAGE_BIN)/gcsfuse: go.mod go.sum
	$(IMAGE_GOENV) $(GO) build -trimpath -ldflags "-s -w -X github.com/googlecloudplatform/gcsfuse/v3/common.gcsfuseVersion=$(GCSFUSE_VERSION:v%=%)" -o $@ github.com/googlecloudplatform/gcsfuse/v3

## chart-test: render the Helm chart and check it, its schema, examples and README
.PHONY: chart-test
chart-test:
	$(GO) test -count=1 ./test/chart/...

## fuzz: each fuzz target for FUZZTIME (default 30s), one after the other;
## `make unit` and `make test` run only their seed corpora (testdata/fuzz).
## -fuzz takes one package at a time, hence a line per target.
FUZZTIME ?= 30s
.PHONY: fuzz
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParseStage$$' -fuzztime $(FUZZTIME) ./pkg/driver
	$(GO) test -run '^$$' -fuzz '^FuzzParsePublish$$' -fuzztime $(FUZZTIME) ./pkg/driver
	$(GO) test -run '^$$' -fuzz '^FuzzCleanPath$$' -fuzztime $(FUZZTIME) ./pkg/driver
	$(GO) test -run '^$$' -fuzz '^FuzzVolumeCondition$$' -fuzztime $(FUZZTIME) ./pkg/driver
	$(GO) test -run '^$$' -fuzz '^FuzzResolveCredentials$$' -fuzztime $(FUZZTIME) ./pkg/driver
	$(GO) test -run '^$$' -fuzz '^FuzzVolumeSetters$$' -fuzztime $(FUZZTIME) ./pkg/mounter
	$(GO) test -run '^$$' -fuzz '^FuzzHostRequest$$' -fuzztime $(FUZZTIME) ./pkg/mounter
	$(GO) test -run '^$$' -fuzz '^FuzzParseParameters$$' -fuzztime $(FUZZTIME) ./pkg/controller
	$(GO) test -run '^$$' -fuzz '^FuzzNames$$' -fuzztime $(FUZZTIME) ./pkg/controller
