// Package chart tests the Helm chart in deploy/helm/gcsfuse-csi: it renders
// the chart with the Helm SDK for several values sets, decodes every object
// strictly into its k8s.io/api type, and checks what kubelet and the driver
// depend on (paths, flags, privileges), the values schema, the examples and
// the chart README.
package chart

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
)

const (
	driverContainer    = "gcsfuse-csi"
	registrarContainer = "node-driver-registrar"
	mounterContainer   = "mounter"
	csiEndpoint        = "unix:///csi/csi.sock"
)

// TestRender renders the chart with several values sets. Every rendering
// must satisfy checkInvariants; each case then asserts its own facts with
// literal expected values.
func TestRender(t *testing.T) {
	tests := []struct {
		name   string
		values string
		check  func(t *testing.T, m *manifest)
	}{
		{
			name:   "defaults",
			values: "",
			check: func(t *testing.T, m *manifest) {
				if got := m.str(t, "driverName"); got != driver.DefaultDriverName {
					t.Errorf("default driverName %q, want the driver's default %q", got, driver.DefaultDriverName)
				}
				ds := nodeDaemonSet(t, m)
				if ds.Name != "gcsfuse-csi-node" || ds.Namespace != releaseNS {
					t.Errorf("DaemonSet %s/%s, want %s/gcsfuse-csi-node", ds.Namespace, ds.Name, releaseNS)
				}
				spec := &ds.Spec.Template.Spec
				if got := containerNames(spec); !slices.Equal(got, []string{driverContainer}) {
					t.Errorf("containers %q, want only %q (built-in registration)", got, driverContainer)
				}
				c := container(t, spec, driverContainer)
				if c.Image != "ghcr.io/gcsfuse-csi/gcsfuse-csi:0.1.0" {
					t.Errorf("image %q, want ghcr.io/gcsfuse-csi/gcsfuse-csi:<appVersion 0.1.0>", c.Image)
				}
				if c.ImagePullPolicy != corev1.PullIfNotPresent {
					t.Errorf("imagePullPolicy %q", c.ImagePullPolicy)
				}
				if len(c.Command) != 0 {
					t.Errorf("command %q: the image's entrypoint (tini + gcsfuse-csi) must stay", c.Command)
				}
				wantArgs := []string{
					"node",
					"--endpoint=unix:///csi/csi.sock",
					"--driver-name=gcsfuse-csi.github.io",
					"--node-id=$(NODE_NAME)",
					"--state-dir=/var/lib/kubelet/plugins/gcsfuse-csi.github.io-state",
					"--kubelet-dir=/var/lib/kubelet",
					"--gcsfuse=/usr/local/bin/gcsfuse",
					"--mounter-socket=/var/lib/gcsfuse-csi-mounter/mounter.sock",
					"--mounter-uid=65532",
					"--max-retry-attempts=5",
					"-v=2",
					"--registration-dir=/registration",
					"--kubelet-registration-path=/var/lib/kubelet/plugins/gcsfuse-csi.github.io/csi.sock",
				}
				if !slices.Equal(c.Args, wantArgs) {
					t.Errorf("args\n got %q\nwant %q", c.Args, wantArgs)
				}

				// The mounter, on by default.
				md := daemonSet(t, m, "mounter")
				if md == nil {
					t.Fatal("no mounter DaemonSet by default")
				}
				if md.Name != "gcsfuse-csi-mounter" || md.Namespace != releaseNS {
					t.Errorf("mounter DaemonSet %s/%s, want %s/gcsfuse-csi-mounter", md.Namespace, md.Name, releaseNS)
				}
				mc := container(t, &md.Spec.Template.Spec, mounterContainer)
				wantMounterArgs := []string{
					"mounter",
					"--socket=/var/lib/gcsfuse-csi-mounter/mounter.sock",
					"--gcsfuse=/usr/local/bin/gcsfuse",
					"--work-dir=/tmp/gcsfuse-csi",
					"-v=2",
				}
				if !slices.Equal(mc.Args, wantMounterArgs) {
					t.Errorf("mounter args\n got %q\nwant %q", mc.Args, wantMounterArgs)
				}
				if mc.Image != c.Image || len(mc.Command) != 0 {
					t.Errorf("mounter image %q command %q, want the driver's image %q and its entrypoint", mc.Image, mc.Command, c.Image)
				}
				if psc := md.Spec.Template.Spec.SecurityContext; psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 65532 ||
					psc.RunAsGroup == nil || *psc.RunAsGroup != 65532 {
					t.Errorf("mounter pod securityContext %+v, want uid and gid 65532 (the image's nonroot)", psc)
				}
				if got := mc.Resources.Requests.Memory(); got.Cmp(resource.MustParse("64Mi")) != 0 {
					t.Errorf("mounter memory request %v", got)
				}
				if _, ok := mc.Resources.Limits[corev1.ResourceMemory]; ok {
					t.Error("a mounter memory limit by default: reaching it would kill the gcsfuse processes under running pods")
				}
				if md.Spec.Template.Spec.HostNetwork {
					t.Error("mounter hostNetwork by default")
				}
				notes := m.files["gcsfuse-csi/templates/NOTES.txt"]
				if !strings.Contains(notes, "app.kubernetes.io/component=mounter") || !strings.Contains(notes, "OnDelete") {
					t.Errorf("NOTES.txt does not tell where the mounter pods are and that they are OnDelete:\n%s", notes)
				}
				opts, _, err := driverFlags(c.Args)
				if err != nil {
					t.Fatal(err)
				}
				if opts.GCSEndpoint != "" || opts.Anonymous || !opts.AtomicRename {
					t.Errorf("defaults changed GCS settings: endpoint %q anonymous %v atomicRename %v", opts.GCSEndpoint, opts.Anonymous, opts.AtomicRename)
				}
				if spec.PriorityClassName != "system-node-critical" {
					t.Errorf("priorityClassName %q", spec.PriorityClassName)
				}
				if !reflect.DeepEqual(spec.NodeSelector, map[string]string{"kubernetes.io/os": "linux"}) {
					t.Errorf("nodeSelector %v", spec.NodeSelector)
				}
				if !reflect.DeepEqual(spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
					t.Errorf("tolerations %+v, want to tolerate every taint", spec.Tolerations)
				}
				if spec.HostNetwork {
					t.Error("hostNetwork by default")
				}
				one := intstr.FromInt32(1)
				wantStrategy := appsv1.DaemonSetUpdateStrategy{Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: &one}}
				if !reflect.DeepEqual(ds.Spec.UpdateStrategy, wantStrategy) {
					t.Errorf("updateStrategy %+v", ds.Spec.UpdateStrategy)
				}
				if got := c.Resources.Requests.Memory(); got.Cmp(resource.MustParse("64Mi")) != 0 {
					t.Errorf("memory request %v", got)
				}
				if _, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
					t.Error("a memory limit by default: reaching it would kill the gcsfuse processes under running pods")
				}
				sa := only[*corev1.ServiceAccount](t, m, "v1/ServiceAccount")
				if sa.Name != "gcsfuse-csi-node" || spec.ServiceAccountName != sa.Name {
					t.Errorf("ServiceAccount %q, pod uses %q", sa.Name, spec.ServiceAccountName)
				}
				for name, text := range m.files {
					if strings.Contains(text, "csi-node-driver-registrar") {
						t.Errorf("%s mentions the registrar sidecar in builtin mode", name)
					}
				}
			},
		},
		{
			name: "k0s kubelet dir and another driver name",
			values: `
kubeletDir: /var/lib/k0s/kubelet
driverName: gcs.example.com
`,
			check: func(t *testing.T, m *manifest) {
				if d := only[*storagev1.CSIDriver](t, m, "storage.k8s.io/v1/CSIDriver"); d.Name != "gcs.example.com" {
					t.Errorf("CSIDriver %q", d.Name)
				}
				ds := nodeDaemonSet(t, m)
				spec := &ds.Spec.Template.Spec
				c := container(t, spec, driverContainer)
				want := map[string]string{
					"driver-name":               "gcs.example.com",
					"state-dir":                 "/var/lib/k0s/kubelet/plugins/gcs.example.com-state",
					"kubelet-dir":               "/var/lib/k0s/kubelet",
					"kubelet-registration-path": "/var/lib/k0s/kubelet/plugins/gcs.example.com/csi.sock",
				}
				for flag, w := range want {
					if got, _ := argValue(c.Args, flag); got != w {
						t.Errorf("--%s=%q, want %q", flag, got, w)
					}
				}
				var bidi []corev1.VolumeMount
				for _, vm := range c.VolumeMounts {
					if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
						bidi = append(bidi, vm)
					}
				}
				if len(bidi) != 1 || bidi[0].MountPath != "/var/lib/k0s/kubelet" {
					t.Errorf("Bidirectional mounts %+v, want exactly one at /var/lib/k0s/kubelet", bidi)
				}
				hostPaths := map[string]string{}
				for _, v := range spec.Volumes {
					if v.HostPath != nil {
						hostPaths[v.Name] = v.HostPath.Path
					}
				}
				wantHost := map[string]string{
					"kubelet-dir":        "/var/lib/k0s/kubelet",
					"plugin-dir":         "/var/lib/k0s/kubelet/plugins/gcs.example.com",
					"registration-dir":   "/var/lib/k0s/kubelet/plugins_registry",
					"dev":                "/dev",
					"mounter-socket-dir": "/var/lib/gcsfuse-csi-mounter",
				}
				if !reflect.DeepEqual(hostPaths, wantHost) {
					t.Errorf("hostPath volumes %v, want %v", hostPaths, wantHost)
				}
				for name, text := range m.files {
					if strings.Contains(text, "/var/lib/kubelet") {
						t.Errorf("%s still names /var/lib/kubelet", name)
					}
				}
			},
		},
		{
			name: "upstream registrar sidecar",
			values: `
registrar:
  mode: sidecar
`,
			check: func(t *testing.T, m *manifest) {
				ds := nodeDaemonSet(t, m)
				spec := &ds.Spec.Template.Spec
				if got := containerNames(spec); !slices.Equal(got, []string{driverContainer, registrarContainer}) {
					t.Fatalf("containers %q", got)
				}
				c := container(t, spec, driverContainer)
				opts, _, err := driverFlags(c.Args)
				if err != nil {
					t.Fatal(err)
				}
				if opts.RegistrationDir != "" || opts.KubeletRegistrationPath != "" {
					t.Errorf("driver registers itself too (--registration-dir=%q --kubelet-registration-path=%q); two registrations of one driver", opts.RegistrationDir, opts.KubeletRegistrationPath)
				}
				for _, vm := range c.VolumeMounts {
					if vm.Name == "registration-dir" {
						t.Error("driver container mounts kubelet's plugins_registry in sidecar mode")
					}
				}
				r := container(t, spec, registrarContainer)
				if r.Image != "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0" {
					t.Errorf("registrar image %q", r.Image)
				}
				wantArgs := []string{
					"--v=2",
					"--csi-address=/csi/csi.sock",
					"--kubelet-registration-path=/var/lib/kubelet/plugins/gcsfuse-csi.github.io/csi.sock",
					"--http-endpoint=:9809",
				}
				if !slices.Equal(r.Args, wantArgs) {
					t.Errorf("registrar args\n got %q\nwant %q", r.Args, wantArgs)
				}
				if r.LivenessProbe == nil || r.LivenessProbe.HTTPGet == nil || r.LivenessProbe.HTTPGet.Port != intstr.FromString("healthz") {
					t.Errorf("registrar liveness probe %+v, want httpGet on its healthz port", r.LivenessProbe)
				}
				sc := r.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
					sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("registrar securityContext %+v: it needs no privilege and no capability", sc)
				}
			},
		},
		{
			name: "custom GCS endpoint, anonymous, emulator settings",
			values: `
driver:
  gcsEndpoint: http://fake-gcs.gcs.svc.cluster.local:4443/storage/v1/
  anonymous: true
  atomicRename: false
  maxRetryAttempts: 3
  logVerbosity: 5
  extraArgs: ["--mount-timeout=1m"]
`,
			check: func(t *testing.T, m *manifest) {
				ds := nodeDaemonSet(t, m)
				c := container(t, &ds.Spec.Template.Spec, driverContainer)
				opts, v, err := driverFlags(c.Args)
				if err != nil {
					t.Fatal(err)
				}
				if opts.GCSEndpoint != "http://fake-gcs.gcs.svc.cluster.local:4443/storage/v1/" {
					t.Errorf("--gcs-endpoint=%q", opts.GCSEndpoint)
				}
				if !opts.Anonymous || opts.AtomicRename || opts.MaxRetryAttempts != 3 || v != 5 || opts.MountTimeout != time.Minute {
					t.Errorf("anonymous %v atomicRename %v maxRetryAttempts %d v %d mountTimeout %s, want true false 3 5 1m",
						opts.Anonymous, opts.AtomicRename, opts.MaxRetryAttempts, v, opts.MountTimeout)
				}
				if c.Args[len(c.Args)-1] != "--mount-timeout=1m" {
					t.Errorf("extraArgs are not last: %q", c.Args)
				}
			},
		},
		{
			name: "existing service account, OnDelete, host network, pinned image",
			values: `
image: {tag: v9.9.9, pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
node:
  serviceAccount: {create: false, name: csi-node}
  updateStrategy: {type: OnDelete}
  hostNetwork: true
  priorityClassName: ""
  podLabels: {team: storage}
`,
			check: func(t *testing.T, m *manifest) {
				if sas := m.ofKind("v1/ServiceAccount"); len(sas) != 0 {
					t.Errorf("ServiceAccount objects %v with serviceAccount.create=false", sas)
				}
				ds := nodeDaemonSet(t, m)
				spec := &ds.Spec.Template.Spec
				if spec.ServiceAccountName != "csi-node" {
					t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
				}
				if ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType || ds.Spec.UpdateStrategy.RollingUpdate != nil {
					t.Errorf("updateStrategy %+v", ds.Spec.UpdateStrategy)
				}
				if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
					t.Errorf("hostNetwork %v dnsPolicy %q", spec.HostNetwork, spec.DNSPolicy)
				}
				if spec.PriorityClassName != "" {
					t.Errorf("priorityClassName %q, want none", spec.PriorityClassName)
				}
				c := container(t, spec, driverContainer)
				if c.Image != "ghcr.io/gcsfuse-csi/gcsfuse-csi:v9.9.9" || c.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("image %q %q", c.Image, c.ImagePullPolicy)
				}
				if !reflect.DeepEqual(spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) {
					t.Errorf("imagePullSecrets %v", spec.ImagePullSecrets)
				}
				if ds.Spec.Template.Labels["team"] != "storage" {
					t.Errorf("pod labels %v", ds.Spec.Template.Labels)
				}
				// The mounter follows the image, pull secrets, account and
				// priority, but not node.updateStrategy or node.hostNetwork.
				md := daemonSet(t, m, "mounter")
				if md == nil {
					t.Fatal("no mounter DaemonSet")
				}
				ms := &md.Spec.Template.Spec
				mc := container(t, ms, mounterContainer)
				if mc.Image != "ghcr.io/gcsfuse-csi/gcsfuse-csi:v9.9.9" || mc.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("mounter image %q %q", mc.Image, mc.ImagePullPolicy)
				}
				if ms.ServiceAccountName != "csi-node" || ms.PriorityClassName != "" || !reflect.DeepEqual(ms.ImagePullSecrets, spec.ImagePullSecrets) {
					t.Errorf("mounter serviceAccountName %q priorityClassName %q imagePullSecrets %v", ms.ServiceAccountName, ms.PriorityClassName, ms.ImagePullSecrets)
				}
				if ms.HostNetwork {
					t.Error("mounter hostNetwork follows node.hostNetwork; it has its own value")
				}
				if _, ok := md.Spec.Template.Labels["team"]; ok {
					t.Error("node.podLabels reached the mounter pods")
				}
			},
		},
		{
			name: "mounter disabled: gcsfuse in the driver container",
			values: `
mounter: {enabled: false}
`,
			check: func(t *testing.T, m *manifest) {
				if md := daemonSet(t, m, "mounter"); md != nil {
					t.Fatalf("mounter DaemonSet %s rendered with mounter.enabled=false", md.Name)
				}
				if n := len(m.ofKind("apps/v1/DaemonSet")); n != 1 {
					t.Errorf("%d DaemonSets, want only the node driver's", n)
				}
				ds := nodeDaemonSet(t, m)
				spec := &ds.Spec.Template.Spec
				c := container(t, spec, driverContainer)
				wantArgs := []string{
					"node",
					"--endpoint=unix:///csi/csi.sock",
					"--driver-name=gcsfuse-csi.github.io",
					"--node-id=$(NODE_NAME)",
					"--state-dir=/var/lib/kubelet/plugins/gcsfuse-csi.github.io-state",
					"--kubelet-dir=/var/lib/kubelet",
					"--gcsfuse=/usr/local/bin/gcsfuse",
					"--max-retry-attempts=5",
					"-v=2",
					"--registration-dir=/registration",
					"--kubelet-registration-path=/var/lib/kubelet/plugins/gcsfuse-csi.github.io/csi.sock",
				}
				if !slices.Equal(c.Args, wantArgs) {
					t.Errorf("args\n got %q\nwant %q", c.Args, wantArgs)
				}
				for _, v := range spec.Volumes {
					if v.HostPath != nil && v.HostPath.Path == "/var/lib/gcsfuse-csi-mounter" {
						t.Errorf("volume %s: the mounter socket dir without a mounter", v.Name)
					}
				}
				notes := m.files["gcsfuse-csi/templates/NOTES.txt"]
				if strings.Contains(notes, "component=mounter") || !strings.Contains(notes, "ends the mounts") {
					t.Errorf("NOTES.txt with mounter.enabled=false:\n%s", notes)
				}
			},
		},
		{
			name: "mounter uid, socket dir, host network, verbosity",
			values: `
driver: {logVerbosity: 4}
mounter:
  uid: 1001
  socketDir: /run/gcsfuse-csi/mounter
  hostNetwork: true
  podLabels: {team: storage}
  podAnnotations: {note: x}
  extraArgs: [--vmodule=session=5]
`,
			check: func(t *testing.T, m *manifest) {
				ds := nodeDaemonSet(t, m)
				c := container(t, &ds.Spec.Template.Spec, driverContainer)
				for flag, want := range map[string]string{
					"mounter-socket": "/run/gcsfuse-csi/mounter/mounter.sock",
					"mounter-uid":    "1001",
				} {
					if got, _ := argValue(c.Args, flag); got != want {
						t.Errorf("driver --%s=%q, want %q", flag, got, want)
					}
				}
				if ds.Spec.Template.Spec.HostNetwork {
					t.Error("mounter.hostNetwork reached the driver pods")
				}
				md := daemonSet(t, m, "mounter")
				if md == nil {
					t.Fatal("no mounter DaemonSet")
				}
				ms := &md.Spec.Template.Spec
				mc := container(t, ms, mounterContainer)
				wantArgs := []string{
					"mounter",
					"--socket=/run/gcsfuse-csi/mounter/mounter.sock",
					"--gcsfuse=/usr/local/bin/gcsfuse",
					"--work-dir=/tmp/gcsfuse-csi",
					"-v=4",
					"--vmodule=session=5",
				}
				if !slices.Equal(mc.Args, wantArgs) {
					t.Errorf("mounter args\n got %q\nwant %q", mc.Args, wantArgs)
				}
				if psc := ms.SecurityContext; psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != 1001 || psc.RunAsGroup == nil || *psc.RunAsGroup != 1001 {
					t.Errorf("mounter pod securityContext %+v, want uid and gid 1001", psc)
				}
				if !ms.HostNetwork || ms.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
					t.Errorf("mounter hostNetwork %v dnsPolicy %q", ms.HostNetwork, ms.DNSPolicy)
				}
				if md.Spec.Template.Labels["team"] != "storage" || md.Spec.Template.Annotations["note"] != "x" {
					t.Errorf("mounter pod labels %v annotations %v", md.Spec.Template.Labels, md.Spec.Template.Annotations)
				}
			},
		},
		{
			name: "workload identity, every setting",
			values: `
workloadIdentity:
  enabled: true
  audience: https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s
  expirationSeconds: 7200
  provider: //iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s
  stsEndpoint: http://fake-gcp.test:8080/v1/token
  iamCredentialsEndpoint: http://fake-gcp.test:8080
`,
			check: func(t *testing.T, m *manifest) {
				d := only[*storagev1.CSIDriver](t, m, "storage.k8s.io/v1/CSIDriver")
				if len(d.Spec.TokenRequests) != 1 {
					t.Fatalf("tokenRequests %s, want one", jsonOf(d.Spec.TokenRequests))
				}
				tr := d.Spec.TokenRequests[0]
				if tr.Audience != "https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s" ||
					tr.ExpirationSeconds == nil || *tr.ExpirationSeconds != 7200 {
					t.Errorf("tokenRequests[0] %s", jsonOf(tr))
				}
				if d.Spec.RequiresRepublish == nil || !*d.Spec.RequiresRepublish {
					t.Errorf("requiresRepublish %v, want true", d.Spec.RequiresRepublish)
				}
				if d.Spec.PodInfoOnMount == nil || !*d.Spec.PodInfoOnMount {
					t.Error("podInfoOnMount off")
				}
				if notes := m.files["gcsfuse-csi/templates/NOTES.txt"]; !strings.Contains(notes, "auth=workloadIdentity") || !strings.Contains(notes, "republishes") {
					t.Errorf("NOTES.txt does not mention Workload Identity and the republishes:\n%s", notes)
				}
				ds := nodeDaemonSet(t, m)
				c := container(t, &ds.Spec.Template.Spec, driverContainer)
				for _, want := range []string{
					"--token-audience=https://iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s",
					"--workload-identity-provider=//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s",
					"--sts-endpoint=http://fake-gcp.test:8080/v1/token",
					"--iam-credentials-endpoint=http://fake-gcp.test:8080",
				} {
					if !slices.Contains(c.Args, want) {
						t.Errorf("driver args %q lack %q", c.Args, want)
					}
				}
				opts, _, err := driverFlags(c.Args)
				if err != nil {
					t.Fatal(err)
				}
				if opts.STSEndpoint != "http://fake-gcp.test:8080/v1/token" || opts.IAMEndpoint != "http://fake-gcp.test:8080" {
					t.Errorf("driver --sts-endpoint=%q --iam-credentials-endpoint=%q", opts.STSEndpoint, opts.IAMEndpoint)
				}
				// Nothing of it reaches the mounter: the driver exchanges
				// the tokens and hands it credentials.
				md := daemonSet(t, m, "mounter")
				if md == nil {
					t.Fatal("no mounter DaemonSet")
				}
				for _, a := range container(t, &md.Spec.Template.Spec, mounterContainer).Args {
					if strings.Contains(a, "token") || strings.Contains(a, "identity") {
						t.Errorf("mounter arg %q", a)
					}
				}
			},
		},
		{
			name: "workload identity, audience only",
			values: `
workloadIdentity: {enabled: true, audience: gcsfuse-csi}
`,
			check: func(t *testing.T, m *manifest) {
				d := only[*storagev1.CSIDriver](t, m, "storage.k8s.io/v1/CSIDriver")
				if len(d.Spec.TokenRequests) != 1 || d.Spec.TokenRequests[0].Audience != "gcsfuse-csi" ||
					d.Spec.TokenRequests[0].ExpirationSeconds == nil || *d.Spec.TokenRequests[0].ExpirationSeconds != 3600 {
					t.Errorf("tokenRequests %s, want audience gcsfuse-csi for 3600 s", jsonOf(d.Spec.TokenRequests))
				}
				if d.Spec.RequiresRepublish == nil || !*d.Spec.RequiresRepublish {
					t.Errorf("requiresRepublish %v, want true", d.Spec.RequiresRepublish)
				}
				ds := nodeDaemonSet(t, m)
				c := container(t, &ds.Spec.Template.Spec, driverContainer)
				if !slices.Contains(c.Args, "--token-audience=gcsfuse-csi") {
					t.Errorf("driver args %q lack --token-audience=gcsfuse-csi", c.Args)
				}
				// Empty values leave the driver's defaults: no flag at all.
				for _, flag := range []string{"workload-identity-provider", "sts-endpoint", "iam-credentials-endpoint"} {
					if v, ok := argValue(c.Args, flag); ok {
						t.Errorf("driver --%s=%q from an empty value", flag, v)
					}
				}
			},
		},
		{
			name: "workload identity settings while disabled",
			values: `
workloadIdentity:
  enabled: false
  audience: gcsfuse-csi
  provider: //iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/pool/providers/k8s
  stsEndpoint: http://fake-gcp.test:8080/v1/token
`,
			check: func(t *testing.T, m *manifest) {
				d := only[*storagev1.CSIDriver](t, m, "storage.k8s.io/v1/CSIDriver")
				if len(d.Spec.TokenRequests) != 0 || d.Spec.RequiresRepublish != nil {
					t.Errorf("tokenRequests %s requiresRepublish %s with workloadIdentity.enabled=false", jsonOf(d.Spec.TokenRequests), jsonOf(d.Spec.RequiresRepublish))
				}
				if text := m.files["gcsfuse-csi/templates/csidriver.yaml"]; strings.Contains(text, "requiresRepublish:") || strings.Contains(text, "tokenRequests:") {
					t.Errorf("csidriver.yaml sets tokenRequests or requiresRepublish:\n%s", text)
				}
				ds := nodeDaemonSet(t, m)
				for _, a := range container(t, &ds.Spec.Template.Spec, driverContainer).Args {
					for _, flag := range []string{"--token-audience", "--workload-identity-provider", "--sts-endpoint", "--iam-credentials-endpoint"} {
						if strings.HasPrefix(a, flag) {
							t.Errorf("driver arg %q with workloadIdentity.enabled=false", a)
						}
					}
				}
			},
		},
		{
			name: "node credentials from a Secret",
			values: `
driver:
  nodeCredentials: {secretName: gcs-key}
mounter: {uid: 1001}
`,
			check: func(t *testing.T, m *manifest) {
				const keyFile = "/etc/gcsfuse-csi/node-credentials/key.json"
				md := daemonSet(t, m, "mounter")
				if md == nil {
					t.Fatal("no mounter DaemonSet")
				}
				ds := nodeDaemonSet(t, m)
				for _, p := range []struct {
					spec *corev1.PodSpec
					c    string
				}{{&ds.Spec.Template.Spec, driverContainer}, {&md.Spec.Template.Spec, mounterContainer}} {
					c := container(t, p.spec, p.c)
					var env string
					for _, e := range c.Env {
						if e.Name == "GOOGLE_APPLICATION_CREDENTIALS" {
							env = e.Value
						}
					}
					if env != keyFile {
						t.Errorf("%s: GOOGLE_APPLICATION_CREDENTIALS=%q, want %q", p.c, env, keyFile)
					}
					vol, err := volumeOf(p.spec, c, keyFile)
					if err != nil {
						t.Fatal(err)
					}
					mode := int32(0o440)
					want := corev1.SecretVolumeSource{
						SecretName:  "gcs-key",
						Items:       []corev1.KeyToPath{{Key: "key.json", Path: "key.json"}},
						DefaultMode: &mode,
					}
					if vol.Secret == nil || !reflect.DeepEqual(*vol.Secret, want) {
						t.Errorf("%s: key volume %s, want Secret %s", p.c, jsonOf(vol.VolumeSource), jsonOf(want))
					}
				}
				psc := md.Spec.Template.Spec.SecurityContext
				if psc == nil || psc.FSGroup == nil || *psc.FSGroup != 1001 {
					t.Errorf("mounter pod securityContext %s, want fsGroup 1001 (the mounter's gid) so it reads the 0440 key", jsonOf(psc))
				}
				if psc := ds.Spec.Template.Spec.SecurityContext; psc != nil && psc.FSGroup != nil {
					t.Errorf("driver pod fsGroup %d: the driver is root and reads the key as its owner", *psc.FSGroup)
				}
				if notes := m.files["gcsfuse-csi/templates/NOTES.txt"]; !strings.Contains(notes, "create secret generic gcs-key --from-file=key.json=") {
					t.Errorf("NOTES.txt does not tell how to create the Secret gcs-key:\n%s", notes)
				}
			},
		},
		{
			name: "node credentials from a Secret, without the mounter, with the registrar sidecar",
			values: `
driver:
  nodeCredentials: {secretName: gcs-key}
mounter: {enabled: false}
registrar: {mode: sidecar}
`,
			check: func(t *testing.T, m *manifest) {
				ds := nodeDaemonSet(t, m)
				spec := &ds.Spec.Template.Spec
				c := container(t, spec, driverContainer)
				if vol, err := volumeOf(spec, c, "/etc/gcsfuse-csi/node-credentials/key.json"); err != nil || vol.Secret == nil || vol.Secret.SecretName != "gcs-key" {
					t.Errorf("driver key volume %+v (%v)", vol, err)
				}
				for _, vm := range container(t, spec, registrarContainer).VolumeMounts {
					if vm.Name == "node-credentials" {
						t.Error("the registrar mounts the node credentials")
					}
				}
			},
		},
		{
			name: "largest mounter uid",
			values: `
mounter: {uid: 2147483647}
driver:
  nodeCredentials: {secretName: gcs-key}
`,
			check: func(t *testing.T, m *manifest) {
				ds := nodeDaemonSet(t, m)
				if got, _ := argValue(container(t, &ds.Spec.Template.Spec, driverContainer).Args, "mounter-uid"); got != "2147483647" {
					t.Errorf("--mounter-uid=%q, want 2147483647 (not in exponent form)", got)
				}
				if text := m.files["gcsfuse-csi/templates/mounter-daemonset.yaml"]; strings.Contains(text, "e+09") {
					t.Errorf("mounter-daemonset.yaml has a number in exponent form:\n%s", text)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.values)
			checkInvariants(t, m)
			tc.check(t, m)
		})
	}
}

