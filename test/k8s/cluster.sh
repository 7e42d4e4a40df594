#!/usr/bin/env bash
# A single-node Kubernetes cluster on this machine, all of its state under
# $SCRATCH (E2E_K8S_DIR, default /tmp/gcsfuse-csi-e2e-k8s):
#
#   cluster.sh up     containerd, etcd, kube-apiserver, kube-controller-manager,
#                     kube-scheduler, kubelet (binaries from build.sh)
#   cluster.sh down   stop everything `up` started (by recorded PID), then undo
#                     every host change: mounts, /run/netns, cgroups, the CNI
#                     bridge, iptables chains, sysctls, files outside $SCRATCH
#   cluster.sh check  report anything the cluster left on the host (exit 1 if so)
#
# Host state that the cluster changes is snapshotted at `up` in $HOSTSTATE
# ($SCRATCH.host) and restored from it at `down`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root

HOSTSTATE=$SCRATCH.host
# Sysctls kubelet (protectKernelDefaults: false) and the CNI bridge set.
SYSCTLS=(net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
         kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Host paths outside $SCRATCH that kubelet, containerd or libcni write to
# whatever their configuration says.
HOST_PATHS=(/run/netns /run/containerd /var/lib/cni /var/log/containers /var/log/pods /var/lib/kubelet
            /etc/kubernetes /run/kubernetes /etc/cni /opt/cni)

snapshot_host() {
  [ -d "$HOSTSTATE" ] && return 0 # an earlier `up` that was not torn down: keep the original snapshot
  mkdir -p "$HOSTSTATE"
  for s in "${SYSCTLS[@]}"; do printf '%s=%s\n' "$s" "$(sysctl -n "$s")"; done > "$HOSTSTATE/sysctl"
  find "${HOST_PATHS[@]}" 2>/dev/null | sort > "$HOSTSTATE/files" || true
  ls -1 /run/netns 2>/dev/null > "$HOSTSTATE/netns" || true
  if findmnt -rn /run/netns >/dev/null 2>&1; then echo yes; else echo no; fi > "$HOSTSTATE/netns-mounted"
  iptables_chains > "$HOSTSTATE/iptables"
  iptables_tables > "$HOSTSTATE/iptables-tables"
  ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort > "$HOSTSTATE/links"
  find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null > "$HOSTSTATE/cgroups" || true
}

# iptables_chains: "table chain" for every chain in every table, v4 and v6.
iptables_chains() {
  local cmd t
  for cmd in iptables ip6tables; do
    command -v $cmd >/dev/null || continue
    for t in filter nat mangle; do
      $cmd -t $t -S 2>/dev/null | awk -v c=$cmd -v t=$t '$1=="-N"{print c, t, $2}'
    done
  done | sort
}

# iptables_tables: "family table" for every table iptables(-nft) shows.
iptables_tables() {
  local cmd fam
  for cmd in iptables ip6tables; do
    command -v $cmd-save >/dev/null || continue
    fam=ip; [ $cmd = ip6tables ] && fam=ip6
    $cmd-save 2>/dev/null | sed -n "s/^\*/$fam /p"
  done | sort
}

write_configs() {
  mkdir -p "$SCRATCH"/{etc,bin,cni/net.d,cni/ipam,etcd,pod-logs} "$CTRD_DIR" "$LOGS" "$PIDS"
  # runc wrapper: this VM lacks CAP_SYS_RESOURCE, so runc cannot write a
  # negative oom_score_adj (kubelet asks -998 for sandboxes) and container
  # start dies with "can't get final child's PID from pipe". Clamp to 0.
  cat > "$SCRATCH/bin/runc" <<'EOF'
#!/bin/sh
prev=
for a in "$@"; do
  f=
  case "$prev" in
    --bundle|-b) f="$a/config.json" ;;
    --process|-p) f="$a" ;;
  esac
  if [ -n "$f" ] && [ -f "$f" ]; then
    sed -i -E 's/"oomScoreAdj":-[0-9]+/"oomScoreAdj":0/' "$f"
  fi
  prev=$a
