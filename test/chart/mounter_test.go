package chart

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
)

// checkMounter holds for every values set. With mounter.enabled, the
// mounter DaemonSet and the node driver agree on the socket (one host path,
// the same path in both pods) and the uid; the mounter runs the driver's
// image and gcsfuse, unprivileged, placed like the driver, OnDelete and
// without a liveness probe. Without it, nothing of the mounter is rendered
// and the driver runs gcsfuse itself.
func checkMounter(t *testing.T, m *manifest, node *appsv1.DaemonSet) {
	t.Helper()
	nspec := &node.Spec.Template.Spec
	nc := container(t, nspec, driverContainer)
	// The driver's own flag set reads --mounter-socket and --mounter-uid.
	opts, v, err := driverFlags(nc.Args)
	if err != nil {
		t.Fatalf("the driver would refuse its args: %v", err)
	}
	sock := opts.MounterSocket
	socketDir := m.str(t, "mounter.socketDir")
	md := daemonSet(t, m, "mounter")

	if m.value(t, "mounter.enabled") != true {
		if md != nil {
			t.Errorf("mounter DaemonSet %s with mounter.enabled=false", md.Name)
		}
		if sock != "" || opts.MounterUID != -1 {
			t.Errorf("driver --mounter-socket=%q --mounter-uid=%d with mounter.enabled=false: gcsfuse would go to a mounter that does not run", sock, opts.MounterUID)
		}
		for _, v := range nspec.Volumes {
			if v.HostPath != nil && v.HostPath.Path == socketDir {
				t.Errorf("driver volume %s: the mounter socket dir %s with mounter.enabled=false", v.Name, socketDir)
			}
		}
		return
	}
	if md == nil {
		t.Fatal("mounter.enabled but no mounter DaemonSet")
	}
	spec := &md.Spec.Template.Spec
	if got := containerNames(spec); !reflect.DeepEqual(got, []string{mounterContainer}) {
		t.Errorf("mounter containers %q, want only %q", got, mounterContainer)
	}
	c := container(t, spec, mounterContainer)
	mo, err := mounterFlags(c.Args)
	if err != nil {
		t.Fatal(err)
	}

	// One socket: the driver's --mounter-socket is the mounter's --socket,
	// under mounter.socketDir, on the same host path in both pods.
	want := filepath.Join(socketDir, "mounter.sock")
	if sock != want || mo.socket != want {
		t.Errorf("driver --mounter-socket=%q, mounter --socket=%q, want both %q", sock, mo.socket, want)
	}
	for _, p := range []struct {
		who  string
		spec *corev1.PodSpec
		c    *corev1.Container
		path string
	}{{"driver", nspec, nc, sock}, {"mounter", spec, c, mo.socket}} {
		host, vm, err := hostPathOf(p.spec, p.c, p.path)
		if err != nil {
			t.Errorf("%s socket: %v", p.who, err)
			continue
		}
		if host != want {
			t.Errorf("%s socket %q is host %q, want %q", p.who, p.path, host, want)
		}
		vol, _ := volumeOf(p.spec, p.c, p.path)
		if vol.HostPath.Type == nil || *vol.HostPath.Type != corev1.HostPathDirectoryOrCreate {
			t.Errorf("%s: socket dir volume %s type %v, want DirectoryOrCreate (whichever pod starts first creates it)", p.who, vol.Name, vol.HostPath.Type)
		}
		if vm.ReadOnly || vm.MountPropagation != nil {
			t.Errorf("%s: socket dir mount %+v, want read-write without propagation", p.who, vm)
		}
	}

	// One uid: the driver hands the socket dir to the uid the mounter runs as.
	uid := m.intValue(t, "mounter.uid")
	if uid == 0 {
		t.Fatal("mounter.uid 0")
	}
	if int64(opts.MounterUID) != uid {
		t.Errorf("driver --mounter-uid=%d, want mounter.uid %d", opts.MounterUID, uid)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser != uid || psc.RunAsGroup == nil || *psc.RunAsGroup != uid ||
		psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Errorf("mounter pod securityContext %+v, want runAsNonRoot and runAsUser/runAsGroup %d", psc, uid)
	}
	if sc := c.SecurityContext; sc != nil && (sc.RunAsUser != nil || sc.RunAsGroup != nil) {
		t.Errorf("mounter container securityContext %+v overrides the pod's uid/gid", sc)
	}

	// Same image, same gcsfuse, same verbosity as the driver.
	if c.Image != nc.Image || c.ImagePullPolicy != nc.ImagePullPolicy || len(c.Command) != 0 {
		t.Errorf("mounter image %q %q command %q, want the driver's %q %q and the image's entrypoint", c.Image, c.ImagePullPolicy, c.Command, nc.Image, nc.ImagePullPolicy)
	}
	if mo.gcsfuse != opts.GCSFuseBinary {
		t.Errorf("mounter --gcsfuse=%q, driver --gcsfuse=%q", mo.gcsfuse, opts.GCSFuseBinary)
	}
	if mo.v != v {
		t.Errorf("mounter -v=%d, driver -v=%d", mo.v, v)
	}
	// The work dir (gcsfuse temp dirs, file caches) is on the emptyDir, the
	// only writable place under a read-only root filesystem.
	if vol, err := volumeOf(spec, c, mo.workDir); err != nil || vol.EmptyDir == nil {
		t.Errorf("mounter --work-dir=%q is not on an emptyDir (%v)", mo.workDir, err)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("mounter container securityContext %+v: want readOnlyRootFilesystem", sc)
	}

	// Replacing a mounter pod ends its node's mounts: only the user may do
	// it (OnDelete), kubelet may not (no liveness probe).
	if !reflect.DeepEqual(md.Spec.UpdateStrategy, appsv1.DaemonSetUpdateStrategy{Type: appsv1.OnDeleteDaemonSetStrategyType}) {
		t.Errorf("mounter updateStrategy %+v, want OnDelete", md.Spec.UpdateStrategy)
	}
	if c.LivenessProbe != nil {
		t.Errorf("mounter liveness probe %+v: a failed probe would restart it and kill every mount on the node", c.LivenessProbe)
	}

	// Placed wherever the driver is: a driver without its mounter cannot
	// mount.
	if spec.PriorityClassName != nspec.PriorityClassName || !reflect.DeepEqual(spec.NodeSelector, nspec.NodeSelector) ||
		!reflect.DeepEqual(spec.Tolerations, nspec.Tolerations) || !reflect.DeepEqual(spec.Affinity, nspec.Affinity) {
		t.Errorf("mounter placement (priority %q nodeSelector %v tolerations %v affinity %v) differs from the driver's (%q %v %v %v)",
			spec.PriorityClassName, spec.NodeSelector, spec.Tolerations, spec.Affinity,
			nspec.PriorityClassName, nspec.NodeSelector, nspec.Tolerations, nspec.Affinity)
	}
	if hostNet := m.value(t, "mounter.hostNetwork") == true; spec.HostNetwork != hostNet {
		t.Errorf("mounter hostNetwork %v, mounter.hostNetwork %v", spec.HostNetwork, hostNet)
	}

	checkMounterPodSecurity(t, md)
}

