package chart

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/controller"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// restrictedVolume reports whether the restricted Pod Security Standard
// allows the volume's type.
func restrictedVolume(v corev1.VolumeSource) bool {
	return v.ConfigMap != nil || v.CSI != nil || v.DownwardAPI != nil || v.EmptyDir != nil ||
		v.Ephemeral != nil || v.PersistentVolumeClaim != nil || v.Projected != nil || v.Secret != nil
}

// TestExamples decodes the examples strictly and checks that they work as
// written: the pods pass the restricted Pod Security Standard (by field, and
// by the evaluator kube-apiserver's PodSecurity admission uses), run in a
// namespace that enforces it, use the chart's default driver name, ask for
// volume attributes and mount options the driver accepts, and get their
// credentials the way the driver expects (see checkExampleCredentials).
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(examplesDir + "/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s (%v)", examplesDir, err)
	}
	var objs []object
	texts := map[string]string{} // file name -> contents
	for _, f := range files {
		text := readFile(t, f)
		texts[filepath.Base(f)] = string(text)
		o, err := decodeStrict(filepath.Base(f), text)
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	// kubectl apply -f examples/ must not apply two different objects
	// under one name.
	seen := map[string]object{}
	for _, o := range objs {
		id := o.kind + " " + o.meta.GetNamespace() + "/" + o.meta.GetName()
		if prev, dup := seen[id]; dup {
			t.Errorf("%v and %v: the same object twice", prev, o)
		}
		seen[id] = o
	}
	m := render(t, "")
	driverName := m.str(t, "driverName")

	var (
		namespaces = map[string]*corev1.Namespace{}
		pvs        = map[string]*corev1.PersistentVolume{}
		pvcs       = map[string]*corev1.PersistentVolumeClaim{}
		secrets    = map[string]*corev1.Secret{}
		accounts   = map[string]*corev1.ServiceAccount{}
		classes    = map[string]*storagev1.StorageClass{}
		pods       []*corev1.Pod
		podFile    = map[*corev1.Pod]string{}
	)
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *corev1.Namespace:
			namespaces[x.Name] = x
		case *corev1.PersistentVolume:
			pvs[x.Name] = x
		case *corev1.PersistentVolumeClaim:
			pvcs[x.Namespace+"/"+x.Name] = x
		case *corev1.Secret:
			secrets[x.Namespace+"/"+x.Name] = x
			checkExampleSecret(t, x)
		case *corev1.ServiceAccount:
			accounts[x.Namespace+"/"+x.Name] = x
		case *corev1.Pod:
			pods = append(pods, x)
			podFile[x] = o.source
		case *storagev1.StorageClass:
			classes[x.Name] = x
		default:
			t.Errorf("%v: the examples hold namespaces, PVs, PVCs, Secrets, ServiceAccounts, StorageClasses and pods only", o)
		}
	}
	for _, o := range objs {
		if ns := o.meta.GetNamespace(); ns != "" && namespaces[ns] == nil {
			t.Errorf("%v: namespace %q is not in the examples", o, ns)
		}
	}
	creds := &exampleCredentials{secrets: secrets, accounts: accounts, texts: texts, used: map[string]bool{}, modes: map[string]bool{}}
	if len(pods) < 2 {
		t.Fatalf("%d example pods, want a static-PV one and an inline one", len(pods))
	}

	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	var sawPVC, sawInline bool
	sawLayout := map[controller.Layout]bool{}
	var sawPublishSecret, sawStageSecret bool
	for _, pod := range pods {
		t.Run(pod.Name, func(t *testing.T) {
			ns := namespaces[pod.Namespace]
			if ns == nil {
				t.Fatalf("namespace %q is not in the examples", pod.Namespace)
			}
			if got := ns.Labels[psapi.EnforceLevelLabel]; got != string(psapi.LevelRestricted) {
				t.Errorf("namespace %s: %s=%q, want restricted", ns.Name, psapi.EnforceLevelLabel, got)
			}
			if res := policy.AggregateCheckResults(eval.EvaluatePod(restricted, &pod.ObjectMeta, &pod.Spec)); !res.Allowed {
				t.Errorf("PodSecurity restricted refuses the pod: %s", res.ForbiddenDetail())
			}
			checkRestrictedFields(t, pod)

			for _, v := range pod.Spec.Volumes {
				switch {
				case v.CSI != nil:
					sawInline = true
					if v.CSI.Driver != driverName {
						t.Errorf("volume %s: driver %q, want the chart's %q", v.Name, v.CSI.Driver, driverName)
					}
					checkDriverAccepts(t, v.CSI.VolumeAttributes["bucketName"], v.CSI.VolumeAttributes, nil, pod)
					var ref *corev1.SecretReference
					if r := v.CSI.NodePublishSecretRef; r != nil {
						// An inline volume's Secret is in the pod's namespace.
						ref, sawPublishSecret = &corev1.SecretReference{Namespace: pod.Namespace, Name: r.Name}, true
					}
					creds.check(t, "volume "+v.Name, podFile[pod], pod, v.CSI.VolumeAttributes, nil, ref, false)
				case v.PersistentVolumeClaim != nil:
					sawPVC = true
					pvc := pvcs[pod.Namespace+"/"+v.PersistentVolumeClaim.ClaimName]
					if pvc == nil {
						t.Fatalf("volume %s: claim %q is not in the examples", v.Name, v.PersistentVolumeClaim.ClaimName)
					}
					if sc := pvc.Spec.StorageClassName; sc != nil && *sc != "" {
						// Dynamic provisioning: the claim's class must be an
						// example StorageClass of this driver.
						class := classes[*sc]
						if class == nil {
							t.Fatalf("claim %s: storageClassName %q is not a StorageClass of the examples", pvc.Name, *sc)
						}
						layout := checkExampleClaim(t, class, pvc, pod, driverName)
						sawLayout[layout] = true
						creds.check(t, "StorageClass "+class.Name, podFile[pod], pod, class.Parameters, nil, nil, true)
						break
					}
					pv := pvs[pvc.Spec.VolumeName]
					if pv == nil || pv.Spec.CSI == nil {
						t.Fatalf("claim %s: volumeName %q is not a CSI PV of the examples", pvc.Name, pvc.Spec.VolumeName)
					}
					if ref := pv.Spec.ClaimRef; ref == nil || ref.Namespace != pvc.Namespace || ref.Name != pvc.Name {
						t.Errorf("PV %s: claimRef %+v, want it reserved for %s/%s", pv.Name, ref, pvc.Namespace, pvc.Name)
					}
					if pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != "" || pv.Spec.StorageClassName != "" {
						t.Errorf("static binding needs storageClassName \"\" on both PV and PVC")
					}
					if !slices.Equal(pv.Spec.AccessModes, pvc.Spec.AccessModes) {
						t.Errorf("access modes PV %v, PVC %v", pv.Spec.AccessModes, pvc.Spec.AccessModes)
					}
					if pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimRetain {
						t.Errorf("PV %s: reclaim policy %q; nothing may delete a bucket", pv.Name, pv.Spec.PersistentVolumeReclaimPolicy)
					}
					if pv.Spec.CSI.Driver != driverName {
						t.Errorf("PV %s: driver %q, want the chart's %q", pv.Name, pv.Spec.CSI.Driver, driverName)
					}
					bucket, _, _ := strings.Cut(pv.Spec.CSI.VolumeHandle, "/")
					checkDriverAccepts(t, bucket, pv.Spec.CSI.VolumeAttributes, pv.Spec.MountOptions, pod)
					sawStageSecret = sawStageSecret || pv.Spec.CSI.NodeStageSecretRef != nil
					sawPublishSecret = sawPublishSecret || pv.Spec.CSI.NodePublishSecretRef != nil
					creds.check(t, "PV "+pv.Name, podFile[pod], pod, pv.Spec.CSI.VolumeAttributes, pv.Spec.CSI.NodeStageSecretRef, pv.Spec.CSI.NodePublishSecretRef, true)
				default:
					t.Errorf("volume %s is neither a claim nor an inline CSI volume", v.Name)
				}
			}
		})
	}
	if !sawPVC || !sawInline {
		t.Errorf("examples: static PV used %v, inline volume used %v; want both", sawPVC, sawInline)
	}
	if !sawLayout[controller.LayoutBucket] || !sawLayout[controller.LayoutPrefix] {
		t.Errorf("examples: a claim of a bucket-per-volume StorageClass %v, of a prefix-per-volume one %v; want both", sawLayout[controller.LayoutBucket], sawLayout[controller.LayoutPrefix])
	}
	for name := range classes {
		used := false
		for _, pvc := range pvcs {
			used = used || (pvc.Spec.StorageClassName != nil && *pvc.Spec.StorageClassName == name)
		}
		if !used {
			t.Errorf("StorageClass %s: no example claim uses it", name)
		}
	}
	if !sawStageSecret || !sawPublishSecret {
		t.Errorf("examples: nodeStageSecretRef used %v, nodePublishSecretRef used %v; want both", sawStageSecret, sawPublishSecret)
	}
	for _, mode := range []auth.Mode{auth.ModeNode, auth.ModeSecret, auth.ModeWorkloadIdentity} {
		if !creds.modes[string(mode)] {
			t.Errorf("examples: no volume with auth=%s", mode)
		}
	}
	for id := range secrets {
		if !creds.used[id] {
			t.Errorf("Secret %s: no example volume uses it", id)
		}
	}
	for id := range accounts {
		if !creds.used["sa:"+id] {
			t.Errorf("ServiceAccount %s: no example pod uses it", id)
		}
	}
}