done
exec /usr/bin/runc "$@"
EOF
  chmod 0755 "$SCRATCH/bin/runc"

  cat > "$SCRATCH/etc/containerd.toml" <<EOF
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD_DIR/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "$SCRATCH/bin/runc"
        Root = "$CTRD_DIR/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$SCRATCH/cni/net.d"
EOF

  # Bridge network without masquerade or port mapping: no iptables rules.
  cat > "$SCRATCH/cni/net.d/10-gcsfuse-csi-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "gcsfuse-csi-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CNI_SUBNET"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$SCRATCH/cni/ipam"}}
  ]
}
EOF

  cat > "$SCRATCH/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
containerRuntimeEndpoint: unix://$CTRD_SOCK
cgroupDriver: cgroupfs
# The host is cgroup v1, which kubelet 1.35 refuses unless told otherwise.
failCgroupV1: false
failSwapOn: false
# Without CAP_SYS_RESOURCE kubelet cannot lower its own oom_score_adj.
oomScoreAdj: 0
address: 0.0.0.0
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
clusterDomain: cluster.local
podLogsDir: $SCRATCH/pod-logs
evictionHard: {"nodefs.available": "1%", "imagefs.available": "1%", "memory.available": "100Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
syncFrequency: 10s
fileCheckFrequency: 10s
volumeStatsAggPeriod: 0s
EOF
}

write_pki() {
  [ -s "$KUBECONFIG_ADMIN" ] && return 0
  mkdir -p "$PKI"
  (
    cd "$PKI"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 7 -subj "/CN=gcsfuse-csi-e2e-ca" 2>/dev/null
    cat > san.cnf <<EOF
[req]
distinguished_name=dn
[dn]
[ext]
basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:$NODE_NAME,IP:127.0.0.1,IP:10.0.0.1,IP:$NODE_IP
EOF
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 7 \
      -extfile san.cnf -extensions ext 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    : > tokens.csv
    kubeconfig() { # name user groups
      local tok; tok=$(openssl rand -hex 16)
      echo "$tok,$2,$2,\"$3\"" >> tokens.csv
      cat > "$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster: {server: "https://127.0.0.1:$APISERVER_PORT", certificate-authority: "$PKI/ca.crt"}
users:
- name: $2
  user: {token: "$tok"}
contexts:
- name: e2e
  context: {cluster: e2e, user: $2}
current-context: e2e
EOF
    }
    kubeconfig admin admin system:masters
    kubeconfig kubelet "system:node:$NODE_NAME" system:nodes
    kubeconfig controller-manager system:kube-controller-manager ""
    kubeconfig scheduler system:kube-scheduler ""
  )
}

