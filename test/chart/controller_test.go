package chart

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
)

// controllerKinds are the kinds controller.enabled adds.
var controllerKinds = []string{
	"apps/v1/Deployment",
	"rbac.authorization.k8s.io/v1/ClusterRole", "rbac.authorization.k8s.io/v1/ClusterRoleBinding",
	"rbac.authorization.k8s.io/v1/Role", "rbac.authorization.k8s.io/v1/RoleBinding",
}

const (
	provisionerContainer = "csi-provisioner"
	resizerContainer     = "csi-resizer"
	apiTokenDir          = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// wantNamespace is where object o belongs: nowhere for cluster-scoped
// kinds, a listed controller.secretNamespaces entry for the Secret Roles,
// the release namespace for everything else.
func wantNamespace(t *testing.T, m *manifest, o object) string {
	t.Helper()
	switch o.kind {
	case "storage.k8s.io/v1/CSIDriver", "rbac.authorization.k8s.io/v1/ClusterRole", "rbac.authorization.k8s.io/v1/ClusterRoleBinding":
		return ""
	case "rbac.authorization.k8s.io/v1/Role", "rbac.authorization.k8s.io/v1/RoleBinding":
		if strings.HasSuffix(o.meta.GetName(), "-secrets") {
			if slices.Contains(secretNamespaces(t, m), o.meta.GetNamespace()) {
				return o.meta.GetNamespace()
			}
			return fmt.Sprintf("one of controller.secretNamespaces %q", secretNamespaces(t, m))
		}
	}
	return releaseNS
}

func secretNamespaces(t *testing.T, m *manifest) []string {
	t.Helper()
	var out []string
	for _, v := range m.value(t, "controller.secretNamespaces").([]any) {
		out = append(out, v.(string))
	}
	return out
}

// controllerFlags parses the controller container's args with the
// controller's own flag set and validates them as it would at start.
func controllerFlags(args []string) (driver.ControllerOptions, int, error) {
	var opts driver.ControllerOptions
	v, err := modeFlags("controller", args, opts.AddFlags, opts.Validate)
	return opts, v, err
}

// permission is one (API group, resource, verb) a rule grants.
type permission struct{ group, resource, verb string }

func permissions(t *testing.T, who string, rules []rbacv1.PolicyRule) []permission {
	t.Helper()
	var out []permission
	for _, r := range rules {
		if len(r.ResourceNames) > 0 || len(r.NonResourceURLs) > 0 {
			t.Errorf("%s: rule %+v: resourceNames and nonResourceURLs are not expected", who, r)
		}
		for _, g := range r.APIGroups {
			for _, res := range r.Resources {
				for _, v := range r.Verbs {
					if g == "*" || res == "*" || v == "*" {
						t.Errorf("%s: wildcard in %+v", who, r)
					}
					out = append(out, permission{g, res, v})
				}
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}

func grants(group, resource string, verbs ...string) []permission {
	var out []permission
	for _, v := range verbs {
		out = append(out, permission{group, resource, v})
	}
	return out
}

// wantClusterPermissions is everything the two sidecars may do
// cluster-wide: no more (least privilege), no less (they would fail).
var wantClusterPermissions = slices.Concat(
	grants("", "persistentvolumes", "get", "list", "watch", "create", "delete", "patch"),
	grants("", "persistentvolumeclaims", "get", "list", "watch", "update"),
	grants("", "persistentvolumeclaims/status", "patch"),
	grants("storage.k8s.io", "storageclasses", "get", "list", "watch"),
	grants("", "events", "list", "watch", "create", "update", "patch"),
	grants("", "nodes", "get", "list", "watch"),
)

// checkController holds for every rendering with controller.enabled.
func checkController(t *testing.T, m *manifest) {
	t.Helper()
	d := only[*appsv1.Deployment](t, m, "apps/v1/Deployment")
	if d.Name != "gcsfuse-csi-controller" || d.Namespace != releaseNS {
		t.Errorf("Deployment %s/%s, want %s/gcsfuse-csi-controller", d.Namespace, d.Name, releaseNS)
	}
	if d.Spec.Replicas == nil || int64(*d.Spec.Replicas) != m.intValue(t, "controller.replicas") {
		t.Errorf("replicas %v, controller.replicas %d", d.Spec.Replicas, m.intValue(t, "controller.replicas"))
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil || sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not select the pod template's labels %v (%v)", d.Spec.Selector, d.Spec.Template.Labels, err)
	}
	for _, o := range m.ofKind("apps/v1/DaemonSet") {
		ds := o.obj.(*appsv1.DaemonSet)
		other, _ := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
		if sel.Matches(labels.Set(ds.Spec.Template.Labels)) || other.Matches(labels.Set(d.Spec.Template.Labels)) {
			t.Errorf("the controller's and %s's selectors overlap", ds.Name)
		}
	}
	spec := &d.Spec.Template.Spec
	if got := containerNames(spec); !slices.Equal(got, []string{driverContainer, provisionerContainer, resizerContainer}) {
		t.Fatalf("containers %q", got)
	}

	// The driver in controller mode, with the chart's settings.
	c := container(t, spec, driverContainer)
	opts, v, err := controllerFlags(c.Args)
	if err != nil {
		t.Fatalf("the controller would refuse its args: %v", err)
	}
	if opts.DriverName != m.str(t, "driverName") || opts.GCSEndpoint != m.str(t, "driver.gcsEndpoint") ||
		opts.Anonymous != (m.value(t, "driver.anonymous") == true) || opts.BucketNamePrefix != m.str(t, "controller.bucketNamePrefix") ||
		opts.ProjectID != m.str(t, "controller.projectID") || opts.BucketLabelMarker != (m.value(t, "controller.bucketLabelMarker") == true) ||
		int64(v) != m.intValue(t, "driver.logVerbosity") {
		t.Errorf("controller flags %+v -v=%d do not follow the values", opts, v)
	}
	node := container(t, &nodeDaemonSet(t, m).Spec.Template.Spec, driverContainer)
	if c.Image != node.Image || c.ImagePullPolicy != node.ImagePullPolicy || len(c.Command) != 0 {
		t.Errorf("controller image %q %q command %q, want the node's %q and its entrypoint", c.Image, c.ImagePullPolicy, c.Command, node.Image)
	}
	wantProbe := []string{"/usr/local/bin/gcsfuse-csi", "probe", "--endpoint=" + opts.Endpoint}
	if p := c.LivenessProbe; p == nil || p.Exec == nil || !slices.Equal(p.Exec.Command, wantProbe) {
		t.Errorf("controller liveness probe %+v, want exec %q", p, wantProbe)
	}

	// One socket: the driver's endpoint is the sidecars' --csi-address, on
	// an emptyDir shared by these three containers only.
	sock := unixPath(t, opts.Endpoint)
	sockVol, err := volumeOf(spec, c, sock)
	if err != nil || sockVol.EmptyDir == nil {
		t.Fatalf("controller socket %s on %+v (%v), want an emptyDir", sock, sockVol, err)
	}
	for _, name := range []string{provisionerContainer, resizerContainer} {
		sc := container(t, spec, name)
		addr, _ := argValue(sc.Args, "csi-address")
		vol, err := volumeOf(spec, sc, addr)
		if err != nil || vol.Name != sockVol.Name || addr != sock {
			t.Errorf("%s --csi-address=%q on %+v (%v); the driver serves %s on %s", name, addr, vol, err, sock, sockVol.Name)
		}
		// Leader election, in the release namespace.
		if !slices.Contains(sc.Args, "--leader-election") || !slices.Contains(sc.Args, "--leader-election-namespace=$(POD_NAMESPACE)") {
			t.Errorf("%s args %q: want --leader-election in $(POD_NAMESPACE)", name, sc.Args)
		}
		var ns *corev1.EnvVar
		for i := range sc.Env {
			if sc.Env[i].Name == "POD_NAMESPACE" {
				ns = &sc.Env[i]
			}
		}
		if ns == nil || ns.ValueFrom == nil || ns.ValueFrom.FieldRef == nil || ns.ValueFrom.FieldRef.FieldPath != "metadata.namespace" {
			t.Errorf("%s: POD_NAMESPACE %+v, want the downward API metadata.namespace", name, ns)
		}
		if got, _ := argValue(sc.Args, "timeout"); got != m.str(t, "controller.provisioner.timeout") {
			t.Errorf("%s --timeout=%q, want controller.provisioner.timeout %q", name, got, m.str(t, "controller.provisioner.timeout"))
		}
		// The API token: in the sidecars, at client-go's in-cluster path.
		if vol, err := volumeOf(spec, sc, apiTokenDir+"/token"); err != nil || vol.Projected == nil {
			t.Errorf("%s: no projected API token at %s (%+v, %v)", name, apiTokenDir, vol, err)
		}
	}
	if r := container(t, spec, resizerContainer); !slices.Contains(r.Args, "--handle-volume-inuse-error=false") {
		t.Errorf("resizer args %q: without --handle-volume-inuse-error=false it watches pods, which its ClusterRole does not allow", r.Args)
	}
	for _, vm := range c.VolumeMounts {
		if vm.MountPath == apiTokenDir || strings.HasPrefix(apiTokenDir, vm.MountPath+"/") {
			t.Errorf("the driver container mounts the API token (%s): it holds GCS credentials and needs no API access", vm.Name)
		}
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("controller pod automountServiceAccountToken is not false: every container, the driver too, would get the API token")
	}
	for _, v := range spec.Volumes {
		if v.Projected == nil {
			continue
		}
		for _, src := range v.Projected.Sources {
			if tok := src.ServiceAccountToken; tok != nil && tok.Audience != "" {
				t.Errorf("projected token with audience %q: the API server's default audience is needed", tok.Audience)
			}
		}
	}

	// No privilege anywhere: the restricted Pod Security Standard, and a
	// read-only root file system in every container.
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	if res := policy.AggregateCheckResults(eval.EvaluatePod(restricted, &d.Spec.Template.ObjectMeta, spec)); !res.Allowed {
		t.Errorf("PodSecurity restricted refuses the controller pod: %s", res.ForbiddenDetail())
	}
	for _, ct := range spec.Containers {
		sc := ct.SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.Privileged == nil || *sc.Privileged {
			t.Errorf("container %s: securityContext %+v, want readOnlyRootFilesystem and not privileged", ct.Name, sc)
		}
		for _, vm := range ct.VolumeMounts {
			if vol, _ := volumeOf(spec, &ct, vm.MountPath); vol != nil && vol.HostPath != nil {
				t.Errorf("container %s: hostPath %s", ct.Name, vol.HostPath.Path)
			}
		}
	}

	// The node credentials, when set, for the driver container only.
	if name := m.str(t, "driver.nodeCredentials.secretName"); name != "" {
		vol, err := volumeOf(spec, c, "/etc/gcsfuse-csi/node-credentials/key.json")
		if err != nil || vol.Secret == nil || vol.Secret.SecretName != name {
			t.Errorf("controller key volume %+v (%v), want Secret %s", vol, err, name)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			env[e.Name] = e.Value
		}
		if env["GOOGLE_APPLICATION_CREDENTIALS"] != "/etc/gcsfuse-csi/node-credentials/key.json" {
			t.Errorf("controller env %v", env)
		}
		if psc := spec.SecurityContext; psc == nil || psc.FSGroup == nil || psc.RunAsGroup == nil || *psc.FSGroup != *psc.RunAsGroup {
			t.Errorf("controller pod securityContext %+v: the 0440 key file must belong to the pod's gid", psc)
		}
		for _, name := range []string{provisionerContainer, resizerContainer} {
			for _, vm := range container(t, spec, name).VolumeMounts {
				if vm.Name == "node-credentials" {
					t.Errorf("%s mounts the node credentials", name)
				}
			}
		}
	}

	checkControllerRBAC(t, m, spec.ServiceAccountName)
}

// checkControllerRBAC: the controller's ServiceAccount gets exactly
// wantClusterPermissions, Leases in the release namespace, and Secrets
// (get) in each controller.secretNamespaces entry, through bindings to
// that ServiceAccount alone.
func checkControllerRBAC(t *testing.T, m *manifest, account string) {
	t.Helper()
	if want := m.str(t, "controller.serviceAccount.name"); want != "" && account != want {
		t.Errorf("controller pods use ServiceAccount %q, controller.serviceAccount.name is %q", account, want)
	}
	var sa *corev1.ServiceAccount
	for _, o := range m.ofKind("v1/ServiceAccount") {
		if o.meta.GetName() == account {
			sa = o.obj.(*corev1.ServiceAccount)
		}
	}
	if (sa != nil) != (m.value(t, "controller.serviceAccount.create") == true) {
		t.Errorf("ServiceAccount %s rendered: %v, controller.serviceAccount.create: %v", account, sa != nil, m.value(t, "controller.serviceAccount.create"))
	}
	if sa != nil && (sa.Namespace != releaseNS || sa.Labels["app.kubernetes.io/component"] != "controller") {
		t.Errorf("ServiceAccount %s/%s labels %v", sa.Namespace, sa.Name, sa.Labels)
	}
	subject := rbacv1.Subject{Kind: "ServiceAccount", Name: account, Namespace: releaseNS}

	roles := map[string][]permission{} // "namespace/name" ("/name" for ClusterRoles) -> permissions
	for _, o := range m.ofKind("rbac.authorization.k8s.io/v1/ClusterRole") {
		r := o.obj.(*rbacv1.ClusterRole)
		roles["/"+r.Name] = permissions(t, "ClusterRole "+r.Name, r.Rules)
	}
	for _, o := range m.ofKind("rbac.authorization.k8s.io/v1/Role") {
		r := o.obj.(*rbacv1.Role)
		roles[r.Namespace+"/"+r.Name] = permissions(t, "Role "+r.Namespace+"/"+r.Name, r.Rules)
	}
	// What the account may do, by namespace ("" cluster-wide).
	granted := map[string][]permission{}
	for _, o := range m.ofKind("rbac.authorization.k8s.io/v1/ClusterRoleBinding") {
		b := o.obj.(*rbacv1.ClusterRoleBinding)
		if !slices.Equal(b.Subjects, []rbacv1.Subject{subject}) || b.RoleRef.Kind != "ClusterRole" {
			t.Errorf("ClusterRoleBinding %s: subjects %+v roleRef %+v, want the controller's ServiceAccount alone", b.Name, b.Subjects, b.RoleRef)
		}
		granted[""] = append(granted[""], roles["/"+b.RoleRef.Name]...)
	}
	for _, o := range m.ofKind("rbac.authorization.k8s.io/v1/RoleBinding") {
		b := o.obj.(*rbacv1.RoleBinding)
		if !slices.Equal(b.Subjects, []rbacv1.Subject{subject}) || b.RoleRef.Kind != "Role" {
			t.Errorf("RoleBinding %s/%s: subjects %+v roleRef %+v, want the controller's ServiceAccount and a Role", b.Namespace, b.Name, b.Subjects, b.RoleRef)
		}
		p, ok := roles[b.Namespace+"/"+b.RoleRef.Name]
		if !ok {
			t.Errorf("RoleBinding %s/%s: no Role %s in its namespace", b.Namespace, b.Name, b.RoleRef.Name)
		}
		granted[b.Namespace] = append(granted[b.Namespace], p...)
	}
	want := map[string][]permission{
		"":        wantClusterPermissions,
		releaseNS: grants("coordination.k8s.io", "leases", "get", "watch", "list", "delete", "update", "create"),
	}
	for _, ns := range secretNamespaces(t, m) {
		want[ns] = append(want[ns], grants("", "secrets", "get")...)
	}
	for ns := range want {
		sort.Slice(want[ns], func(i, j int) bool { return fmt.Sprint(want[ns][i]) < fmt.Sprint(want[ns][j]) })
	}
	if fmt.Sprint(granted) != fmt.Sprint(want) {
		t.Errorf("the controller's ServiceAccount may do\n%v\nwant exactly\n%v", granted, want)
	}
}

// TestControllerRender renders the chart with the controller on.
func TestControllerRender(t *testing.T) {
	tests := []struct {
		name, values string
		check        func(t *testing.T, m *manifest)
	}{
		{
			name:   "defaults",
			values: "controller: {enabled: true}",
			check: func(t *testing.T, m *manifest) {
				spec := &only[*appsv1.Deployment](t, m, "apps/v1/Deployment").Spec.Template.Spec
				for name, want := range map[string][]string{
					driverContainer:      {"controller", "--endpoint=unix:///csi/csi.sock", "--driver-name=gcsfuse-csi.github.io", "-v=2"},
					provisionerContainer: {"--csi-address=/csi/csi.sock", "--leader-election", "--leader-election-namespace=$(POD_NAMESPACE)", "--timeout=60s", "--v=2"},
					resizerContainer:     {"--csi-address=/csi/csi.sock", "--leader-election", "--leader-election-namespace=$(POD_NAMESPACE)", "--timeout=60s", "--handle-volume-inuse-error=false", "--v=2"},
				} {
					if got := container(t, spec, name).Args; !slices.Equal(got, want) {
						t.Errorf("%s args\n got %q\nwant %q", name, got, want)
					}
				}
				if got := container(t, spec, provisionerContainer).Image; got != "registry.k8s.io/sig-storage/csi-provisioner:v5.2.0" {
					t.Errorf("provisioner image %q", got)
				}
				if got := container(t, spec, resizerContainer).Image; got != "registry.k8s.io/sig-storage/csi-resizer:v1.13.2" {
					t.Errorf("resizer image %q", got)
				}
				if spec.ServiceAccountName != "gcsfuse-csi-controller" {
					t.Errorf("serviceAccountName %q", spec.ServiceAccountName)
				}
				for _, o := range m.ofKind("rbac.authorization.k8s.io/v1/Role") {
					if strings.HasSuffix(o.meta.GetName(), "-secrets") {
						t.Errorf("%v: Secret access by default", o)
					}
				}
				if notes := m.files["gcsfuse-csi/templates/NOTES.txt"]; !strings.Contains(notes, "component=controller") || !strings.Contains(notes, "StorageClass") {
					t.Errorf("NOTES.txt does not say where the controller runs and how to use it:\n%s", notes)
				}
			},
		},
		{
			name: "every setting",
			values: `
driverName: gcs.example.com
driver:
  gcsEndpoint: http://fake-gcs.gcs.svc.cluster.local:4443/storage/v1/
  anonymous: true
  logVerbosity: 4
  nodeCredentials: {secretName: gcs-key}
controller:
  enabled: true
  replicas: 2
  bucketNamePrefix: team-a-
  projectID: my-project
  bucketLabelMarker: true
  secretNamespaces: [team-a, team-b]
  extraArgs: [--vmodule=provisioner=5]
  priorityClassName: system-cluster-critical
  serviceAccount: {create: false, name: csi-ctrl}
  provisioner:
    image: {repository: mirror.example.com/csi-provisioner, tag: v5.2.1, pullPolicy: Always}
    timeout: 5m
  resizer:
    image: {repository: mirror.example.com/csi-resizer, tag: v1.13.3}
`,
			check: func(t *testing.T, m *manifest) {
				d := only[*appsv1.Deployment](t, m, "apps/v1/Deployment")
				spec := &d.Spec.Template.Spec
				want := []string{"controller", "--endpoint=unix:///csi/csi.sock", "--driver-name=gcs.example.com",
					"--gcs-endpoint=http://fake-gcs.gcs.svc.cluster.local:4443/storage/v1/", "--anonymous",
					"--bucket-name-prefix=team-a-", "--project-id=my-project", "--bucket-label-marker", "-v=4", "--vmodule=provisioner=5"}
				if got := container(t, spec, driverContainer).Args; !slices.Equal(got, want) {
					t.Errorf("controller args\n got %q\nwant %q", got, want)
				}
				p := container(t, spec, provisionerContainer)
				if p.Image != "mirror.example.com/csi-provisioner:v5.2.1" || p.ImagePullPolicy != corev1.PullAlways {
					t.Errorf("provisioner image %q %q", p.Image, p.ImagePullPolicy)
				}
				if r := container(t, spec, resizerContainer); r.Image != "mirror.example.com/csi-resizer:v1.13.3" {
					t.Errorf("resizer image %q", r.Image)
				}
				if spec.ServiceAccountName != "csi-ctrl" || spec.PriorityClassName != "system-cluster-critical" || *d.Spec.Replicas != 2 {
					t.Errorf("serviceAccountName %q priorityClassName %q replicas %d", spec.ServiceAccountName, spec.PriorityClassName, *d.Spec.Replicas)
				}
				var secretRoles []string
				for _, o := range m.ofKind("rbac.authorization.k8s.io/v1/Role") {
					if strings.HasSuffix(o.meta.GetName(), "-secrets") {
						secretRoles = append(secretRoles, o.meta.GetNamespace())
					}
				}
				if !slices.Equal(secretRoles, []string{"team-a", "team-b"}) {
					t.Errorf("Secret Roles in %q, want team-a and team-b", secretRoles)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.values)
			checkInvariants(t, m) // calls checkController
			tc.check(t, m)
		})
	}
}

// TestControllerSchema: bad controller values are refused, naming the key.
func TestControllerSchema(t *testing.T) {
	c := loadChart(t)
	for _, tc := range []struct{ values, want string }{
		{"controller: {enabled: 'yes'}", "/controller/enabled"},
		{"controller: {replicas: 0}", "/controller/replicas"},
		{"controller: {bucketNamePrefix: Team-A}", "/controller/bucketNamePrefix"},
		{"controller: {bucketNamePrefix: goog-}", "/controller/bucketNamePrefix"},
		{"controller: {bucketNamePrefix: my-google-}", "/controller/bucketNamePrefix"},
		{"controller: {bucketNamePrefix: " + strings.Repeat("a", 41) + "}", "/controller/bucketNamePrefix"},
		{"controller: {projectID: My_Project}", "/controller/projectID"},
		{"controller: {secretNamespaces: [team-a, team-a]}", "/controller/secretNamespaces"},
		{"controller: {secretNamespaces: [Team_A]}", "/controller/secretNamespaces/0"},
		{"controller: {extraArgs: [--driver-name=x]}", "/controller/extraArgs/0"},
		{"controller: {extraArgs: [-bucket-label-marker]}", "/controller/extraArgs/0"},
		{"controller: {provisioner: {timeout: 1h}}", "/controller/provisioner/timeout"},
		{"controller: {provisioner: {timeout: '60'}}", "/controller/provisioner/timeout"},
		{"controller: {resizer: {image: {pullPolicy: always}}}", "/controller/resizer/image/pullPolicy"},
		{"controller: {leaderElection: false}", "leaderElection"},
		{"controller: {serviceAccount: {name: Bad}}", "/controller/serviceAccount/name"},
	} {
		_, err := renderChart(c, parseValues(t, tc.values))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("values %q: %v, want a schema error naming %s", tc.values, err, tc.want)
		}
	}
	for _, ok := range []string{
		"controller: {enabled: true, bucketNamePrefix: " + strings.Repeat("a", 40) + "}",
		"controller: {enabled: true, projectID: example.com:my-project, replicas: 3, provisioner: {timeout: 10m}}",
	} {
		if _, err := renderChart(c, parseValues(t, ok)); err != nil {
			t.Errorf("values %q: %v", ok, err)
		}
	}
}

// TestControllerLint runs what `helm lint --strict` runs with the
// controller on.
func TestControllerLint(t *testing.T) {
	for _, overlay := range []string{
		"controller: {enabled: true}",
		"{controller: {enabled: true, secretNamespaces: [a, b]}, driver: {nodeCredentials: {secretName: gcs-key}}}",
	} {
		l := lint.All(chartDir, parseValues(t, overlay), releaseNS, true)
		for _, msg := range l.Messages {
			if msg.Severity >= support.WarningSev {
				t.Errorf("helm lint (values %q): %v", overlay, msg)
			}
		}
	}
}