// checkExampleClaim checks a dynamically provisioned claim and its
// StorageClass the way the controller and the node driver will: the class
// names this driver, the controller accepts its parameters, the node its
// volume attributes, mount options and the pod's fsGroup; deleting the
// claim reaches the controller (reclaimPolicy Delete), and it says what
// happens to the data. It returns the class's layout.
func checkExampleClaim(t *testing.T, class *storagev1.StorageClass, pvc *corev1.PersistentVolumeClaim, pod *corev1.Pod, driverName string) controller.Layout {
	t.Helper()
	if class.Provisioner != driverName {
		t.Errorf("StorageClass %s: provisioner %q, want the chart's driver name %q", class.Name, class.Provisioner, driverName)
	}
	params, err := controller.ParseParameters(class.Parameters)
	if err != nil {
		t.Errorf("StorageClass %s: the controller refuses its parameters: %v", class.Name, err)
		return controller.LayoutBucket
	}
	if _, ok := class.Parameters[controller.ParamDeletePolicy]; !ok {
		t.Errorf("StorageClass %s: set deletePolicy explicitly in an example, so that readers see what deleting a claim does to the data", class.Name)
	}
	if class.ReclaimPolicy == nil || *class.ReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
		t.Errorf("StorageClass %s: reclaimPolicy %v; Delete, so that deleting the claim reaches the controller, which follows deletePolicy", class.Name, class.ReclaimPolicy)
	}
	if params.Layout == controller.LayoutBucket && params.ProjectID == "" {
		t.Errorf("StorageClass %s: a bucket-per-volume example without projectID needs controller.projectID", class.Name)
	}
	for k := range class.Parameters {
		if strings.HasPrefix(k, "csi.storage.k8s.io/") {
			t.Errorf("StorageClass %s: parameter %s: the examples use the controller's own credentials", class.Name, k)
		}
	}
	for _, m := range pvc.Spec.AccessModes {
		if m == corev1.ReadWriteOncePod || m == corev1.ReadOnlyMany || m == corev1.ReadWriteOnce || m == corev1.ReadWriteMany {
			continue
		}
		t.Errorf("claim %s: access mode %q", pvc.Name, m)
	}
	if pvc.Spec.VolumeName != "" {
		t.Errorf("claim %s: volumeName %q with a StorageClass: the controller makes the volume", pvc.Name, pvc.Spec.VolumeName)
	}
	if q, ok := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; !ok || q.Sign() <= 0 {
		t.Errorf("claim %s: no storage request (the capacity the controller records)", pvc.Name)
	}
	bucket := params.Bucket
	if bucket == "" {
		bucket = controller.BucketName("", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f")
	}
	checkDriverAccepts(t, bucket, params.Attributes, class.MountOptions, pod)
	return params.Layout
}

