#!/usr/bin/env bash
# Deploys the driver on the cluster `cluster.sh up` started, the way the
# project ships it: the image tarball `make images` writes, imported into
# containerd, and the Helm chart rendered with the helm CLI and applied.
# Also starts fake-gcs-server on the node's IP and gcpfront before it, as
# the driver's GCS endpoint and Security Token Service.
#
# Env: DRIVER_IMAGE_TAR (default bin/images/gcsfuse-csi.tar),
#      DRIVER_NAMESPACE (default gcsfuse-csi)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root

tarball=${DRIVER_IMAGE_TAR:-$repo/bin/images/gcsfuse-csi.tar}
chart=$repo/deploy/helm/gcsfuse-csi
ns=${DRIVER_NAMESPACE:-gcsfuse-csi}
[ -s "$tarball" ] || die "driver image $tarball missing: run \`make images\`"
[ -f "$chart/Chart.yaml" ] || die "chart $chart missing"
[ -x "$HELM" ] || die "$HELM missing: run test/k8s/build.sh"

# ------------------------------------------------------------ fake GCS
# -public-host must be the host:port gcsfuse dials, or the fake answers
# uploads and media links with URLs gcsfuse does not accept.
gcs=$NODE_IP:$FAKE_GCS_PORT
if ! curl -sf "http://$gcs/storage/v1/b" >/dev/null 2>&1; then
  start fake-gcs-server "$TOOLS_BIN/fake-gcs-server" -scheme http -host "$NODE_IP" -port "$FAKE_GCS_PORT" \
    -public-host "$gcs" -external-url "http://$gcs" -backend memory -log-level warn
  waitfor fake-gcs-server 30 curl -sf "http://$gcs/storage/v1/b" || { tail "$LOGS/fake-gcs-server.log"; die "fake-gcs-server did not start"; }
fi
# The driver talks to GCS through gcpfront, which checks bearer tokens per
# bucket (the tests open theirs through its admin API) and serves the STS
# that trusts this cluster's service-account tokens: Workload Identity runs
# with kubelet's real tokens.
front=$NODE_IP:$GCP_FRONT_PORT
if ! curl -sf "http://$NODE_IP:$GCP_ADMIN_PORT/requests" >/dev/null 2>&1; then
  start gcpfront "$TOOLS_BIN/gcpfront" -front "$front" -auth "$NODE_IP:$GCP_AUTH_PORT" -admin "$NODE_IP:$GCP_ADMIN_PORT" \
    -upstream "http://$gcs" -trust-issuer https://kubernetes.default.svc.cluster.local -trust-key "$PKI/sa.pub" -audience "$WI_AUDIENCE"
  waitfor gcpfront 30 curl -sf "http://$NODE_IP:$GCP_ADMIN_PORT/requests" || { tail "$LOGS/gcpfront.log"; die "gcpfront did not start"; }
fi

# ------------------------------------------------------------- image
# The image reference is whatever the tarball says (docker-archive
# manifest.json RepoTags, or an OCI layout's index.json annotations).
ref=$(tar -xOf "$tarball" manifest.json 2>/dev/null | jq -r '.[0].RepoTags[0] // empty' 2>/dev/null || true)
if [ -z "$ref" ]; then
  ref=$(tar -xOf "$tarball" index.json 2>/dev/null | jq -r '[.manifests[].annotations // {} | (."io.containerd.image.name" // ."org.opencontainers.image.ref.name")] | map(select(. != null and contains(":"))) | .[0] // empty' 2>/dev/null || true)