// checkMounterPodSecurity: the mounter pod passes the restricted Pod
// Security Standard but for its socket dir (and the host network if
// mounter.hostNetwork asks for it), by kube-apiserver's own evaluator: the
// only violation is that hostPath volume, and the pod without it passes,
// also field by field.
func checkMounterPodSecurity(t *testing.T, md *appsv1.DaemonSet) {
	t.Helper()
	eval, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		t.Fatal(err)
	}
	restricted := psapi.LevelVersion{Level: psapi.LevelRestricted, Version: psapi.LatestVersion()}
	meta, spec := md.Spec.Template.ObjectMeta, md.Spec.Template.Spec

	allowed := map[string]bool{"restricted volume types": true}
	if spec.HostNetwork {
		allowed["host namespaces"] = true
	}
	var denied []string
	sawVolume := false
	for _, r := range eval.EvaluatePod(restricted, &meta, &spec) {
		if r.Allowed {
			continue
		}
		denied = append(denied, r.ForbiddenReason+" ("+r.ForbiddenDetail+")")
		switch {
		case !allowed[r.ForbiddenReason]:
			t.Errorf("mounter pod: PodSecurity restricted: %s (%s); only the hostPath socket dir may be refused", r.ForbiddenReason, r.ForbiddenDetail)
		case r.ForbiddenReason == "restricted volume types":
			sawVolume = true
			if !strings.Contains(r.ForbiddenDetail, `volume "mounter-socket-dir" uses`) || !strings.Contains(r.ForbiddenDetail, `"hostPath"`) {
				t.Errorf("mounter pod: restricted volume types: %s, want only the hostPath volume mounter-socket-dir", r.ForbiddenDetail)
			}
		}
	}
	if !sawVolume {
		t.Errorf("mounter pod: PodSecurity restricted refuses %q, not the hostPath socket dir: is the evaluator looking at the pod?", denied)
	}

	// The same pod with the socket dir as an emptyDir (and in its own
	// network namespace) passes.
	pod := &corev1.Pod{ObjectMeta: *meta.DeepCopy(), Spec: *spec.DeepCopy()}
	pod.Spec.HostNetwork = false
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].HostPath != nil {
			pod.Spec.Volumes[i].VolumeSource = corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}
		}
	}
	if res := policy.AggregateCheckResults(eval.EvaluatePod(restricted, &pod.ObjectMeta, &pod.Spec)); !res.Allowed {
		t.Errorf("mounter pod without its hostPath volume: PodSecurity restricted refuses it: %s", res.ForbiddenDetail())
	}
	checkRestrictedFields(t, pod)
}