// checkExampleSecret: a volume's Secret holds exactly the key the driver
// reads, with something shaped like a service-account key file in it.
func checkExampleSecret(t *testing.T, s *corev1.Secret) {
	t.Helper()
	if s.Type != "" && s.Type != corev1.SecretTypeOpaque {
		t.Errorf("Secret %s: type %q, want Opaque", s.Name, s.Type)
	}
	keys := map[string]string{}
	for k, v := range s.StringData {
		keys[k] = v
	}
	for k, v := range s.Data {
		keys[k] = string(v)
	}
	if len(keys) != 1 {
		t.Errorf("Secret %s: %d keys, want only %q (the driver refuses any other)", s.Name, len(keys), driver.SecretKey)
	}
	key, ok := keys[driver.SecretKey]
	if !ok {
		t.Errorf("Secret %s: no key %q", s.Name, driver.SecretKey)
		return
	}
	if err := auth.ValidateKey([]byte(key)); err != nil {
		t.Errorf("Secret %s: %s: the driver refuses it: %v", s.Name, driver.SecretKey, err)
	}
}

// exampleCredentials checks where the example volumes' credentials come
// from, by the driver's rules for the auth attribute.
type exampleCredentials struct {
	secrets  map[string]*corev1.Secret         // namespace/name
	accounts map[string]*corev1.ServiceAccount // namespace/name
	texts    map[string]string                 // example file -> contents
	used     map[string]bool                   // Secrets and "sa:" ServiceAccounts some volume uses
	modes    map[string]bool                   // auth modes seen
}