// checkInvariants holds for every values set: what kubelet, the driver and
// least privilege need, computed from the values the chart rendered with.
func checkInvariants(t *testing.T, m *manifest) {
	t.Helper()
	kubeletDir := m.str(t, "kubeletDir")
	driverName := m.str(t, "driverName")
	sidecar := m.str(t, "registrar.mode") == "sidecar"

	// Only these kinds, and RBAC for the controller alone: the node driver
	// and the mounter need no API access.
	controllerOn := m.value(t, "controller.enabled") == true
	allowed := []string{"storage.k8s.io/v1/CSIDriver", "apps/v1/DaemonSet", "v1/ServiceAccount"}
	if controllerOn {
		allowed = append(allowed, controllerKinds...)
	}
	for _, o := range m.objects {
		component := o.meta.GetLabels()["app.kubernetes.io/component"]
		if strings.HasPrefix(o.kind, "rbac.authorization.k8s.io/") && component != "controller" {
			t.Errorf("%v: the node driver needs no Kubernetes API access, so no RBAC objects but the controller's", o)
		} else if !slices.Contains(allowed, o.kind) {
			t.Errorf("%v: unexpected kind (controller.enabled=%v)", o, controllerOn)
		}
		if want := wantNamespace(t, m, o); o.meta.GetNamespace() != want {
			t.Errorf("%v: namespace %q, want %q", o, o.meta.GetNamespace(), want)
		}
	}
	if controllerOn {
		checkController(t, m)
	}

	// The CSIDriver object, exactly.
	d := only[*storagev1.CSIDriver](t, m, "storage.k8s.io/v1/CSIDriver")
	f, tr := false, true
	file := storagev1.FileFSGroupPolicy
	wantSpec := storagev1.CSIDriverSpec{
		AttachRequired:       &f,
		PodInfoOnMount:       &tr,
		VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent, storagev1.VolumeLifecycleEphemeral},
		FSGroupPolicy:        &file,
	}
	// Workload Identity adds the pods' tokens, and the republishes that
	// renew them; without it, neither (republishing every volume about once
	// a minute would be calls for nothing).
	if m.value(t, "workloadIdentity.enabled") == true {
		exp := m.intValue(t, "workloadIdentity.expirationSeconds")
		wantSpec.TokenRequests = []storagev1.TokenRequest{{Audience: m.str(t, "workloadIdentity.audience"), ExpirationSeconds: &exp}}
		wantSpec.RequiresRepublish = &tr
	}
	if d.Name != driverName || !reflect.DeepEqual(d.Spec, wantSpec) {
		got, _ := json.Marshal(d.Spec)
		want, _ := json.Marshal(wantSpec)
		t.Errorf("CSIDriver %q %s, want %q %s", d.Name, got, driverName, want)
	}

	// The DaemonSets: the node driver's, and the mounter's when enabled.
	dss := m.ofKind("apps/v1/DaemonSet")
	wantDS := 1
	if m.value(t, "mounter.enabled") == true {
		wantDS = 2
	}
	if len(dss) != wantDS {
		t.Errorf("%d DaemonSets %v, want %d (mounter.enabled=%v)", len(dss), dss, wantDS, m.value(t, "mounter.enabled"))
	}
	for _, o := range dss {
		checkPodTemplate(t, m, o.obj.(*appsv1.DaemonSet), dss)
	}

	ds := nodeDaemonSet(t, m)
	spec := &ds.Spec.Template.Spec
	c := container(t, spec, driverContainer)
	opts, _, err := driverFlags(c.Args)
	if err != nil {
		t.Fatalf("the driver would refuse its args: %v", err)
	}
	if opts.Endpoint != csiEndpoint || opts.GCSFuseBinary != "/usr/local/bin/gcsfuse" {
		t.Errorf("--endpoint=%q --gcsfuse=%q", opts.Endpoint, opts.GCSFuseBinary)
	}
	if opts.DriverName != driverName {
		t.Errorf("--driver-name=%q, CSIDriver %q", opts.DriverName, driverName)
	}
	// $(VAR) in args only expands for variables the container defines.
	env := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		env[e.Name] = e
	}
	for _, a := range c.Args {
		for _, ref := range envRef.FindAllStringSubmatch(a, -1) {
			if _, ok := env[ref[1]]; !ok {
				t.Errorf("arg %q refers to $(%s), which the container does not define", a, ref[1])
			}
		}
	}
	if opts.NodeID != "$(NODE_NAME)" {
		t.Errorf("--node-id=%q, want $(NODE_NAME)", opts.NodeID)
	}
	if e := env["NODE_NAME"]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "spec.nodeName" {
		t.Errorf("NODE_NAME %+v, want the downward API spec.nodeName", e)
	}

	// The kubelet dir: same path inside, Bidirectional, and the only
	// Bidirectional mount.
	var bidi []string
	for _, vm := range c.VolumeMounts {
		if vm.MountPropagation != nil && *vm.MountPropagation == corev1.MountPropagationBidirectional {
			bidi = append(bidi, vm.MountPath)
			if host, _, err := hostPathOf(spec, c, vm.MountPath); err != nil || host != kubeletDir {
				t.Errorf("Bidirectional mount %s is host %q (%v), want the kubelet dir %q", vm.MountPath, host, err, kubeletDir)
			}
		}
	}
	if !slices.Equal(bidi, []string{kubeletDir}) {
		t.Errorf("Bidirectional mounts %q, want exactly the kubelet dir %q", bidi, kubeletDir)
	}
	// The state dir is under it, at the same path as on the host, so the
	// inline mounts the driver makes there live in the host mount namespace.
	if host, vm, err := hostPathOf(spec, c, opts.StateDir); err != nil {
		t.Error(err)
	} else if host != opts.StateDir || vm.MountPropagation == nil || *vm.MountPropagation != corev1.MountPropagationBidirectional {
		t.Errorf("--state-dir=%q is host %q on mount %s (propagation %v), want the same path on the Bidirectional kubelet dir mount", opts.StateDir, host, vm.MountPath, vm.MountPropagation)
	}
	if want := filepath.Join(kubeletDir, "plugins", driverName+"-state"); opts.StateDir != want {
		t.Errorf("--state-dir=%q, want %q", opts.StateDir, want)
	}
	// ... and seen by no container at a second path: a container started
	// while inline volumes are mounted would get a copy of each there (the
	// runtime bind-mounts volumes recursively), which does not follow the
	// host's unmount and which the driver would count as another user of
	// the inline session.
	for _, ct := range spec.Containers {
		for _, vm := range ct.VolumeMounts {
			for _, v := range spec.Volumes {
				if v.Name != vm.Name || v.HostPath == nil || vm.MountPath == v.HostPath.Path {
					continue
				}
				if h := v.HostPath.Path; opts.StateDir == h || strings.HasPrefix(opts.StateDir, strings.TrimSuffix(h, "/")+"/") {
					t.Errorf("container %s: volume %s (host %s) at %s shows the state dir %s a second time", ct.Name, v.Name, h, vm.MountPath, opts.StateDir)
				}
			}
		}
	}
	// /dev/fuse comes from the host.
	if host, _, err := hostPathOf(spec, c, "/dev/fuse"); err != nil || host != "/dev/fuse" {
		t.Errorf("/dev/fuse is host %q (%v)", host, err)
	}

	// Where kubelet finds the CSI socket: the driver's endpoint seen from
	// the host must be the registration path, in either mode.
	sockHost, _, err := hostPathOf(spec, c, unixPath(t, opts.Endpoint))
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(kubeletDir, "plugins", driverName, "csi.sock"); sockHost != want {
		t.Errorf("CSI socket is host %q, want %q", sockHost, want)
	}
	regContainer, regDir, regPath := c, opts.RegistrationDir, opts.KubeletRegistrationPath
	if sidecar {
		if opts.RegistrationDir != "" || opts.KubeletRegistrationPath != "" {
			t.Error("driver registers itself in sidecar mode")
		}
		regContainer = container(t, spec, registrarContainer)
		regDir = "/registration" // the sidecar's fixed dir
		regPath, _ = argValue(regContainer.Args, "kubelet-registration-path")
		addr, _ := argValue(regContainer.Args, "csi-address")
		if h, _, err := hostPathOf(spec, regContainer, addr); err != nil || h != sockHost {
			t.Errorf("registrar --csi-address=%q is host %q (%v), the driver serves host %q", addr, h, err, sockHost)
		}
	} else {
		for _, n := range containerNames(spec) {
			if n != driverContainer {
				t.Errorf("container %q in builtin registration mode", n)
			}
		}
		if regDir == "" {
			t.Fatal("builtin mode without --registration-dir")
		}
	}
	if regPath != sockHost {
		t.Errorf("%s: kubelet registration path %q, the CSI socket is host %q", regContainer.Name, regPath, sockHost)
	}
	if h, _, err := hostPathOf(spec, regContainer, regDir); err != nil || h != filepath.Join(kubeletDir, "plugins_registry") {
		t.Errorf("%s: registration dir %q is host %q (%v), want kubelet's %s/plugins_registry", regContainer.Name, regDir, h, err, kubeletDir)
	}

	// Liveness: the driver's own probe command against its CSI Probe.
	wantProbe := []string{"/usr/local/bin/gcsfuse-csi", "probe", "--endpoint=" + csiEndpoint}
	if p := c.LivenessProbe; p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, wantProbe) {
		t.Errorf("liveness probe %+v, want exec %q", p, wantProbe)
	}

	checkMounter(t, m, ds)
	checkCredentials(t, m, ds)
}

