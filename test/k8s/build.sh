#!/usr/bin/env bash
# Builds (with caching) everything the Kubernetes e2e needs that is not the
# driver itself:
#   - Debian packages: containerd, runc, etcd, CNI plugins, iptables, busybox-static
#   - Kubernetes $K8S_VERSION server binaries + kubectl, compiled from the Go
#     module proxy through a wrapper module that lives in the cache dir (never
#     in this repository's go.mod)
#   - helm $HELM_VERSION (helm.sh/helm/v3/cmd/helm), fake-gcs-server (at the
#     version this repository's go.mod pins)
#   - a pause image and a single-layer busybox image, built offline
# Everything lands in $CACHE (default /var/cache/gcsfuse-csi); a binary that
# is already there is reused (FORCE_BUILD=1 rebuilds).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

need_root

# ---------------------------------------------------------------- packages
pkgs=(containerd runc etcd-server etcd-client containernetworking-plugins iptables nftables busybox-static curl jq openssl iproute2 procps)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts the packaged daemons: the harness runs its own, with its own
  # config, so stop and disable the distribution's units.
  for u in containerd etcd; do
    if command -v systemctl >/dev/null && systemctl is-active -q "$u" 2>/dev/null; then
      systemctl stop "$u" || true; systemctl disable -q "$u" 2>/dev/null || true
    fi
  done
fi

mkdir -p "$K8S_BIN" "$TOOLS_BIN" "$IMAGES_DIR"

# ------------------------------------------------------------- kubernetes
k8s_cmds=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
k8s_missing=()
for c in "${k8s_cmds[@]}"; do
  [ -z "${FORCE_BUILD:-}" ] && [ -x "$K8S_BIN/$c" ] || k8s_missing+=("$c")
done
if [ ${#k8s_missing[@]} -gt 0 ]; then
  src=$K8S_CACHE/src
  mkdir -p "$src"
  if [ ! -s "$src/go.sum" ] || [ -n "${FORCE_BUILD:-}" ]; then
    log "k8s: writing wrapper module in $src"
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces
    # them with ./staging/src/...; a module that requires it must replace
    # every one of them with the published v0.X.Y release instead.
    gomod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | jq -r .GoMod)
    staging=v0.${K8S_VERSION#v1.}
    gover=$(awk '$1=="go"{print $2; exit}' "$gomod")
    {
      printf 'module gcsfuse-csi.local/k8sbuild\n\ngo %s\n\n' "$gover"
      grep -E '^godebug' "$gomod" || true
      printf '\nrequire k8s.io/kubernetes %s\n\nreplace (\n' "$K8S_VERSION"
      awk -v v="$staging" '$2=="=>" && $3 ~ /^\.\/staging\/src\// {print "\t" $1 " => " $1 " " v}' "$gomod"
      printf ')\n'
    } > "$src/go.mod"
    {
      printf '//go:build tools\n\npackage k8sbuild\n\nimport (\n'
      for c in "${k8s_cmds[@]}"; do printf '\t_ "k8s.io/kubernetes/cmd/%s"\n' "$c"; done
      printf ')\n'
    } > "$src/tools.go"
    log "k8s: resolving dependencies (go mod tidy in the wrapper module)"
    (cd "$src" && go mod tidy -e >"$src/tidy.log" 2>&1) || { tail -20 "$src/tidy.log"; die "go mod tidy failed in $src"; }
  fi
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=2026-01-01T00:00:00Z"
  done
  for c in "${k8s_missing[@]}"; do
    log "k8s: building $c"
    t0=$(date +%s)
    (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ldf" -o "$K8S_BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c")
    mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
    log "k8s: $c built in $(( $(date +%s) - t0 ))s"
  done
fi

# ------------------------------------------------------------------- helm
if [ -n "${FORCE_BUILD:-}" ] || [ ! -x "$HELM" ]; then
  log "helm: building $HELM_VERSION"
  # `go install pkg@version` builds helm from its own go.mod (not this repo's).
  CGO_ENABLED=0 GOBIN="$(dirname "$HELM")" go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi

# -------------------------------------------------------- fake-gcs-server
# At the version this repository pins (go.mod `tool` directive).
fgv=$(awk '$1=="github.com/fsouza/fake-gcs-server" && $2 ~ /^v/ {print $2; exit}' "$repo/go.mod")
[ -n "$fgv" ] || die "no github.com/fsouza/fake-gcs-server version in $repo/go.mod"
FAKE_GCS=$TOOLS_BIN/fake-gcs-server-$fgv
if [ -n "${FORCE_BUILD:-}" ] || [ ! -x "$FAKE_GCS" ]; then
  log "fake-gcs-server: building $fgv"
  (cd "$repo" && go build -o "$FAKE_GCS" github.com/fsouza/fake-gcs-server)
fi
ln -sf "$(basename "$FAKE_GCS")" "$TOOLS_BIN/fake-gcs-server"

# ------------------------------------------------------------------ images
# imgtool (part of this repository, over internal/ociimage like hack/imgbuild)
# writes OCI layout image tarballs.
(cd "$repo" && CGO_ENABLED=0 go build -o "$TOOLS_BIN/imgtool" ./test/k8s/imgtool)
# gcpfront: fakegcp's token-checking GCS front and STS, for Workload Identity
(cd "$repo" && CGO_ENABLED=0 go build -o "$TOOLS_BIN/gcpfront" ./test/k8s/gcpfront)
# Rebuilt when imgtool, the pause source or Debian's busybox change.
stamp=$(cat "$TOOLS_BIN/imgtool" "$repo/test/k8s/imgtool/pause/main.go" /bin/busybox | sha256sum | cut -d' ' -f1)
if [ -n "${FORCE_BUILD:-}" ] || [ ! -s "$IMAGES_DIR/pause.tar" ] || [ ! -s "$IMAGES_DIR/busybox.tar" ] \
   || [ "$(cat "$IMAGES_DIR/stamp" 2>/dev/null)" != "$stamp" ]; then
  log "images: pause + busybox"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  mkdir -p "$tmp/pause"
  (cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/pause/pause" ./test/k8s/imgtool/pause)
  "$TOOLS_BIN/imgtool" -rootfs "$tmp/pause" -ref "$PAUSE_IMAGE" -entrypoint /pause -o "$IMAGES_DIR/pause.tar"
  bb=$tmp/busybox
  mkdir -p "$bb/bin" "$bb/etc" "$bb/tmp" "$bb/proc" "$bb/sys" "$bb/dev" "$bb/www"
  chmod 1777 "$bb/tmp"
  cp /bin/busybox "$bb/bin/busybox"
  for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -s busybox "$bb/bin/$a"; done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$bb/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' > "$bb/etc/group"
  "$TOOLS_BIN/imgtool" -rootfs "$bb" -ref "$BUSYBOX_IMAGE" -cmd /bin/sh -o "$IMAGES_DIR/busybox.tar"
  echo "$stamp" > "$IMAGES_DIR/stamp"
fi
log "build: done ($(ls "$K8S_BIN" | tr '\n' ' '); helm $("$HELM" version --short 2>/dev/null))"