// check one volume: its attributes, and its stage and publish Secrets
// (stage: PVs only). persistent is false for inline volumes.
func (e *exampleCredentials) check(t *testing.T, what, file string, pod *corev1.Pod, attrs map[string]string, stage, publish *corev1.SecretReference, persistent bool) {
	t.Helper()
	mode := attrs[mounter.AttrAuth]
	refs := map[string]*corev1.SecretReference{"nodeStageSecretRef": stage, "nodePublishSecretRef": publish}
	var hasSecret bool
	for field, ref := range refs {
		if ref == nil {
			continue
		}
		hasSecret = true
		id := ref.Namespace + "/" + ref.Name
		if e.secrets[id] == nil {
			t.Errorf("%s: %s names Secret %s, which is not in the examples", what, field, id)
		}
		e.used[id] = true
	}
	if mode == "" {
		switch {
		case hasSecret:
			mode = string(auth.ModeSecret) // what a secret implies
		case attrs["anonymousAccess"] == "true":
			mode = string(auth.ModeAnonymous)
		default:
			mode = string(auth.ModeNode)
		}
	}
	e.modes[mode] = true
	switch auth.Mode(mode) {
	case auth.ModeSecret:
		if !hasSecret {
			t.Errorf("%s: auth=secret without nodeStageSecretRef or nodePublishSecretRef", what)
		}
		// A key that comes only with NodePublish: NodeStage must know not
		// to mount with the node's credentials.
		if persistent && stage == nil && attrs[mounter.AttrAuth] != string(auth.ModeSecret) {
			t.Errorf("%s: nodePublishSecretRef without nodeStageSecretRef needs volumeAttributes auth: secret", what)
		}
	case auth.ModeWorkloadIdentity:
		if hasSecret {
			t.Errorf("%s: auth=workloadIdentity with a Secret: the driver refuses the secret", what)
		}
		sa := pod.Spec.ServiceAccountName
		if sa == "" || sa == "default" {
			t.Errorf("%s: auth=workloadIdentity in pod %s with service account %q; give it its own", what, pod.Name, sa)
		} else if e.accounts[pod.Namespace+"/"+sa] == nil {
			t.Errorf("%s: pod %s's service account %s is not in the examples", what, pod.Name, sa)
		}
		e.used["sa:"+pod.Namespace+"/"+sa] = true
		// The token reaches the driver through kubelet, not the pod.
		if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
			t.Errorf("%s: pod %s mounts an API token; it needs none", what, pod.Name)
		}
		// The chart does not request tokens by default: say how.
		if !strings.Contains(e.texts[file], "workloadIdentity.enabled=true") || !strings.Contains(e.texts[file], "workloadIdentity.audience") {
			t.Errorf("%s: %s does not tell to install the chart with workloadIdentity.enabled=true and workloadIdentity.audience", what, file)
		}
	default:
		if hasSecret {
			t.Errorf("%s: auth=%s with a Secret: the driver refuses the secret", what, mode)
		}
	}
}

