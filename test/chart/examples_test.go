package chart

import (
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"

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
// namespace that enforces it, use the chart's default driver name, and ask
// for volume attributes and mount options the driver accepts.
func TestExamples(t *testing.T) {
	files, err := filepath.Glob(examplesDir + "/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples in %s (%v)", examplesDir, err)
	}
	var objs []object
	for _, f := range files {
		o, err := decodeStrict(filepath.Base(f), readFile(t, f))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, o...)
	}
	m := render(t, "")
	driverName := m.str(t, "driverName")

	var (
		namespaces = map[string]*corev1.Namespace{}
		pvs        = map[string]*corev1.PersistentVolume{}
		pvcs       = map[string]*corev1.PersistentVolumeClaim{}
		pods       []*corev1.Pod
	)
	for _, o := range objs {
		switch x := o.obj.(type) {
		case *corev1.Namespace:
			namespaces[x.Name] = x
		case *corev1.PersistentVolume:
			pvs[x.Name] = x
		case *corev1.PersistentVolumeClaim:
			pvcs[x.Namespace+"/"+x.Name] = x
		case *corev1.Pod:
			pods = append(pods, x)
		default:
			t.Errorf("%v: the examples hold namespaces, PVs, PVCs and pods only", o)
		}
	}
	if len(pods) < 2 {
		t.Fatalf("%d example pods, want a static-PV one and an inline one", len(pods))
	}

	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	var sawPVC, sawInline bool
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
				case v.PersistentVolumeClaim != nil:
					sawPVC = true
					pvc := pvcs[pod.Namespace+"/"+v.PersistentVolumeClaim.ClaimName]
					if pvc == nil {
						t.Fatalf("volume %s: claim %q is not in the examples", v.Name, v.PersistentVolumeClaim.ClaimName)
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
				default:
					t.Errorf("volume %s is neither a claim nor an inline CSI volume", v.Name)
				}
			}
		})
	}
	if !sawPVC || !sawInline {
		t.Errorf("examples: static PV used %v, inline volume used %v; want both", sawPVC, sawInline)
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
