package chart

import (
	"encoding/json"
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

const adcEnv = "GOOGLE_APPLICATION_CREDENTIALS"

// checkCredentials holds for every values set. Workload Identity: the
// CSIDriver's token requests are valid for the API server, the driver picks
// the token kubelet sends (--token-audience is the requested audience), and
// the other flags are the values, or absent (the driver's defaults) when
// empty or when Workload Identity is off. Node credentials: with
// driver.nodeCredentials.secretName, the driver and the mounter both find
// the key through GOOGLE_APPLICATION_CREDENTIALS on a read-only mount of
// that Secret, and the mounter's uid can read it; without it, neither has
// a key (the metadata server is used).
func checkCredentials(t *testing.T, m *manifest, node *appsv1.DaemonSet) {
	t.Helper()
	nspec := &node.Spec.Template.Spec
	nc := container(t, nspec, driverContainer)
	opts, _, err := driverFlags(nc.Args)
	if err != nil {
		t.Fatalf("the driver would refuse its args: %v", err)
	}

	d := only[*storagev1.CSIDriver](t, m, "storage.k8s.io/v1/CSIDriver")
	audiences := map[string]bool{}
	for i, tr := range d.Spec.TokenRequests {
		// The API server's CSIDriver validation.
		if audiences[tr.Audience] {
			t.Errorf("CSIDriver tokenRequests[%d]: audience %q twice", i, tr.Audience)
		}
		audiences[tr.Audience] = true
		if e := tr.ExpirationSeconds; e != nil && (*e < 600 || *e > 1<<32) {
			t.Errorf("CSIDriver tokenRequests[%d]: expirationSeconds %d, want 600 (10 minutes) to 2^32", i, *e)
		}
	}

	wi := m.value(t, "workloadIdentity.enabled") == true
	flags := map[string]string{ // flag -> value the chart should pass, "" for none
		"token-audience":             "",
		"workload-identity-provider": "",
		"sts-endpoint":               "",
		"iam-credentials-endpoint":   "",
	}
	if wi {
		flags["token-audience"] = m.str(t, "workloadIdentity.audience")
		flags["workload-identity-provider"] = m.str(t, "workloadIdentity.provider")
		flags["sts-endpoint"] = m.str(t, "workloadIdentity.stsEndpoint")
		flags["iam-credentials-endpoint"] = m.str(t, "workloadIdentity.iamCredentialsEndpoint")
		if len(d.Spec.TokenRequests) != 1 || d.Spec.TokenRequests[0].Audience != opts.TokenAudience {
			t.Errorf("CSIDriver tokenRequests %s, driver --token-audience=%q: kubelet must send the token the driver looks for", jsonOf(d.Spec.TokenRequests), opts.TokenAudience)
		}
		if d.Spec.RequiresRepublish == nil || !*d.Spec.RequiresRepublish {
			t.Error("Workload Identity without requiresRepublish: a session's token would never be renewed")
		}
		if p := opts.WIProvider; p != "" {
			// The driver does not check the flag; hold it to the rule of the
			// volume attribute that overrides it.
			v, err := mounter.NewVolume("bucket", "bucket")
			if err != nil {
				t.Fatal(err)
			}
			if err := v.SetAttribute(mounter.AttrProvider, p); err != nil {
				t.Errorf("--workload-identity-provider=%q: %v", p, err)
			}
		}
	} else if len(d.Spec.TokenRequests) != 0 || d.Spec.RequiresRepublish != nil {
		t.Errorf("CSIDriver tokenRequests %s requiresRepublish %s with workloadIdentity.enabled=false", jsonOf(d.Spec.TokenRequests), jsonOf(d.Spec.RequiresRepublish))
	}
	for flag, want := range flags {
		got, ok := argValue(nc.Args, flag)
		if ok != (want != "") || got != want {
			t.Errorf("driver --%s=%q (passed %v), want %q (an empty value passes no flag)", flag, got, ok, want)
		}
	}
	// What the driver ends up with: the value, or the driver's own default.
	wantSTS, wantIAM := auth.DefaultSTSEndpoint, auth.DefaultIAMEndpoint
	if v := flags["sts-endpoint"]; v != "" {
		wantSTS = v
	}
	if v := flags["iam-credentials-endpoint"]; v != "" {
		wantIAM = v
	}
	if opts.TokenAudience != flags["token-audience"] || opts.WIProvider != flags["workload-identity-provider"] ||
		opts.STSEndpoint != wantSTS || opts.IAMEndpoint != wantIAM {
		t.Errorf("driver options: audience %q provider %q sts %q iam %q, want %q %q %q %q",
			opts.TokenAudience, opts.WIProvider, opts.STSEndpoint, opts.IAMEndpoint,
			flags["token-audience"], flags["workload-identity-provider"], wantSTS, wantIAM)
	}

	// Node credentials.
	secret := m.str(t, "driver.nodeCredentials.secretName")
	type user struct {
		ds   *appsv1.DaemonSet
		name string // the container that must find the key
	}
	users := []user{{node, driverContainer}}
	var all []*appsv1.DaemonSet
	for _, o := range m.ofKind("apps/v1/DaemonSet") {
		all = append(all, o.obj.(*appsv1.DaemonSet))
	}
	if md := daemonSet(t, m, "mounter"); md != nil {
		users = append(users, user{md, mounterContainer})
	}
	for _, ds := range all {
		spec := &ds.Spec.Template.Spec
		for i := range spec.Containers {
			c := &spec.Containers[i]
			isUser := slices.ContainsFunc(users, func(u user) bool { return u.ds == ds && u.name == c.Name })
			var env []corev1.EnvVar
			for _, e := range c.Env {
				if e.Name == adcEnv {
					env = append(env, e)
				}
			}
			if secret == "" || !isUser {
				if len(env) > 0 {
					t.Errorf("%s/%s: %s=%q, want none (driver.nodeCredentials.secretName %q)", ds.Name, c.Name, adcEnv, env[0].Value, secret)
				}
				continue
			}
			if len(env) != 1 || env[0].ValueFrom != nil || !filepath.IsAbs(env[0].Value) {
				t.Errorf("%s/%s: %s %+v, want one absolute path", ds.Name, c.Name, adcEnv, env)
				continue
			}
			checkKeyFile(t, ds, c, env[0].Value, secret)
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil && secret == "" {
				t.Errorf("%s: Secret volume %s (%s) without driver.nodeCredentials.secretName", ds.Name, v.Name, v.Secret.SecretName)
			}
		}
		if sc := spec.SecurityContext; ds != node && secret == "" && sc != nil && sc.FSGroup != nil {
			t.Errorf("%s: fsGroup %d without node credentials: nothing needs it", ds.Name, *sc.FSGroup)
		}
	}
}

// checkKeyFile: p in container c is key.json of Secret secret, on a
// read-only mount, 0440, and readable by the container's user: root, or
// through a group that the pod's fsGroup gives the file and that is the
// container's own gid.
func checkKeyFile(t *testing.T, ds *appsv1.DaemonSet, c *corev1.Container, p, secret string) {
	t.Helper()
	spec := &ds.Spec.Template.Spec
	vol, err := volumeOf(spec, c, p)
	if err != nil {
		t.Errorf("%s/%s: %s=%s: %v", ds.Name, c.Name, adcEnv, p, err)
		return
	}
	var vm *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == vol.Name {
			vm = &c.VolumeMounts[i]
		}
	}
	if vol.Secret == nil || vol.Secret.SecretName != secret {
		t.Errorf("%s/%s: %s=%s is on volume %s %+v, want Secret %q", ds.Name, c.Name, adcEnv, p, vol.Name, vol.VolumeSource, secret)
		return
	}
	if !vm.ReadOnly || vm.SubPath != "" {
		t.Errorf("%s/%s: mount %+v of the key, want read-only and no subPath (a subPath would miss a rotated key)", ds.Name, c.Name, vm)
	}
	rel := strings.TrimPrefix(p, strings.TrimSuffix(vm.MountPath, "/")+"/")
	mode := vol.Secret.DefaultMode
	found := false
	for _, it := range vol.Secret.Items {
		if path.Clean(it.Path) == rel && it.Key == driver.SecretKey {
			found = true
			if it.Mode != nil {
				mode = it.Mode
			}
		}
	}
	if !found {
		t.Errorf("%s/%s: %s=%s: volume %s does not project key %q there (items %+v)", ds.Name, c.Name, adcEnv, p, vol.Name, driver.SecretKey, vol.Secret.Items)
		return
	}
	if mode == nil || *mode != 0o440 {
		got := "unset (0644)"
		if mode != nil {
			got = fmt.Sprintf("%#o", *mode)
		}
		t.Errorf("%s/%s: key file mode %s, want 0440 (owner and group read, nobody else)", ds.Name, c.Name, got)
		return
	}
	// Who reads it: the driver is root (privileged); the mounter is not, and
	// reads it through its group.
	psc := spec.SecurityContext
	uid, gid := int64(0), int64(0)
	if psc != nil && psc.RunAsUser != nil {
		uid = *psc.RunAsUser
	}
	if psc != nil && psc.RunAsGroup != nil {
		gid = *psc.RunAsGroup
	}
	if sc := c.SecurityContext; sc != nil && sc.RunAsUser != nil {
		uid = *sc.RunAsUser
	}
	if sc := c.SecurityContext; sc != nil && sc.RunAsGroup != nil {
		gid = *sc.RunAsGroup
	}
	if uid == 0 {
		return
	}
	if psc == nil || psc.FSGroup == nil || *psc.FSGroup != gid {
		t.Errorf("%s/%s: uid %d gid %d cannot read the 0440 key file: the pod's fsGroup (%s) must be its gid", ds.Name, c.Name, uid, gid, jsonOf(psc))
	}
}

// jsonOf formats v for a failure message, pointers followed.
func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// TestWorkloadIdentityNeedsAudience: with Workload Identity on and no
// audience, rendering fails and says which value is missing.
func TestWorkloadIdentityNeedsAudience(t *testing.T) {
	c := loadChart(t)
	for _, values := range []string{
		"workloadIdentity: {enabled: true}",
		`workloadIdentity: {enabled: true, audience: "", provider: "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"}`,
	} {
		files, err := renderChart(c, parseValues(t, values))
		if err == nil {
			t.Errorf("values %q rendered (%d files), want an error", values, len(files))
			continue
		}
		if !strings.Contains(err.Error(), "workloadIdentity.audience is required") {
			t.Errorf("values %q: error does not name workloadIdentity.audience: %v", values, err)
		}
	}
}