fi
[ -n "$ref" ] || die "cannot read the image reference from $tarball (no manifest.json RepoTags, no index.json name annotation)"
repository=${ref%:*}
tag=${ref##*:}
log "driver image: $ref (from $tarball)"
ctr_k8s images import "$tarball" >/dev/null
ctr_k8s images ls -q | grep -qxF "$ref" || die "ctr import of $tarball did not produce $ref (ctr images ls: $(ctr_k8s images ls -q | tr '\n' ' '))"

# ------------------------------------------------------------- chart
out=$SCRATCH/driver.yaml
"$HELM" template gcsfuse-csi "$chart" --namespace "$ns" --kube-version "$K8S_VERSION" \
  --set-string kubeletDir="$KUBELET_DIR" \
  --set-string image.repository="$repository" \
  --set-string image.tag="$tag" \
  --set-string image.pullPolicy=Never \
  --set-string driver.gcsEndpoint="http://$front/storage/v1/" \
  --set workloadIdentity.enabled=true \
  --set-string workloadIdentity.audience="$WI_AUDIENCE" \
  --set-string workloadIdentity.provider="//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/test/providers/k8s" \
  --set-string workloadIdentity.stsEndpoint="http://$NODE_IP:$GCP_AUTH_PORT/v1/token" \
  --set driver.anonymous=true \
  --set driver.atomicRename=false \
  --set driver.logVerbosity=4 \
  --set-string mounter.socketDir="$SCRATCH/mounter" \
  > "$out"
log "chart rendered: $out ($(grep -c '^kind:' "$out") objects: $(awk '$1=="kind:"{print $2}' "$out" | tr '\n' ' '))"
kc get namespace "$ns" >/dev/null 2>&1 || kc create namespace "$ns" >/dev/null
kc apply -f "$out" >&2

# Both DaemonSets: the node driver (RollingUpdate) and the mounter. `rollout
# status` refuses OnDelete DaemonSets, so readiness is read from the status:
# every scheduled pod Ready, and the status is of the current generation.
ds_ready() {
  local s
  s=$(kc -n "$ns" get daemonset "$1" -o jsonpath='{.metadata.generation} {.status.observedGeneration} {.status.desiredNumberScheduled} {.status.numberReady}') || return 1
  # shellcheck disable=SC2086
  set -- $s
  [ $# = 4 ] && [ "$1" = "$2" ] && [ "$3" -gt 0 ] && [ "$3" = "$4" ]
}
for ds in $(kc -n "$ns" get daemonset -l app.kubernetes.io/instance=gcsfuse-csi -o name); do
  waitfor "$ds" 180 ds_ready "${ds#*/}" || {
    kc -n "$ns" get pods -o wide >&2; kc -n "$ns" describe pods >&2 | tail -40
    kc -n "$ns" logs -l app.kubernetes.io/name=gcsfuse-csi --prefix --tail=50 >&2 || true
    die "$ds not ready"
  }
done
[ "$(kc -n "$ns" get daemonset -l app.kubernetes.io/instance=gcsfuse-csi -o name | wc -l)" = 2 ] \
  || die "want the node and mounter DaemonSets, got: $(kc -n "$ns" get daemonset -o name | tr '\n' ' ')"
driver=$(awk '$1=="driverName:"{print $2}' "$chart/values.yaml")
csinode() { kc get csinode "$NODE_NAME" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | tr ' ' '\n' | grep -qxF "$driver"; }
waitfor "CSINode $NODE_NAME lists $driver" 90 csinode || {
  kc -n "$ns" logs -l app.kubernetes.io/name=gcsfuse-csi --prefix --tail=50 >&2 || true
  grep -i -E 'plugin|csi' "$LOGS/kubelet.log" | tail -20 >&2
  die "the driver did not register with kubelet"
}
kc get csinode "$NODE_NAME" -o jsonpath='{range .spec.drivers[*]}{.name} nodeID={.nodeID}{"\n"}{end}' >&2
{
  echo "DRIVER_NAME=$driver"
  echo "DRIVER_NAMESPACE=$ns"
  echo "DRIVER_IMAGE=$ref"
  echo "FAKE_GCS=http://$gcs"
  echo "GCP_ADMIN=http://$NODE_IP:$GCP_ADMIN_PORT"
} > "$SCRATCH/deploy.env"