// checkPodTemplate holds for each DaemonSet: its selector selects its own
// pods and no other DaemonSet's, no API token, the chart's ServiceAccount,
// every volume defined once and mounted, privilege for the driver container
// alone.
func checkPodTemplate(t *testing.T, m *manifest, ds *appsv1.DaemonSet, all []object) {
	t.Helper()
	spec := &ds.Spec.Template.Spec
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not select the pod template's labels %v (%v)", ds.Name, ds.Spec.Selector, ds.Spec.Template.Labels, err)
	}
	for _, o := range all {
		other := o.obj.(*appsv1.DaemonSet)
		if other.Name != ds.Name && sel.Matches(labels.Set(other.Spec.Template.Labels)) {
			t.Errorf("%s: selector %v also selects the pods of %s: the two controllers would fight over them", ds.Name, ds.Spec.Selector, other.Name)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: pod automountServiceAccountToken is not false: no API token is needed", ds.Name)
	}
	if want := m.str(t, "node.serviceAccount.name"); want != "" && spec.ServiceAccountName != want {
		t.Errorf("%s: pods use ServiceAccount %q, node.serviceAccount.name is %q", ds.Name, spec.ServiceAccountName, want)
	}
	for _, o := range m.ofKind("v1/ServiceAccount") {
		sa := o.obj.(*corev1.ServiceAccount)
		if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
			t.Errorf("ServiceAccount %s: automountServiceAccountToken is not false", sa.Name)
		}
		if sa.Labels["app.kubernetes.io/component"] == "controller" {
			continue // the controller's, checked by checkController
		}
		if spec.ServiceAccountName != sa.Name {
			t.Errorf("%s: pods use ServiceAccount %q, the chart creates %q", ds.Name, spec.ServiceAccountName, sa.Name)
		}
	}

	// Volumes and mounts are consistent.
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if volumes[v.Name] {
			t.Errorf("%s: volume %q twice", ds.Name, v.Name)
		}
		volumes[v.Name] = true
	}
	used := map[string]bool{}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for _, vm := range c.VolumeMounts {
			if !volumes[vm.Name] {
				t.Errorf("%s: container %s mounts undefined volume %q", ds.Name, c.Name, vm.Name)
			}
			used[vm.Name] = true
		}
		// Privilege belongs to the driver container alone.
		priv := c.SecurityContext != nil && c.SecurityContext.Privileged != nil && *c.SecurityContext.Privileged
		if priv != (c.Name == driverContainer) {
			t.Errorf("%s: container %s: privileged=%v; only %s may be (and must be) privileged", ds.Name, c.Name, priv, driverContainer)
		}
	}
	for name := range volumes {
		if !used[name] {
			t.Errorf("%s: volume %q is mounted nowhere", ds.Name, name)
		}
	}
}