up() {
  [ -n "$NODE_IP" ] || die "cannot find the node IP (ip route get 1.1.1.1)"
  for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    [ -x "$K8S_BIN/$b" ] || die "$K8S_BIN/$b missing: run test/k8s/build.sh"
  done
  [ -s "$IMAGES_DIR/pause.tar" ] || die "$IMAGES_DIR/pause.tar missing: run test/k8s/build.sh"
  for p in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KUBELET_PORT $KUBELET_HEALTHZ_PORT $KCM_PORT $SCHED_PORT; do
    if ss -Hltn "sport = :$p" | grep -q .; then
      running etcd || die "port $p is already in use (another cluster?); \`$0 down\` or free it"
    fi
  done
  snapshot_host
  write_configs
  write_pki

  # Bidirectional mount propagation (the node driver mounts into pods' volume
  # dirs) needs kubelet's root dir on a shared mount; / here is private, so
  # make the kubelet dir a shared bind mount of itself (undone by `down`).
  mkdir -p "$KUBELET_DIR"
  if ! findmnt -rn -M "$KUBELET_DIR" >/dev/null; then
    mount --bind "$KUBELET_DIR" "$KUBELET_DIR"
    mount --make-rshared "$KUBELET_DIR"
    log "kubelet dir $KUBELET_DIR: shared bind mount"
  fi

  if ! running containerd; then
    start containerd containerd --config "$SCRATCH/etc/containerd.toml"
    waitfor containerd 60 ctr -a "$CTRD_SOCK" version || { tail -20 "$LOGS/containerd.log"; die "containerd did not start"; }
  fi
  ctr_k8s images import "$IMAGES_DIR/pause.tar" >/dev/null
  ctr_k8s images import "$IMAGES_DIR/busybox.tar" >/dev/null

  local etcd_url=http://127.0.0.1:$ETCD_PORT
  if ! running etcd; then
    start etcd etcd --name e2e --data-dir "$SCRATCH/etcd/data" \
      --listen-client-urls "$etcd_url" --advertise-client-urls "$etcd_url" \
      --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
      --initial-cluster "e2e=http://127.0.0.1:$ETCD_PEER_PORT"
    waitfor etcd 60 env ETCDCTL_API=3 etcdctl --endpoints "$etcd_url" endpoint health || { tail -20 "$LOGS/etcd.log"; die "etcd did not start"; }
  fi

  if ! running kube-apiserver; then
    start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers="$etcd_url" \
      --bind-address=0.0.0.0 --secure-port="$APISERVER_PORT" --advertise-address="$NODE_IP" \
      --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
      --token-auth-file="$PKI/tokens.csv" --authorization-mode=AlwaysAllow \
      --service-account-issuer=https://kubernetes.default.svc.cluster.local \
      --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
      --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
      --kubelet-preferred-address-types=InternalIP,Hostname
    waitfor kube-apiserver 120 kc get --raw /readyz || { tail -30 "$LOGS/kube-apiserver.log"; die "kube-apiserver did not start"; }
  fi

  running kube-controller-manager ||
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$PKI/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$PKI/controller-manager.kubeconfig" --authorization-kubeconfig="$PKI/controller-manager.kubeconfig" \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" --leader-elect=false \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --pvclaimbinder-sync-period=2s \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller'
  running kube-scheduler ||
  start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$PKI/scheduler.kubeconfig" \
    --authentication-kubeconfig="$PKI/scheduler.kubeconfig" --authorization-kubeconfig="$PKI/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --secure-port="$SCHED_PORT"
  running kubelet ||
  start kubelet "$K8S_BIN/kubelet" --config="$SCRATCH/etc/kubelet.yaml" --kubeconfig="$PKI/kubelet.kubeconfig" \
    --root-dir="$KUBELET_DIR" --cert-dir="$KUBELET_DIR/pki" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" -v=2

  waitfor "node $NODE_NAME Ready" 180 kc wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s \
    || { tail -30 "$LOGS/kubelet.log"; die "node did not become Ready"; }
  waitfor "default service account" 120 kc -n default get serviceaccount default || die "no default service account"
  kc get nodes -o wide >&2
}

# kill_pid_if PID WHY: SIGTERM, then SIGKILL, one process we can name.
kill_pid() {
  local p=$1 why=$2
  kill -0 "$p" 2>/dev/null || return 0
  log "killing leftover $why (pid $p)"
  kill "$p" 2>/dev/null || true
  for _ in $(seq 1 20); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.25; done
  kill -9 "$p" 2>/dev/null || true
}