// checkRestrictedFields asserts the restricted profile's fields directly, so
// that a weaker evaluator could not let a pod slip through.
func checkRestrictedFields(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	s := &pod.Spec
	psc := s.SecurityContext
	if s.HostNetwork || s.HostPID || s.HostIPC {
		t.Error("host namespaces")
	}
	for _, v := range s.Volumes {
		if !restrictedVolume(v.VolumeSource) {
			t.Errorf("volume %s: type not allowed under restricted", v.Name)
		}
	}
	podNonRoot := psc != nil && psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podUser := psc != nil && psc.RunAsUser != nil && *psc.RunAsUser != 0
	podSeccomp := psc != nil && psc.SeccompProfile != nil && psc.SeccompProfile.Type == corev1.SeccompProfileTypeRuntimeDefault
	for _, c := range append(slices.Clone(s.InitContainers), s.Containers...) {
		sc := c.SecurityContext
		if sc == nil {
			t.Errorf("container %s: no securityContext", c.Name)
			continue
		}
		if sc.Privileged != nil && *sc.Privileged {
			t.Errorf("container %s: privileged", c.Name)
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
			t.Errorf("container %s: capabilities %+v, want drop ALL and add nothing", c.Name, sc.Capabilities)
		}
		if !podNonRoot && (sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot) {
			t.Errorf("container %s: runAsNonRoot is not true", c.Name)
		}
		if !podUser && (sc.RunAsUser == nil || *sc.RunAsUser == 0) {
			t.Errorf("container %s: no non-zero runAsUser", c.Name)
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			t.Errorf("container %s: runAsUser 0", c.Name)
		}
		if !podSeccomp && (sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault) {
			t.Errorf("container %s: seccompProfile is not RuntimeDefault", c.Name)
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				t.Errorf("container %s: hostPort %d", c.Name, p.HostPort)
			}
		}
	}
}

// checkDriverAccepts runs a volume's settings through the driver's own
// allow-list (the one NodeStage/NodePublish use), with the pod's fsGroup as
// kubelet would pass it.
func checkDriverAccepts(t *testing.T, bucket string, attrs map[string]string, mountOptions []string, pod *corev1.Pod) {
	t.Helper()
	v, err := mounter.NewVolume(bucket, "bucket")
	if err != nil {
		t.Errorf("bucket %q: %v", bucket, err)
		return
	}
	for k, val := range attrs {
		if err := v.SetAttribute(k, val); err != nil {
			t.Errorf("the driver refuses a volume attribute: %v", err)
		}
	}
	for _, o := range mountOptions {
		if err := v.SetMountOption(o, "mountOptions"); err != nil {
			t.Errorf("the driver refuses a mount option: %v", err)
		}
	}
	if sc := pod.Spec.SecurityContext; sc != nil && sc.FSGroup != nil {
		if err := v.SetMountGroup(strconv.FormatInt(*sc.FSGroup, 10), "fsGroup"); err != nil {
			t.Errorf("the driver refuses the pod's fsGroup: %v", err)
		}
	}
}
