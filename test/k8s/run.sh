#!/usr/bin/env bash
# `make e2e-k8s`: build what is missing, start a single-node Kubernetes,
# deploy the driver from its image and chart, run the Go e2e tests
# (test/k8s/k8s_test.go), tear everything down and check that nothing is left.
#
# Env: KEEP_UP=1      leave the cluster running (then: test/k8s/cluster.sh down)
#      SKIP_IMAGES=1  do not run `make images` (use bin/images/gcsfuse-csi.tar as is)
#      GCSFUSE_CSI_CACHE (default /var/cache/gcsfuse-csi), E2E_K8S_DIR (default /tmp/gcsfuse-csi-e2e-k8s)
#      TESTFLAGS      extra `go test` flags, e.g. "-run TestKubernetes/inline"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root

phases=()
t_phase=$(date +%s)
t_start=$t_phase
phase() { local n; n=$(date +%s); phases+=("$(printf '%-14s %5ss' "$1" $((n - t_phase)))"); t_phase=$n; }
timings() {
  log "timings:"
  for p in "${phases[@]}"; do printf '    %s\n' "$p" >&2; done
  printf '    %-14s %5ss\n' total $(( $(date +%s) - t_start )) >&2
}

cluster_started=
finish() {
  local rc=$?
  set +e
  if [ -n "$cluster_started" ]; then
    if [ -n "${KEEP_UP:-}" ]; then
      log "KEEP_UP=1: cluster left running; kubectl --kubeconfig $KUBECONFIG_ADMIN ...; stop with test/k8s/cluster.sh down"
    else
      t_phase=$(date +%s)
      # a failed run keeps the component logs (outside the scratch dir)
      if [ $rc = 0 ]; then "$here/cluster.sh" down; else KEEP_LOGS=1 "$here/cluster.sh" down; fi || { log "teardown left something behind (see above)"; [ $rc = 0 ] && rc=1; }
      phase teardown
    fi
  fi
  timings
  if [ $rc = 0 ]; then log "e2e-k8s: PASS"; else log "e2e-k8s: FAIL (rc=$rc)"; fi
  exit $rc
}
trap finish EXIT
trap 'exit 130' INT TERM

"$here/build.sh"
phase build

if [ -z "${SKIP_IMAGES:-}" ]; then
  make -C "$repo" --no-print-directory images
  phase driver-image
fi

# Fail before starting a cluster if a piece of the deployment is missing.
[ -s "${DRIVER_IMAGE_TAR:-$repo/bin/images/gcsfuse-csi.tar}" ] || die "no driver image tarball (${DRIVER_IMAGE_TAR:-bin/images/gcsfuse-csi.tar}): make images"
[ -f "$repo/deploy/helm/gcsfuse-csi/Chart.yaml" ] || die "no chart in deploy/helm/gcsfuse-csi"

cluster_started=1
"$here/cluster.sh" up
phase cluster-up

"$here/deploy.sh"
# shellcheck disable=SC1091
. "$SCRATCH/deploy.env"
phase deploy

cd "$repo"
set +e
# shellcheck disable=SC2086
E2E_K8S=1 \
E2E_K8S_KUBECTL="$K8S_BIN/kubectl" \
E2E_K8S_KUBECONFIG="$KUBECONFIG_ADMIN" \
E2E_K8S_KUBELET_DIR="$KUBELET_DIR" \
E2E_K8S_FAKE_GCS="$FAKE_GCS" \
E2E_K8S_GCP_ADMIN="$GCP_ADMIN" \
E2E_K8S_DRIVER="$DRIVER_NAME" \
E2E_K8S_DRIVER_NAMESPACE="$DRIVER_NAMESPACE" \
E2E_K8S_BUSYBOX_IMAGE="$BUSYBOX_IMAGE" \
  go test -count=1 -v -timeout 20m ${TESTFLAGS:-} ./test/k8s/ 2>&1 | tee "$LOGS/go-test.log"
rc=${PIPESTATUS[0]}
set -e
phase tests
exit "$rc"