down() {
  # Best effort: every step runs whatever failed before it.
  set +e +o pipefail
  local rc=0
  # Our containers (pod sandboxes included), for the libcni cache cleanup.
  if [ -S "$CTRD_SOCK" ] && [ -d "$HOSTSTATE" ]; then ctr_k8s containers ls -q 2>/dev/null >> "$HOSTSTATE/containers"; fi
  # 1. Let Kubernetes take the pods down cleanly: kubelet unpublishes CSI
  #    volumes, stops sandboxes and removes their network namespaces.
  if running kubelet && curl -sf --max-time 2 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null 2>&1 \
     && kc get --raw /readyz >/dev/null 2>&1; then
    kc delete namespace -l e2e.gcsfuse-csi/test=true --wait=true --timeout=90s >/dev/null 2>&1 || true
    if [ -f "$SCRATCH/driver.yaml" ]; then
      kc delete -f "$SCRATCH/driver.yaml" --ignore-not-found --wait=true --timeout=90s >/dev/null 2>&1 || true
    fi
    kc delete pv --all --wait=true --timeout=30s >/dev/null 2>&1 || true
    kc delete pod --all --all-namespaces --grace-period=5 --wait=true --timeout=90s >/dev/null 2>&1 || true
    # kubelet removes a pod's sandbox shortly after the API object is gone
    for _ in $(seq 1 30); do
      [ -z "$(ctr_k8s tasks ls -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  stop kubelet
  stop kube-scheduler kube-controller-manager

  # 2. Whatever is still running in containerd (kubelet died, a pod hung).
  if [ -S "$CTRD_SOCK" ] && ctr -a "$CTRD_SOCK" version >/dev/null 2>&1; then
    local t c
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    sleep 1
    for t in $(ctr_k8s tasks ls -q 2>/dev/null); do ctr_k8s tasks rm -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctr_k8s containers ls -q 2>/dev/null); do ctr_k8s containers rm "$c" >/dev/null 2>&1 || true; done
  fi
  stop containerd
  # containerd-shim-runc-v2 daemonizes away from containerd; find ours by
  # the socket it was told to report to, and stop each by PID.
  local p
  for p in $(pgrep -f -- "-address $CTRD_SOCK" 2>/dev/null || true); do kill_pid "$p" containerd-shim; done
  stop gcpfront fake-gcs-server kube-apiserver
  stop etcd
  for f in "$PIDS"/*.pid; do if [ -f "$f" ]; then stop "$(basename "$f" .pid)"; fi; done

  # 3. Mounts under the scratch dir, deepest first (pod volumes, container
  #    rootfs and shm, the kubelet dir's shared self-bind).
  local m
  for _ in 1 2 3; do
    findmnt -rn -o TARGET | grep -F "$SCRATCH/" | sort -r | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
    findmnt -rn -o TARGET | grep -qF "$SCRATCH/" || break
  done

  # 4. Network namespaces containerd created, and its /run/netns self-bind.
  if [ -d /run/netns ]; then
    for n in $(ls -1 /run/netns 2>/dev/null); do
      grep -qxF "$n" "$HOSTSTATE/netns" 2>/dev/null && continue
      # every process of ours is gone: a namespace someone still uses is not ours
      [ -z "$(ip netns pids "$n" 2>/dev/null)" ] || { log "keeping /run/netns/$n: in use"; continue; }
      umount "/run/netns/$n" 2>/dev/null || umount -l "/run/netns/$n" 2>/dev/null || true
      rm -f "/run/netns/$n"
    done
    if [ "$(cat "$HOSTSTATE/netns-mounted" 2>/dev/null || echo no)" = no ] && findmnt -rn /run/netns >/dev/null 2>&1 \
       && [ -z "$(ls -A /run/netns)" ]; then
      while findmnt -rn /run/netns >/dev/null 2>&1; do umount /run/netns 2>/dev/null || umount -l /run/netns || break; done
    fi
  fi

  # 5. cgroups kubelet and the runtime created (empty now), deepest first.
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "${h}kubepods" ] || continue
    grep -qxF "${h}kubepods" "$HOSTSTATE/cgroups" 2>/dev/null && continue
    find "${h}kubepods" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done

  # 6. Network: the CNI bridge, and chains kubelet added to iptables.
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  if [ -f "$HOSTSTATE/iptables" ]; then
    iptables_chains | comm -13 "$HOSTSTATE/iptables" - | while read -r cmd tab chain; do
      # drop every rule that jumps to the chain, then the chain
      $cmd -t "$tab" -S 2>/dev/null | grep -E -- "-j $chain( |\$)" | sed 's/^-A /-D /' | while read -r rule; do
        # shellcheck disable=SC2086
        $cmd -t "$tab" $rule 2>/dev/null || true
      done
      $cmd -t "$tab" -F "$chain" 2>/dev/null || true
    done
    iptables_chains | comm -13 "$HOSTSTATE/iptables" - | while read -r cmd tab chain; do
      $cmd -t "$tab" -X "$chain" 2>/dev/null || true
    done
  fi
  # With the nf_tables backend, the tables themselves (filter, nat, mangle)
  # are objects that kubelet's first iptables call created: delete them if
  # they did not exist before and hold no rule any more.
  if [ -f "$HOSTSTATE/iptables-tables" ] && command -v nft >/dev/null && iptables -V 2>/dev/null | grep -q nf_tables; then
    iptables_tables | comm -13 "$HOSTSTATE/iptables-tables" - | while read -r fam tab; do
      if ! nft list table "$fam" "$tab" 2>/dev/null | grep -qE '^\s+(ip|ip6|meta|counter|jump|goto|ct|iifname|oifname|tcp|udp|mark|fib|accept|drop|return)\b'; then
        nft delete table "$fam" "$tab" 2>/dev/null || true
      fi
    done
  fi

  # 7. sysctls back to what they were.
  if [ -f "$HOSTSTATE/sysctl" ]; then
    local kv
    while read -r kv; do
      [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || { sysctl -qw "$kv"; log "sysctl restored: $kv"; }
    done < "$HOSTSTATE/sysctl"
  fi

  # 8. Files outside the scratch dir that kubelet, containerd and libcni
  #    create whatever they are told: /var/lib/kubelet/device-plugins/
  #    kubelet.sock, /var/log/containers links, /var/lib/cni/results,
  #    /run/containerd/s shim sockets. Only entries that appeared since `up`
  #    and are provably ours go: links into the scratch dir, sockets nobody
  #    listens on any more, libcni results of this network or of our
  #    containers; then the directories that are left empty. Anything else
  #    new is reported by `check`, not deleted (another runtime may own it).
  if [ -f "$HOSTSTATE/files" ]; then
    local new listening p b
    new=$(find "${HOST_PATHS[@]}" 2>/dev/null | sort | comm -13 "$HOSTSTATE/files" -)
    listening=$(ss -xlHn 2>/dev/null | awk '{print $5}')
    while read -r p; do
      [ -n "$p" ] || continue
      b=$(basename "$p")
      if [ -L "$p" ]; then
        case "$(readlink "$p")" in "$SCRATCH"/*) rm -f "$p" ;; esac
      elif [ -S "$p" ]; then
        grep -qxF "$p" <<< "$listening" || rm -f "$p"
      elif [ -f "$p" ] && [ "$(dirname "$p")" = /var/lib/cni/results ]; then
        case "$b" in
          gcsfuse-csi-e2e-*) rm -f "$p" ;;
          cni-loopback-*) grep -qxF "$(echo "$b" | sed -E 's/^cni-loopback-(.*)-lo$/\1/')" "$HOSTSTATE/containers" 2>/dev/null && rm -f "$p" ;;
        esac
      fi
    done <<< "$new"
    sort -r <<< "$new" | while read -r p; do
      if [ -n "$p" ] && [ -d "$p" ] && [ ! -L "$p" ]; then rmdir "$p" 2>/dev/null; fi
    done
  fi

  check || rc=1
  if [ -n "${KEEP_LOGS:-}" ] && [ -d "$LOGS" ]; then
    rm -rf "$SCRATCH.logs"
    cp -a "$LOGS" "$SCRATCH.logs"
    cp -a "$SCRATCH/driver.yaml" "$SCRATCH.logs/" 2>/dev/null
    log "logs kept in $SCRATCH.logs"
  fi
  if [ $rc = 0 ]; then
    rm -rf "$SCRATCH" "$HOSTSTATE"
    log "teardown: clean; removed $SCRATCH"
  else
    log "teardown: leftovers above; kept $SCRATCH (logs in $LOGS) and $HOSTSTATE"
  fi
  return $rc
}

# check: every trace the cluster can leave on the host. Prints one line per
# check; returns 1 if anything is left.
check() {
  set +e +o pipefail
  local bad=0 out
  report() { # name output
    if [ -z "$2" ]; then log "leftover check: $1: none"; else log "leftover check: $1: LEFT: $(echo "$2" | head -10 | tr '\n' ';')"; bad=1; fi
  }
  out=$(for f in "$PIDS"/*.pid; do [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && echo "$(basename "$f" .pid) pid $(cat "$f")"; done; true)
  report "recorded processes alive" "$out"
  out=$(ps -eo pid=,args= | grep -F -e "$K8S_BIN/" -e "$SCRATCH" -e "$CTRD_SOCK" -e "$TOOLS_BIN/" | grep -v -F -e 'grep' -e 'cluster.sh' || true)
  report "processes started from the cache or scratch dir (kube*, etcd, containerd, shims, fake-gcs-server)" "$out"
  # gcsfuse and the driver run in pod cgroups: any process still in one is ours
  out=$(grep -l kubepods /proc/[0-9]*/cgroup 2>/dev/null | while read -r f; do p=${f#/proc/}; p=${p%/cgroup}; echo "$p $(tr '\0' ' ' < /proc/$p/cmdline 2>/dev/null)"; done; true)
  report "processes in kubepods cgroups (gcsfuse, driver, pods)" "$out"
  out=$(findmnt -rn -o TARGET,FSTYPE,SOURCE | awk -v s="$SCRATCH" -v b="$BUCKET_PREFIX" 'index($1, s)==1 || ($2 ~ /gcsfuse/ && index($3, b)==1)' || true)
  report "mounts under $SCRATCH, fuse.gcsfuse mounts of $BUCKET_PREFIX* buckets" "$out"
  out=$(findmnt -rn -o TARGET,FSTYPE,SOURCE | awk '$2 ~ /gcsfuse/' || true)
  [ -z "$out" ] || log "leftover check: note: other fuse.gcsfuse mounts on the host (not this run's buckets): $(echo "$out" | head -5 | tr '\n' ';')"
  out=$(if findmnt -rn /run/netns >/dev/null 2>&1 && [ "$(cat "$HOSTSTATE/netns-mounted" 2>/dev/null || echo no)" = no ]; then echo "/run/netns mounted"; fi
        ls -1 /run/netns 2>/dev/null | grep -vxF -f "$HOSTSTATE/netns" 2>/dev/null || true)
  report "/run/netns" "$out"
  out=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null | grep -vxF -f "$HOSTSTATE/cgroups" 2>/dev/null || true)
  report "kubepods cgroups" "$out"
  out=$(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | comm -13 "$HOSTSTATE/links" - 2>/dev/null || true)
  report "network links (bridge $CNI_BRIDGE, veths)" "$out"
  out=$([ -f "$HOSTSTATE/iptables" ] && iptables_chains | comm -13 "$HOSTSTATE/iptables" - || true)
  report "iptables chains" "$out"
  out=$([ -f "$HOSTSTATE/sysctl" ] && while read -r kv; do [ "$(sysctl -n "${kv%%=*}")" = "${kv#*=}" ] || echo "${kv%%=*}=$(sysctl -n "${kv%%=*}") (was ${kv#*=})"; done < "$HOSTSTATE/sysctl")
  report "sysctls" "$out"
  out=$([ -f "$HOSTSTATE/files" ] && find "${HOST_PATHS[@]}" 2>/dev/null | sort | comm -13 "$HOSTSTATE/files" - || true)
  report "files created under ${HOST_PATHS[*]}" "$out"
  out=$([ -f "$HOSTSTATE/iptables-tables" ] && iptables_tables | comm -13 "$HOSTSTATE/iptables-tables" - || true)
  report "iptables (nf_tables) tables" "$out"
  out=$(for p in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $KUBELET_PORT $KUBELET_HEALTHZ_PORT $KCM_PORT $SCHED_PORT $FAKE_GCS_PORT; do
          ss -Hltn "sport = :$p" | grep -q . && echo "port $p"; done; true)
  report "listening ports" "$out"
  return $bad
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  check) check ;;
  *) echo "usage: $0 up|down|check" >&2; exit 2 ;;
esac
