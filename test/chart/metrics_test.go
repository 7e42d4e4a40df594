package chart

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestMetricsValues: metrics.enabled gives the driver --metrics-address on
// metrics.port (accepted by the driver's own flag validation), a named
// containerPort `metrics`, and a headless Service that selects the driver
// pods, not the mounter's, and targets that port by name. Off (the
// default): none of it.
func TestMetricsValues(t *testing.T) {
	for _, tc := range []struct {
		name, values string
		port         int32 // 0: metrics off
	}{
		{"default", "", 0},
		{"enabled", "metrics: {enabled: true}", 9920},
		{"enabled on another port", "metrics: {enabled: true, port: 19920}", 19920},
		{"enabled with the mounter off", "metrics: {enabled: true}\nmounter: {enabled: false}", 9920},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := render(t, tc.values)
			node := nodeDaemonSet(t, m)
			c := container(t, &node.Spec.Template.Spec, driverContainer)
			opts, _, err := driverFlags(c.Args)
			if err != nil {
				t.Fatalf("the driver would refuse its args: %v", err)
			}
			var ports []corev1.ContainerPort
			for _, p := range c.Ports {
				if p.Name == "metrics" {
					ports = append(ports, p)
				}
			}
			var services []*corev1.Service
			for _, o := range m.ofKind("v1/Service") {
				services = append(services, o.obj.(*corev1.Service))
			}
			if tc.port == 0 {
				if opts.MetricsAddress != "" || len(ports) != 0 || len(services) != 0 {
					t.Errorf("metrics off, but --metrics-address=%q, ports %v, Services %d", opts.MetricsAddress, ports, len(services))
				}
				return
			}
			if want := ":" + itoa(tc.port); opts.MetricsAddress != want {
				t.Errorf("--metrics-address=%q, want %q", opts.MetricsAddress, want)
			}
			if len(ports) != 1 || ports[0].ContainerPort != tc.port || ports[0].Protocol != corev1.ProtocolTCP {
				t.Errorf("driver ports %v, want one TCP port named metrics on %d", c.Ports, tc.port)
			}
			if len(services) != 1 {
				t.Fatalf("%d Services, want the one metrics Service", len(services))
			}
			svc := services[0]
			if svc.Namespace != releaseNS || svc.Spec.ClusterIP != corev1.ClusterIPNone {
				t.Errorf("Service %s/%s clusterIP %q, want headless in %s", svc.Namespace, svc.Name, svc.Spec.ClusterIP, releaseNS)
			}
			if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Name != "metrics" || svc.Spec.Ports[0].Port != tc.port ||
				svc.Spec.Ports[0].TargetPort != intstr.FromString("metrics") {
				t.Errorf("Service ports %+v, want metrics: %d -> the named port metrics", svc.Spec.Ports, tc.port)
			}
			if !selects(svc.Spec.Selector, node.Spec.Template.Labels) {
				t.Errorf("Service selector %v does not select the driver pods %v", svc.Spec.Selector, node.Spec.Template.Labels)
			}
			if md := daemonSet(t, m, "mounter"); md != nil && selects(svc.Spec.Selector, md.Spec.Template.Labels) {
				t.Errorf("Service selector %v also selects the mounter pods, which serve no metrics", svc.Spec.Selector)
			}
		})
	}
}

func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func itoa(n int32) string {
	if n == 0 {
		return "0"
	}
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