// TestStrictDecodeRejects makes sure the decoder the other tests rely on is
// strict: a misspelt field, a wrong type and an unknown kind all fail.
func TestStrictDecodeRejects(t *testing.T) {
	for name, doc := range map[string]string{
		"unknown field": `
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x}
spec:
  template:
    spec:
      containers: [{name: c, image: i, securityContxt: {privileged: true}}]
`,
		"wrong type":   "apiVersion: storage.k8s.io/v1\nkind: CSIDriver\nmetadata: {name: x}\nspec: {attachRequired: \"no\"}\n",
		"duplicate":    "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\nautomountServiceAccountToken: false\nautomountServiceAccountToken: true\n",
		"unknown kind": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
		"no name":      "apiVersion: v1\nkind: ServiceAccount\nmetadata: {}\n",
	} {
		if objs, err := decodeStrict(name, []byte(doc)); err == nil {
			t.Errorf("%s: decoded %v, want an error", name, objs)
		}
	}
	if objs, err := decodeStrict("ok", []byte("# a comment\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n---\n")); err != nil || len(objs) != 1 {
		t.Errorf("a valid document: %v %v", objs, err)
	}
}

// TestHelmLint runs what `helm lint --strict` runs, with each registrar mode,
// without the mounter, and with the credential settings.
func TestHelmLint(t *testing.T) {
	for _, overlay := range []string{
		"",
		"registrar: {mode: sidecar}",
		"mounter: {enabled: false}",
		"{workloadIdentity: {enabled: true, audience: aud}, driver: {nodeCredentials: {secretName: gcs-key}}}",
	} {
		l := lint.All(chartDir, parseValues(t, overlay), releaseNS, true)
		for _, msg := range l.Messages {
			if msg.Severity >= support.WarningSev {
				t.Errorf("helm lint (values %q): %v", overlay, msg)
			} else {
				t.Logf("helm lint (values %q): %v", overlay, msg)
			}
		}
	}
}

// Chart.yaml carries the name and versions the image and docs rely on.
func TestChartMetadata(t *testing.T) {
	c := loadChart(t)
	md := c.Metadata
	got := fmt.Sprintf("%s %s %s %s", md.APIVersion, md.Name, md.Version, md.AppVersion)
	if want := "v2 gcsfuse-csi 0.1.0 0.1.0"; got != want {
		t.Errorf("Chart.yaml: %q, want %q", got, want)
	}
	if c.Schema == nil {
		t.Error("the chart has no values.schema.json")
	}
}
