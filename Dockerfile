# syntax=docker/dockerfile:1
#
# The node driver image: gcsfuse-csi and gcsfuse (static Go binaries) with
# tini as PID 1, on an empty base. With a Docker engine (BuildKit):
#
#   VERSION=$(git describe --tags --always --dirty)
#   docker build \
#     --build-arg VERSION=$VERSION --build-arg COMMIT=$(git rev-parse HEAD) \
#     -t ghcr.io/gcsfuse-csi/gcsfuse-csi:$VERSION \
#     -t ghcr.io/gcsfuse-csi/gcsfuse-csi:sha-$(git rev-parse --short HEAD) .
#
# Without one, `make images` builds the same layout into
# bin/images/gcsfuse-csi.tar (hack/imgbuild). test/images checks that the
# final stage below and that tarball hold the same paths, entrypoint, labels.

ARG GO_VERSION=1.27.2
# The Debian release of both the builder and the package stage; `make images`
# takes tini and the CA bundle from the (Debian 12) host.
ARG DEBIAN_RELEASE=bookworm

# ---- build: both binaries, static, cross-compiled for the target platform.
# $BUILDPLATFORM: the compiler runs natively even for a foreign target; with
# CGO_ENABLED=0 Go needs no target toolchain.
FROM --platform=$BUILDPLATFORM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
# GOTOOLCHAIN=local: use this image's Go, never download another one.
# CGO_ENABLED=0: no libc in the final image, so nothing may link against it.
# -trimpath: no build machine paths in the binaries (reproducible builds).
ENV GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-trimpath
WORKDIR /src
# Modules first: this layer is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
ARG TARGETOS
ARG TARGETARCH
# gcsfuse, at the version go.mod pins, depends on go.mod and go.sum only: it
# is built before the source is copied, so a driver change reuses this layer.
# The -X sets the version `gcsfuse --version` prints, as the Makefile does.
# -s -w: no symbol table or DWARF (smaller; panics still have stack traces).
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    v=$(go list -m -f '{{.Version}}' github.com/googlecloudplatform/gcsfuse/v3) && \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build \
      -ldflags "-s -w -X github.com/googlecloudplatform/gcsfuse/v3/common.gcsfuseVersion=${v#v}" \
      -o /out/gcsfuse github.com/googlecloudplatform/gcsfuse/v3
COPY cmd/ cmd/
COPY pkg/ pkg/
# Declared here, not above: a new version must not invalidate the gcsfuse layer.
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build \
      -ldflags "-s -w -X github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver.Version=${VERSION}" \
      -o /out/gcsfuse-csi ./cmd/gcsfuse-csi && \
    # Fail here, not at run time, if anything linked against libc.
    for b in /out/gcsfuse /out/gcsfuse-csi; do \
      go version -m "$b" | grep -q 'CGO_ENABLED=0' || { echo "$b is not static" >&2; exit 1; }; \
    done

# ---- rootfs: the files that are not ours, from Debian packages, with the
# modes the final image needs (COPY keeps them).
FROM debian:${DEBIAN_RELEASE}-slim AS rootfs
# tini-static: tini needs no libc. ca-certificates: gcsfuse and the driver
# talk HTTPS to storage.googleapis.com.
RUN apt-get update && \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends tini ca-certificates && \
    rm -rf /var/lib/apt/lists/*
COPY build/rootfs/etc/ /out/etc/
RUN chmod 0644 /out/etc/passwd /out/etc/group /out/etc/nsswitch.conf && \
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/ca-certificates.crt && \
    install -D -m 0755 /usr/bin/tini-static /out/sbin/tini && \
    # 1777 like any /tmp: the unprivileged mounter mode runs as 65532 with a
    # read-only root filesystem and writes nowhere else.
    install -d -m 1777 /out/tmp

# ---- the image: scratch, so every path in it is listed here (one COPY each;
# test/images compares this list with the `make images` tarball).
FROM scratch
# passwd/group: root, and nonroot (65532) for the unprivileged mounter mode.
COPY --from=rootfs /out/etc/passwd /etc/passwd
COPY --from=rootfs /out/etc/group /etc/group
# Host lookups for Go's resolver: /etc/hosts, then DNS.
COPY --from=rootfs /out/etc/nsswitch.conf /etc/nsswitch.conf
COPY --from=rootfs /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# /tmp, mode 1777. Not `COPY /out/tmp /tmp`: BuildKit creates a COPY's
# destination directory 0755 and copies only what is inside
# (moby/buildkit#3602). With --parents, tmp is an entry of the copy and keeps
# its mode; the ./ marks where the copied path starts.
COPY --from=rootfs --parents /out/./tmp /
COPY --from=rootfs /out/sbin/tini /sbin/tini
COPY --from=build /out/gcsfuse /usr/local/bin/gcsfuse
COPY --from=build /out/gcsfuse-csi /usr/local/bin/gcsfuse-csi
# The driver finds gcsfuse in PATH (--gcsfuse=gcsfuse).
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# No USER: the node driver runs as root (mount(2), privileged pod); the
# unprivileged mounter mode sets runAsUser: 65532 in its pod spec.
# tini is PID 1: it forwards SIGTERM to the driver (a process that is PID 1
# gets no default signal handling from the kernel) and reaps processes
# re-parented to it, such as a gcsfuse whose driver exited first.
ENTRYPOINT ["/sbin/tini", "--", "/usr/local/bin/gcsfuse-csi"]
CMD ["node"]
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="gcsfuse-csi" \
      org.opencontainers.image.source="https://github.com/gcsfuse-csi/gcsfuse-csi" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
