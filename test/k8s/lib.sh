# Common settings for the Kubernetes e2e scripts (sourced, not run).
# shellcheck shell=bash

export GOTOOLCHAIN=go1.27.2

K8S_VERSION=${K8S_VERSION:-v1.35.4}
HELM_VERSION=${HELM_VERSION:-v3.22.0}

# Build cache: survives runs, shared by every checkout on the machine.
CACHE=${GCSFUSE_CSI_CACHE:-/var/cache/gcsfuse-csi}
K8S_CACHE=$CACHE/k8s-$K8S_VERSION
K8S_BIN=$K8S_CACHE/bin
HELM=$CACHE/helm-$HELM_VERSION/bin/helm
TOOLS_BIN=$CACHE/tools
IMAGES_DIR=$CACHE/images

# Scratch dir: all cluster state of one run (etcd data, pki, kubelet root,
# containerd root/state, logs, pids). Removed by `cluster.sh down`.
SCRATCH=${E2E_K8S_DIR:-/tmp/gcsfuse-csi-e2e-k8s}
PKI=$SCRATCH/pki
PIDS=$SCRATCH/pids
LOGS=$SCRATCH/logs
KUBELET_DIR=$SCRATCH/kubelet
CTRD_DIR=$SCRATCH/containerd
CTRD_SOCK=$CTRD_DIR/containerd.sock
KUBECONFIG_ADMIN=$PKI/admin.kubeconfig
CNI_BRIDGE=gcsfcsi0
CNI_SUBNET=10.244.77.0/24

# Ports: away from the defaults so a cluster left by someone else on the
# standard ports does not answer in place of ours.
ETCD_PORT=12379
ETCD_PEER_PORT=12380
APISERVER_PORT=16443
KUBELET_PORT=11250
KUBELET_HEALTHZ_PORT=11248
KCM_PORT=11257
SCHED_PORT=11259
FAKE_GCS_PORT=14443
# gcpfront (test/k8s/gcpfront): the auth-checking GCS front, STS, admin API
GCP_FRONT_PORT=14444
GCP_AUTH_PORT=14445
GCP_ADMIN_PORT=14446
# the tokenRequests audience of the Workload Identity tests
WI_AUDIENCE=gcsfuse-csi-e2e

PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
BUSYBOX_IMAGE=e2e.local/busybox:1.35

NODE_NAME=$(hostname | tr '[:upper:]' '[:lower:]')
NODE_IP=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for(i=1;i<=NF;i++) if($i=="src") {print $(i+1); exit}}')

log() { printf '[k8s-e2e %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FATAL: $*"; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (mounts, containerd, kubelet)"; }

kc() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
ctr_k8s() { ctr -a "$CTRD_SOCK" -n k8s.io "$@"; }

# start NAME CMD...: run CMD in the background, log to $LOGS/NAME.log, record
# its PID in $PIDS/NAME.pid (the only way teardown finds it).
start() {
  local n=$1; shift
  mkdir -p "$LOGS" "$PIDS"
  setsid "$@" >"$LOGS/$n.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$n.pid"
  log "started $n (pid $!)"
}

# stop NAME...: SIGTERM each recorded PID, wait for all of them, SIGKILL
# whatever is still alive after 10s.
stop() {
  local n p pids=() names=()
  for n in "$@"; do
    [ -f "$PIDS/$n.pid" ] || continue
    p=$(cat "$PIDS/$n.pid")
    if kill -0 "$p" 2>/dev/null; then kill "$p" 2>/dev/null || true; fi
    pids+=("$p"); names+=("$n")
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  local i alive
  for _ in $(seq 1 40); do
    alive=
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ -z "$alive" ] && break
    sleep 0.25
  done
  for i in "${!pids[@]}"; do
    p=${pids[$i]}; n=${names[$i]}
    if kill -0 "$p" 2>/dev/null; then log "stop $n: SIGKILL $p"; kill -9 "$p" 2>/dev/null || true; fi
    rm -f "$PIDS/$n.pid"
    log "stopped $n (pid $p)"
  done
}

# waitfor WHAT TRIES CMD...: retry CMD once a second.
waitfor() {
  local what=$1 tries=$2 i; shift 2
  for i in $(seq 1 "$tries"); do
    if "$@" >/dev/null 2>&1; then log "$what: ready after ${i}s"; return 0; fi
    sleep 1
  done
  log "$what: NOT ready after ${tries}s"
  return 1
}

# Buckets the tests create are named $BUCKET_PREFIX<test>-<run id>.
BUCKET_PREFIX=k8s-e2e-

# running NAME: the process `start NAME` recorded is alive.
running() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
