// Package k8s holds the Kubernetes end-to-end tests: the driver, deployed
// from its image and Helm chart on a real single-node cluster, serving
// buckets from fake-gcs-server to pods that run under the restricted Pod
// Security Standard.
//
// The tests need the cluster that test/k8s/run.sh (`make e2e-k8s`) starts;
// run.sh sets E2E_K8S=1 and the E2E_K8S_* variables below. Without
// E2E_K8S=1 every test here skips, so `go test ./test/...` stays fast.
package k8s

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"
)

// env is what run.sh tells the tests about the cluster.
type env struct {
	Kubectl     string // kubectl binary
	Kubeconfig  string // admin kubeconfig
	KubeletDir  string // kubelet --root-dir on this node
	FakeGCS     string // http://host:port of fake-gcs-server
	GCPAdmin    string // http://host:port of gcpfront's admin API (test/k8s/gcpfront)
	Driver      string // CSI driver name
	DriverNS    string // namespace of the driver DaemonSet
	Busybox     string // busybox image present on the node
	RunID       string // makes bucket, namespace and PV names unique
	Namespace   string
	BucketIn    string // inline ephemeral volume
	BucketPV    string // static PV/PVC
	BucketWeb   string // httpd
	BucketRd    string // read in a loop while the driver pod is replaced
	BucketAf    string // first published by the replacement driver
	BucketWI    string // private: only the wi-reader service account may read it
	PVName      string
	skipMessage string
}

func loadEnv() *env {
	if os.Getenv("E2E_K8S") != "1" {
		return &env{skipMessage: "E2E_K8S=1 not set: these tests need the single-node cluster that `make e2e-k8s` (test/k8s/run.sh) starts and deploys the driver on"}
	}
	e := &env{
		Kubectl:    os.Getenv("E2E_K8S_KUBECTL"),
		Kubeconfig: os.Getenv("E2E_K8S_KUBECONFIG"),
		KubeletDir: os.Getenv("E2E_K8S_KUBELET_DIR"),
		FakeGCS:    os.Getenv("E2E_K8S_FAKE_GCS"),
		GCPAdmin:   os.Getenv("E2E_K8S_GCP_ADMIN"),
		Driver:     os.Getenv("E2E_K8S_DRIVER"),
		DriverNS:   os.Getenv("E2E_K8S_DRIVER_NAMESPACE"),
		Busybox:    os.Getenv("E2E_K8S_BUSYBOX_IMAGE"),
	}
	for name, v := range map[string]string{
		"E2E_K8S_KUBECTL": e.Kubectl, "E2E_K8S_KUBECONFIG": e.Kubeconfig, "E2E_K8S_KUBELET_DIR": e.KubeletDir,
		"E2E_K8S_FAKE_GCS": e.FakeGCS, "E2E_K8S_DRIVER": e.Driver, "E2E_K8S_DRIVER_NAMESPACE": e.DriverNS,
		"E2E_K8S_BUSYBOX_IMAGE": e.Busybox, "E2E_K8S_GCP_ADMIN": e.GCPAdmin,
	} {
		if v == "" {
			e.skipMessage = "E2E_K8S=1 but " + name + " is empty: run the tests through test/k8s/run.sh"
			return e
		}
	}
	b := make([]byte, 3)
	rand.Read(b)
	e.RunID = hex.EncodeToString(b)
	e.Namespace = "k8s-e2e-" + e.RunID
	e.BucketIn = "k8s-e2e-inline-" + e.RunID
	e.BucketPV = "k8s-e2e-pv-" + e.RunID
	e.BucketWeb = "k8s-e2e-web-" + e.RunID
	e.BucketRd = "k8s-e2e-reader-" + e.RunID
	e.BucketAf = "k8s-e2e-after-" + e.RunID
	e.BucketWI = "k8s-e2e-wi-" + e.RunID
	e.PVName = "k8s-e2e-pv-" + e.RunID
	return e
}

// TestKubernetes runs the scenarios in order on one restricted namespace.
// Each step asserts what a user would see: file contents in the pod, objects
// in GCS, HTTP bodies on the node, and nothing left behind at the end.
func TestKubernetes(t *testing.T) {
	e := loadEnv()
	if e.skipMessage != "" {
		t.Skip(e.skipMessage)
	}
	k := &kube{t: t, e: e}
	g := &fakeGCS{t: t, base: e.FakeGCS, adminURL: e.GCPAdmin}

	// The driver reaches GCS through gcpfront, which checks tokens: these
	// buckets are open to anonymous access, the Workload Identity one only
	// to its service account.
	for _, b := range []string{e.BucketIn, e.BucketPV, e.BucketWeb, e.BucketRd, e.BucketAf} {
		g.createBucket(b)
		g.admin("public", "bucket", b)
	}
	g.createBucket(e.BucketWI)
	g.admin("grant", "bucket", e.BucketWI, "principal", "system:serviceaccount:"+e.Namespace+":wi-reader")
	g.put(e.BucketWI, "hello.txt", "hello, wi-reader\n")
	g.put(e.BucketIn, "hello.txt", "hello from the inline bucket\n")
	g.put(e.BucketPV, "hello.txt", "hello from the PV bucket\n")
	g.put(e.BucketPV, "docs/nested.txt", "nested object\n")
	g.put(e.BucketWeb, "index.html", "<h1>served from "+e.BucketWeb+"</h1>\n")
	g.put(e.BucketWeb, "assets/app.txt", "asset body\n")
	g.put(e.BucketRd, "hello.txt", "hello from the reader bucket\n")
	g.put(e.BucketAf, "hello.txt", "hello from the after bucket\n")

	// The mounter pod that holds the gcsfuse processes: the driver pod is
	// replaced below, this one must stay the same pod throughout.
	var mounterUID string

	t.Cleanup(func() {
		if t.Failed() {
			k.dumpState()
		}
		// Best effort if a step failed before the cleanup step ran.
		k.runQuiet("delete", "namespace", e.Namespace, "--ignore-not-found", "--wait=true", "--timeout=90s")
		k.runQuiet("delete", "pv", e.PVName, "--ignore-not-found", "--wait=true", "--timeout=30s")
	})

	ok := t.Run("restricted namespace", func(t *testing.T) {
		k := k.with(t)
		k.apply(render(t, namespaceYAML, e))
		k.waitFor("default service account", 60*time.Second, "-n", e.Namespace, "get", "serviceaccount", "default")
		// The namespace must really enforce restricted: a privileged pod is
		// refused at admission.
		out, err := k.applyErr(render(t, privilegedPodYAML, e))
		if err == nil {
			t.Fatalf("a privileged pod was admitted into %s:\n%s", e.Namespace, out)
		}
		if !strings.Contains(out, `violates PodSecurity "restricted:latest"`) {
			t.Fatalf("privileged pod refused, but not by PodSecurity restricted: %s", out)
		}
		t.Logf("privileged pod refused: %s", firstLine(out))
	})
	if !ok {
		t.FailNow()
	}

	t.Run("inline ephemeral volume, read and write", func(t *testing.T) {
		k := k.with(t)
		g := g.with(t)
		k.apply(render(t, inlinePodYAML, e))
		k.waitReady("inline", 180*time.Second)
		checkRestricted(t, k, "inline")
		uid := k.get("pod", "inline", "{.metadata.uid}")
		// The driver's mount reached the host (Bidirectional propagation)
		// at the pod's volume path.
		target := filepath.Join(e.KubeletDir, "pods", uid, "volumes", "kubernetes.io~csi", "data", "mount")
		requireHostMount(t, target, e.BucketIn)

		if got := k.exec("inline", "cat", "/data/hello.txt"); got != "hello from the inline bucket\n" {
			t.Fatalf("cat /data/hello.txt = %q", got)
		}
		mnt := k.exec("inline", "sh", "-c", "grep ' /data ' /proc/mounts")
		if f := strings.Fields(mnt); len(f) < 3 || f[2] != "fuse.gcsfuse" || !strings.HasPrefix(f[0], e.BucketIn+":") {
			t.Fatalf("/data in the pod is not the bucket's gcsfuse mount: %q", mnt)
		}
		k.exec("inline", "sh", "-c", "echo written by a restricted pod > /data/from-pod.txt")
		if got := k.exec("inline", "stat", "-c", "%g %A", "/data/from-pod.txt"); got != "2000 -rw-rw-r--\n" {
			t.Errorf("stat of the written file: %q, want group 2000 (fsGroup) and mode -rw-rw-r--", got)
		}
		g.requireObject(e.BucketIn, "from-pod.txt", "written by a restricted pod\n")
	})

	t.Run("static PV and PVC, read and write", func(t *testing.T) {
		k := k.with(t)
		g := g.with(t)
		k.apply(render(t, pvYAML, e))
		k.waitFor("PVC bound", 60*time.Second, "-n", e.Namespace, "wait", "--for=jsonpath={.status.phase}=Bound", "pvc/data", "--timeout=2s")
		k.waitReady("pvc", 180*time.Second)
		checkRestricted(t, k, "pvc")
		// One gcsfuse per volume per node: the staging mount on the host.
		staging := filepath.Join(e.KubeletDir, "plugins", "kubernetes.io", "csi", e.Driver)
		requireHostMount(t, staging, e.BucketPV)
		uid := k.get("pod", "pvc", "{.metadata.uid}")
		requireHostMount(t, filepath.Join(e.KubeletDir, "pods", uid, "volumes", "kubernetes.io~csi", e.PVName, "mount"), e.BucketPV)

		if got := k.exec("pvc", "cat", "/data/hello.txt", "/data/docs/nested.txt"); got != "hello from the PV bucket\nnested object\n" {
			t.Fatalf("cat through the PVC = %q", got)
		}
		k.exec("pvc", "sh", "-c", "mkdir -p /data/out && echo written through a PVC > /data/out/from-pod.txt")
		g.requireObject(e.BucketPV, "out/from-pod.txt", "written through a PVC\n")
		if got := k.exec("pvc", "ls", "/data"); got != "docs\nhello.txt\nout\n" {
			t.Errorf("ls /data = %q", got)
		}
	})

	t.Run("busybox httpd serves a bucket", func(t *testing.T) {
		k := k.with(t)
		k.apply(render(t, httpdPodYAML, e))
		k.waitReady("httpd", 180*time.Second)
		checkRestricted(t, k, "httpd")
		ip := k.get("pod", "httpd", "{.status.podIP}")
		for path, want := range map[string]string{
			"/index.html":     "<h1>served from " + e.BucketWeb + "</h1>\n",
			"/assets/app.txt": "asset body\n",
		} {
			u := "http://" + ip + ":8080" + path
			out, err := exec.Command("curl", "-sS", "--fail", "--max-time", "10", u).CombinedOutput()
			if err != nil {
				t.Fatalf("curl %s from the host: %v: %s", u, err, out)
			}
			if string(out) != want {
				t.Fatalf("curl %s = %q, want %q", u, out, want)
			}
			t.Logf("host: curl %s -> %q", u, strings.TrimSpace(string(out)))
		}
		// readOnly: true on the csi volume makes the pod's mount read-only.
		if out, err := k.execErr("httpd", "sh", "-c", "echo x > /www/x.txt"); err == nil || !strings.Contains(out, "Read-only file system") {
			t.Errorf("write to the read-only volume: err=%v out=%q, want EROFS", err, out)
		}
	})

	t.Run("reads continue while the node driver pod is replaced", func(t *testing.T) {
		k := k.with(t)
		g := g.with(t)
		mounterUID = k.get("-n", e.DriverNS, "pods", "-l", mounterPods, "{.items[*].metadata.uid}")
		if mounterUID == "" || strings.Contains(mounterUID, " ") {
			t.Fatalf("mounter pods %q, want one (the chart's mounter DaemonSet, mounter.enabled)", mounterUID)
		}
		k.apply(render(t, readerPodYAML, e))
		k.waitReady("reader", 180*time.Second)

		// The premise: every gcsfuse runs in the mounter pod, unprivileged,
		// not in the driver pod that is about to go.
		sessions := checkGcsfuseInMounter(t, k, mounterUID)

		oldDriver := k.get("-n", e.DriverNS, "pods", "-l", nodePods, "{.items[*].metadata.name} {.items[*].metadata.uid} {.items[*].spec.nodeName}")
		f := strings.Fields(oldDriver)
		if len(f) != 3 {
			t.Fatalf("node driver pods %q, want one", oldDriver)
		}
		oldName, oldUID, nodeName := f[0], f[1], f[2]

		// Reads succeed before anything happens.
		k.waitReads("reader", 10, time.Time{}, 60*time.Second)

		tDelete := time.Now()
		k.run("-n", e.DriverNS, "delete", "pod", oldName, "--wait=true", "--timeout=120s")
		tGone := time.Now()
		var newName string
		deadline := time.Now().Add(180 * time.Second)
		for {
			out, _ := k.cmd("", "-n", e.DriverNS, "get", "pods", "-l", nodePods, "-o",
				`jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}`)
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				if p := strings.Fields(line); len(p) == 3 && p[1] != oldUID && p[2] == "True" {
					newName = p[0]
				}
			}
			if newName != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new Ready driver pod 180s after deleting %s: %s", oldName, out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		tReady := time.Now()
		k.poll("CSINode "+nodeName+" lists "+e.Driver, 90*time.Second, func() (bool, string) {
			out, _ := k.cmd("", "get", "csinode", nodeName, "-o", "jsonpath={.spec.drivers[*].name}")
			return slices.Contains(strings.Fields(out), e.Driver), out
		})
		tRegistered := time.Now()
		t.Logf("driver pod %s deleted (gone after %s), %s Ready after %s, CSINode lists %s after %s",
			oldName, tGone.Sub(tDelete).Round(100*time.Millisecond), newName, tReady.Sub(tDelete).Round(100*time.Millisecond),
			e.Driver, tRegistered.Sub(tDelete).Round(100*time.Millisecond))

		// Reads go on under the new driver.
		k.waitReads("reader", 20, tRegistered, 60*time.Second)

		// The mounts of the earlier pods survived too. (Errorf, not Fatal:
		// the read log below says more about what went wrong.)
		for pod, want := range map[string]string{"inline": "hello from the inline bucket\n", "pvc": "hello from the PV bucket\n"} {
			if got, err := k.execErr(pod, "cat", "/data/hello.txt"); err != nil || got != want {
				t.Errorf("%s pod after the driver replacement: cat /data/hello.txt = %q (%v), want %q", pod, got, err, want)
			}
		}
		// The new driver publishes to a new pod: a new inline volume (a new
		// gcsfuse session in the mounter), an inline volume sharing the
		// session the old driver started for the reader, and the staged PV.
		k.apply(render(t, afterPodYAML, e))
		k.waitReady("after", 180*time.Second)
		if got := k.exec("after", "cat", "/in/hello.txt", "/shared/hello.txt", "/pv/hello.txt"); got != "hello from the after bucket\nhello from the reader bucket\nhello from the PV bucket\n" {
			t.Errorf("new pod after the driver replacement: cat = %q", got)
		}
		k.exec("after", "sh", "-c", "echo published by the new driver > /in/after.txt")
		g.requireObject(e.BucketAf, "after.txt", "published by the new driver\n")
		if n := checkGcsfuseInMounter(t, k, mounterUID); n != sessions+1 {
			t.Errorf("%d gcsfuse processes after the new pod, %d before: want exactly one more (the new bucket's; the shared session and the PV reuse theirs)", n, sessions)
		}

		// The whole window, from the reader's first line to now.
		tEnd := time.Now()
		r := k.reads("reader")
		if n := len(r.failures); n > 0 {
			show := r.failures
			if n > 10 {
				show = append(slices.Clone(show[:10]), fmt.Sprintf("... %d more", n-10))
			}
			t.Errorf("%d failed reads (of %d) while the driver pod was replaced:\n%s", n, n+len(r.ok), strings.Join(show, "\n"))
		}
		if len(r.ok) == 0 {
			t.Fatal("no successful read at all")
		}
		var before, during, after int
		gap, gapAt := tEnd.Sub(r.ok[len(r.ok)-1]), r.ok[len(r.ok)-1]
		for i, ts := range r.ok {
			switch {
			case ts.Before(tDelete):
				before++
			case ts.Before(tReady):
				during++
			default:
				after++
			}
			if i > 0 && ts.Sub(r.ok[i-1]) > gap {
				gap, gapAt = ts.Sub(r.ok[i-1]), r.ok[i-1]
			}
		}
		window := tEnd.Sub(r.ok[0])
		rel := fmt.Sprintf("%s after the delete", gapAt.Sub(tDelete).Round(100*time.Millisecond))
		if gapAt.Before(tDelete) {
			rel = fmt.Sprintf("%s before the delete", tDelete.Sub(gapAt).Round(100*time.Millisecond))
		}
		t.Logf("reads: %d ok, %d failed over %s; %d before the delete, %d while no new driver pod was Ready (%s), %d after; longest gap between successful reads %s (from %s, %s)",
			len(r.ok), len(r.failures), window.Round(100*time.Millisecond), before, during, tReady.Sub(tDelete).Round(100*time.Millisecond), after,
			gap.Round(time.Millisecond), gapAt.Format("15:04:05.000"), rel)
		if before == 0 || during == 0 || after == 0 {
			t.Errorf("reads before/while/after the replacement: %d/%d/%d, want some in each", before, during, after)
		}
		// A read loop every 0.1s: a gap of seconds means reads hung (a FUSE
		// daemon that stopped answering) rather than failed.
		if gap > 10*time.Second {
			t.Errorf("longest gap between successful reads %s (from %s): reads stalled", gap, gapAt.Format("15:04:05.000"))
		}

		// Still the same mounter pod, never restarted.
		if got := k.get("-n", e.DriverNS, "pods", "-l", mounterPods, "{.items[*].metadata.uid} {.items[*].status.containerStatuses[*].restartCount}"); got != mounterUID+" 0" {
			t.Errorf("mounter pod uid and restarts %q, want %q: replacing the driver touched the mounter", got, mounterUID+" 0")
		}
	})

	t.Run("workload identity: a pod reads as its own service account", func(t *testing.T) {
		k := k.with(t)
		g := g.with(t)
		k.apply(render(t, wiPodsYAML, e))
		k.waitReady("wi-reader", 180*time.Second)
		checkRestricted(t, k, "wi-reader")
		if got := k.exec("wi-reader", "cat", "/data/hello.txt"); got != "hello, wi-reader\n" {
			t.Fatalf("cat /data/hello.txt = %q", got)
		}
		// gcsfuse's reads came with the pod's federated token.
		principal := "system:serviceaccount:" + e.Namespace + ":wi-reader"
		if !g.sawPrincipal(e.BucketWI, principal) {
			t.Errorf("gcpfront saw no successful request on %s by %s", e.BucketWI, principal)
		}
		// The default service account may not: kubelet's NodePublish gets
		// PermissionDenied, the pod does not start, and says why.
		k.poll("PermissionDenied event for wi-stranger", 90*time.Second, func() (bool, string) {
			ev, _ := k.cmd("", "-n", e.Namespace, "get", "events", "--field-selector", "involvedObject.name=wi-stranger", "-o", "jsonpath={.items[*].message}")
			return strings.Contains(ev, "PermissionDenied") && strings.Contains(ev, "system:serviceaccount:"+e.Namespace+":default"), ev
		})
		if phase := k.get("pod", "wi-stranger", "{.status.phase}"); phase != "Pending" {
			t.Errorf("wi-stranger phase %q, want Pending (its volume must not mount)", phase)
		}
		// requiresRepublish: kubelet calls NodePublishVolume again (every
		// syncFrequency, 10 s here) with the pod's token, and the driver
		// hands it to the running gcsfuse session.
		k.poll("a token refresh in the driver log", 90*time.Second, func() (bool, string) {
			out, _ := k.cmd("", "-n", e.DriverNS, "logs", "-l", nodePods, "--tail=-1")
			return strings.Contains(out, "refreshed session credentials"), "no refresh logged yet"
		})
		k.run("-n", e.Namespace, "delete", "pod", "wi-reader", "wi-stranger", "--wait=true", "--timeout=90s")
	})

	t.Run("delete everything: no mount, no gcsfuse left", func(t *testing.T) {
		k := k.with(t)
		if len(gcsfuseProcesses(t)) == 0 {
			t.Fatal("no gcsfuse process found in a pod cgroup before deleting the pods: the check below would prove nothing")
		}
		k.run("-n", e.Namespace, "delete", "pod", "--all", "--wait=true", "--timeout=90s")
		k.run("-n", e.Namespace, "delete", "pvc", "--all", "--wait=true", "--timeout=60s")
		k.run("delete", "pv", e.PVName, "--wait=true", "--timeout=60s")
		k.run("delete", "namespace", e.Namespace, "--wait=true", "--timeout=90s")

		ours := []string{e.BucketIn, e.BucketPV, e.BucketWeb, e.BucketRd, e.BucketAf, e.BucketWI}
		var mounts []mountEntry
		var procs []string
		deadline := time.Now().Add(60 * time.Second)
		for {
			mounts = gcsfuseMounts(t, ours)
			procs = gcsfuseProcesses(t)
			if len(mounts) == 0 && len(procs) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("60s after deleting every pod:\n  gcsfuse mounts: %v\n  gcsfuse processes: %v", mounts, procs)
			}
			time.Sleep(time.Second)
		}
		if ents, err := os.ReadDir(filepath.Join(e.KubeletDir, "pods")); err == nil {
			for _, d := range ents {
				if _, err := os.Stat(filepath.Join(e.KubeletDir, "pods", d.Name(), "volumes", "kubernetes.io~csi")); err == nil {
					t.Errorf("pod dir %s still has csi volumes", d.Name())
				}
			}
		}
		// The driver is still there, healthy, and only the buckets' objects
		// remain. After the replacement above this is the new driver pod:
		// it unpublished what the old one published.
		if phase := k.get("-n", e.DriverNS, "pods", "-l", nodePods, "{.items[*].status.phase}"); phase != "Running" {
			t.Errorf("driver pod phase after the tests: %q", phase)
		}
		// ... and was never restarted (its exec liveness probe, `gcsfuse-csi
		// probe`, kept passing). The replaced pod is a new pod whose count
		// starts at 0; the old one's restarts were checked by nothing, but
		// a crash loop there would have failed the reads above.
		if n := k.get("-n", e.DriverNS, "pods", "-l", nodePods, "{.items[*].status.containerStatuses[*].restartCount}"); n != "0" {
			t.Errorf("driver container restarts: %q, want 0", n)
		}
		// The mounter is the pod that was there before the replacement (when
		// that subtest ran), never restarted: a restart would have killed
		// every mount.
		got := strings.Fields(k.get("-n", e.DriverNS, "pods", "-l", mounterPods, "{.items[*].metadata.uid} {.items[*].status.phase} {.items[*].status.containerStatuses[*].restartCount}"))
		if len(got) != 3 || got[1] != "Running" || got[2] != "0" || (mounterUID != "" && got[0] != mounterUID) {
			t.Errorf("mounter pod uid, phase, restarts %q, want %s Running 0", got, mounterUID)
		}
		t.Logf("no fuse.gcsfuse mount of %v in the host or pod mount namespaces, no gcsfuse process in any pod cgroup", ours)
	})
}

// checkRestricted asserts the pod runs as the restricted profile demands:
// non-root uid/gid, the fsGroup as a supplementary group, no capabilities,
// no privilege escalation, seccomp filtering.
func checkRestricted(t *testing.T, k *kube, pod string) {
	t.Helper()
	ids := k.exec(pod, "sh", "-c", "id -u; id -g; id -G")
	if ids != "1000\n1000\n1000 2000\n" {
		t.Errorf("%s: uid/gid/groups = %q, want 1000, 1000, 1000 2000", pod, ids)
	}
	status := k.exec(pod, "cat", "/proc/self/status")
	for _, want := range []string{"CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if !strings.Contains(status, want+"\n") {
			t.Errorf("%s: /proc/self/status lacks %q", pod, want)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// ---------------------------------------------------------------- manifests

const namespaceYAML = `
apiVersion: v1
kind: Namespace
metadata:
  name: {{.Namespace}}
  labels:
    e2e.gcsfuse-csi/test: "true"
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/enforce-version: latest
`

const privilegedPodYAML = `
apiVersion: v1
kind: Pod
metadata: {name: privileged, namespace: {{.Namespace}}}
spec:
  containers:
  - name: c
    image: {{.Busybox}}
    imagePullPolicy: Never
    securityContext: {privileged: true}
`

// restricted is the pod-level part every test pod shares.
const restricted = `
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 2
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    fsGroup: 2000
    seccompProfile: {type: RuntimeDefault}
`

const containerSecurity = `
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
`

var inlinePodYAML = `
apiVersion: v1
kind: Pod
metadata: {name: inline, namespace: {{.Namespace}}}
spec:` + restricted + `
  containers:
  - name: app
    image: {{.Busybox}}
    imagePullPolicy: Never
    command: [sleep, "3600"]` + containerSecurity + `
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    csi:
      driver: {{.Driver}}
      volumeAttributes: {bucketName: {{.BucketIn}}}
`

// wiPodsYAML: two pods on the private bucket with auth: workloadIdentity,
// one as the service account the bucket is granted to, one as default.
var wiPodsYAML = `
apiVersion: v1
kind: ServiceAccount
metadata: {name: wi-reader, namespace: {{.Namespace}}}
---
apiVersion: v1
kind: Pod
metadata: {name: wi-reader, namespace: {{.Namespace}}}
spec:
  serviceAccountName: wi-reader` + restricted + `
  containers:
  - name: app
    image: {{.Busybox}}
    imagePullPolicy: Never
    command: [sleep, "3600"]` + containerSecurity + `
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    csi:
      driver: {{.Driver}}
      readOnly: true
      volumeAttributes: {bucketName: {{.BucketWI}}, auth: workloadIdentity}
---
apiVersion: v1
kind: Pod
metadata: {name: wi-stranger, namespace: {{.Namespace}}}
spec:` + restricted + `
  containers:
  - name: app
    image: {{.Busybox}}
    imagePullPolicy: Never
    command: [sleep, "3600"]` + containerSecurity + `
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    csi:
      driver: {{.Driver}}
      readOnly: true
      volumeAttributes: {bucketName: {{.BucketWI}}, auth: workloadIdentity}
`

var pvYAML = `
apiVersion: v1
kind: PersistentVolume
metadata: {name: {{.PVName}}}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  mountOptions: [implicit-dirs]
  claimRef: {namespace: {{.Namespace}}, name: data}
  csi:
    driver: {{.Driver}}
    volumeHandle: {{.BucketPV}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data, namespace: {{.Namespace}}}
spec:
  storageClassName: ""
  volumeName: {{.PVName}}
  accessModes: [ReadWriteMany]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: pvc, namespace: {{.Namespace}}}
spec:` + restricted + `
  containers:
  - name: app
    image: {{.Busybox}}
    imagePullPolicy: Never
    command: [sleep, "3600"]` + containerSecurity + `
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: data}
`

var httpdPodYAML = `
apiVersion: v1
kind: Pod
metadata: {name: httpd, namespace: {{.Namespace}}}
spec:` + restricted + `
  containers:
  - name: httpd
    image: {{.Busybox}}
    imagePullPolicy: Never
    command: [httpd, -f, -v, -p, "8080", -h, /www]` + containerSecurity + `
    ports: [{containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /index.html, port: 8080}
      periodSeconds: 2
    volumeMounts: [{name: www, mountPath: /www}]
  volumes:
  - name: www
    csi:
      driver: {{.Driver}}
      readOnly: true
      volumeAttributes: {bucketName: {{.BucketWeb}}, implicitDirs: "true"}
`

// readerPodYAML reads a file from an inline volume and from the PV (staged
// by the pvc pod) every 0.1s, each with a new open, and prints one line per
// round: "ok N" or "FAIL N: what cat said". kubectl logs --timestamps gives
// each line the time the runtime received it.
var readerPodYAML = `
apiVersion: v1
kind: Pod
metadata: {name: reader, namespace: {{.Namespace}}}
spec:` + restricted + `
  containers:
  - name: reader
    image: {{.Busybox}}
    imagePullPolicy: Never
    command:
    - sh
    - -c
    - |
      i=0
      while :; do
        i=$((i+1))
        if a=$(cat /in/hello.txt 2>&1) && b=$(cat /pv/hello.txt 2>&1) &&
           [ "$a" = "hello from the reader bucket" ] && [ "$b" = "hello from the PV bucket" ]; then
          echo "ok $i"
        else
          echo "FAIL $i: $a | $b" | tr '\n' ' '; echo
        fi
        sleep 0.1
      done` + containerSecurity + `
    volumeMounts: [{name: in, mountPath: /in}, {name: pv, mountPath: /pv}]
  volumes:
  - name: in
    csi:
      driver: {{.Driver}}
      readOnly: true
      volumeAttributes: {bucketName: {{.BucketRd}}}
  - name: pv
    persistentVolumeClaim: {claimName: data, readOnly: true}
`

// afterPodYAML is published by the replacement driver: an inline volume of
// a bucket nobody mounted yet (read-write), one of the reader's bucket (its
// gcsfuse session, started by the old driver, is shared), and the PV.
var afterPodYAML = `
apiVersion: v1
kind: Pod
metadata: {name: after, namespace: {{.Namespace}}}
spec:` + restricted + `
  containers:
  - name: app
    image: {{.Busybox}}
    imagePullPolicy: Never
    command: [sleep, "3600"]` + containerSecurity + `
    volumeMounts: [{name: in, mountPath: /in}, {name: shared, mountPath: /shared}, {name: pv, mountPath: /pv}]
  volumes:
  - name: in
    csi:
      driver: {{.Driver}}
      volumeAttributes: {bucketName: {{.BucketAf}}}
  - name: shared
    csi:
      driver: {{.Driver}}
      volumeAttributes: {bucketName: {{.BucketRd}}}
  - name: pv
    persistentVolumeClaim: {claimName: data}
`

func render(t *testing.T, text string, e *env) string {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(text)).Execute(&b, e); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// ---------------------------------------------------------------- kubectl

// Label selectors of the chart's pods (release gcsfuse-csi).
const (
	nodePods    = "app.kubernetes.io/name=gcsfuse-csi,app.kubernetes.io/component=node"
	mounterPods = "app.kubernetes.io/name=gcsfuse-csi,app.kubernetes.io/component=mounter"
)

type kube struct {
	t *testing.T
	e *env
}

func (k *kube) with(t *testing.T) *kube { return &kube{t: t, e: k.e} }

func (k *kube) cmd(stdin string, args ...string) (string, error) {
	c := exec.Command(k.e.Kubectl, append([]string{"--kubeconfig", k.e.Kubeconfig}, args...)...)
	if stdin != "" {
		c.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	err := c.Run()
	return out.String(), err
}

func (k *kube) run(args ...string) string {
	k.t.Helper()
	out, err := k.cmd("", args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (k *kube) runQuiet(args ...string) { k.cmd("", args...) }

func (k *kube) apply(manifest string) {
	k.t.Helper()
	if out, err := k.applyErr(manifest); err != nil {
		k.t.Fatalf("kubectl apply: %v\n%s\n--- manifest:\n%s", err, out, manifest)
	}
}

func (k *kube) applyErr(manifest string) (string, error) { return k.cmd(manifest, "apply", "-f", "-") }

// get returns a jsonpath of an object in the test namespace (or wherever
// args say).
func (k *kube) get(args ...string) string {
	k.t.Helper()
	jp := args[len(args)-1]
	a := append([]string{"-n", k.e.Namespace, "get"}, args[:len(args)-1]...)
	if args[0] == "-n" {
		a = append([]string{"get"}, args[:len(args)-1]...)
	}
	return k.run(append(a, "-o", "jsonpath="+jp)...)
}

func (k *kube) exec(pod string, argv ...string) string {
	k.t.Helper()
	out, err := k.execErr(pod, argv...)
	if err != nil {
		k.t.Fatalf("exec in %s: %s: %v\n%s", pod, strings.Join(argv, " "), err, out)
	}
	return out
}

func (k *kube) execErr(pod string, argv ...string) (string, error) {
	return k.cmd("", append([]string{"-n", k.e.Namespace, "exec", pod, "--"}, argv...)...)
}

func (k *kube) waitFor(what string, timeout time.Duration, args ...string) {
	k.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		out, err := k.cmd("", args...)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: not after %s: %v\n%s", what, timeout, err, out)
		}
		time.Sleep(time.Second)
	}
}

func (k *kube) waitReady(pod string, timeout time.Duration) {
	k.t.Helper()
	start := time.Now()
	out, err := k.cmd("", "-n", k.e.Namespace, "wait", "--for=condition=Ready", "pod/"+pod, "--timeout="+timeout.String())
	if err != nil {
		d, _ := k.cmd("", "-n", k.e.Namespace, "describe", "pod", pod)
		logs, _ := k.cmd("", "-n", k.e.DriverNS, "logs", "-l", "app.kubernetes.io/name=gcsfuse-csi", "--prefix", "--tail=40")
		k.t.Fatalf("pod %s not Ready: %v\n%s\n--- describe:\n%s\n--- driver logs:\n%s", pod, err, out, tail(d, 30), logs)
	}
	k.t.Logf("pod %s Ready in %s", pod, time.Since(start).Round(100*time.Millisecond))
}

// poll calls cond every half second until it holds; after timeout the
// test fails with what cond last reported.
func (k *kube) poll(what string, timeout time.Duration, cond func() (bool, string)) {
	k.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: not after %s; last: %s", what, timeout, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// readLog is what the reader pod printed: the times of its successful reads
// and its failure lines.
type readLog struct {
	ok       []time.Time
	failures []string
}

func (k *kube) reads(pod string) readLog {
	k.t.Helper()
	out := k.run("-n", k.e.Namespace, "logs", pod, "--timestamps")
	var r readLog
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue // nothing logged yet
		}
		ts, msg, _ := strings.Cut(line, " ")
		at, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			k.t.Fatalf("%s log line %q: %v", pod, line, err)
		}
		switch {
		case strings.HasPrefix(msg, "ok "):
			r.ok = append(r.ok, at)
		case strings.HasPrefix(msg, "FAIL "):
			r.failures = append(r.failures, at.Format("15:04:05.000")+" "+msg)
		default:
			k.t.Fatalf("%s log line %q: want ok or FAIL", pod, line)
		}
	}
	return r
}

// waitReads waits until pod has logged n successful reads after since.
func (k *kube) waitReads(pod string, n int, since time.Time, timeout time.Duration) {
	k.t.Helper()
	k.poll(fmt.Sprintf("%d reads in %s after %s", n, pod, since.Format("15:04:05.000")), timeout, func() (bool, string) {
		r := k.reads(pod)
		c := 0
		for _, ts := range r.ok {
			if ts.After(since) {
				c++
			}
		}
		return c >= n || len(r.failures) > 0, fmt.Sprintf("%d ok after it, failures %q", c, r.failures)
	})
}

func (k *kube) dumpState() {
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"-n", k.e.Namespace, "get", "events", "--sort-by=.lastTimestamp"},
		{"-n", k.e.DriverNS, "logs", "-l", "app.kubernetes.io/name=gcsfuse-csi", "--prefix", "--tail=80"},
	} {
		out, _ := k.cmd("", args...)
		k.t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// ---------------------------------------------------------------- fake GCS

type fakeGCS struct {
	t        *testing.T
	base     string
	adminURL string // gcpfront's admin API
}

func (g *fakeGCS) with(t *testing.T) *fakeGCS {
	return &fakeGCS{t: t, base: g.base, adminURL: g.adminURL}
}

// admin calls gcpfront's admin API: POST /op?k=v&...
func (g *fakeGCS) admin(op string, kv ...string) {
	g.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	if code, body := g.do("POST", g.adminURL+"/"+op+"?"+q.Encode(), ""); code != http.StatusOK {
		g.t.Fatalf("gcpfront %s %v: %d %s", op, kv, code, body)
	}
}

// sawPrincipal reports whether gcpfront let principal through on bucket.
func (g *fakeGCS) sawPrincipal(bucket, principal string) bool {
	g.t.Helper()
	code, body := g.do("GET", g.adminURL+"/requests", "")
	if code != http.StatusOK {
		g.t.Fatalf("gcpfront requests: %d %s", code, body)
	}
	var reqs []struct {
		Bucket, Principal string
		Status            int
	}
	if err := json.Unmarshal([]byte(body), &reqs); err != nil {
		g.t.Fatal(err)
	}
	for _, r := range reqs {
		if r.Bucket == bucket && r.Principal == principal && r.Status/100 == 2 {
			return true
		}
	}
	return false
}

func (g *fakeGCS) do(method, u, body string) (int, string) {
	g.t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		g.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (g *fakeGCS) createBucket(name string) {
	g.t.Helper()
	if code, body := g.do("POST", g.base+"/storage/v1/b?project=e2e", `{"name":"`+name+`"}`); code != http.StatusOK {
		g.t.Fatalf("create bucket %s: %d %s", name, code, body)
	}
}

func (g *fakeGCS) put(bucket, object, content string) {
	g.t.Helper()
	u := g.base + "/upload/storage/v1/b/" + bucket + "/o?uploadType=media&name=" + url.QueryEscape(object)
	if code, body := g.do("POST", u, content); code != http.StatusOK {
		g.t.Fatalf("upload gs://%s/%s: %d %s", bucket, object, code, body)
	}
}

// requireObject waits (gcsfuse uploads when the file is closed, which is
// before exec returns, but allow for slack) for the object to exist with
// the content, checking metadata and media through the JSON API.
func (g *fakeGCS) requireObject(bucket, object, content string) {
	g.t.Helper()
	obj := g.base + "/storage/v1/b/" + bucket + "/o/" + url.PathEscape(object)
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, meta := g.do("GET", obj, "")
		if code == http.StatusOK {
			var m struct {
				Name string `json:"name"`
				Size string `json:"size"`
			}
			if err := json.Unmarshal([]byte(meta), &m); err != nil {
				g.t.Fatalf("object metadata %s: %v", meta, err)
			}
			_, body := g.do("GET", obj+"?alt=media", "")
			if m.Name != object || m.Size != strconv.Itoa(len(content)) || body != content {
				g.t.Fatalf("gs://%s/%s: name %q size %s content %q, want size %d content %q", bucket, object, m.Name, m.Size, body, len(content), content)
			}
			g.t.Logf("fake GCS: gs://%s/%s exists, %s bytes, content %q", bucket, object, m.Size, strings.TrimSpace(body))
			return
		}
		if time.Now().After(deadline) {
			_, list := g.do("GET", g.base+"/storage/v1/b/"+bucket+"/o", "")
			g.t.Fatalf("gs://%s/%s: HTTP %d after 15s; bucket listing: %s", bucket, object, code, list)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// ---------------------------------------------------------------- the node

type mountEntry struct {
	ns, target, fstype, source string
}

func (m mountEntry) String() string {
	return fmt.Sprintf("%s %s on %s (%s)", m.ns, m.source, m.target, m.fstype)
}

func readMountinfo(path string) ([]mountEntry, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+2 >= len(fields) || len(fields) < 5 {
			continue
		}
		out = append(out, mountEntry{ns: path, target: unescape(fields[4]), fstype: fields[sep+1], source: unescape(fields[sep+2])})
	}
	return out, sc.Err()
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// requireHostMount asserts the host's mount table has a fuse.gcsfuse mount
// of bucket at target, or (for a directory that holds per-volume subdirs)
// somewhere under it.
func requireHostMount(t *testing.T, target, bucket string) {
	t.Helper()
	ms, err := readMountinfo("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.fstype == "fuse.gcsfuse" && strings.HasPrefix(m.source, bucket+":") &&
			(m.target == target || strings.HasPrefix(m.target, target+"/")) {
			t.Logf("host mount: %s on %s", m.source, m.target)
			return
		}
	}
	var near []string
	for _, m := range ms {
		if strings.HasPrefix(m.target, filepath.Dir(target)) || m.fstype == "fuse.gcsfuse" {
			near = append(near, m.String())
		}
	}
	t.Fatalf("no fuse.gcsfuse mount of %s at %s on the host; related mounts:\n%s", bucket, target, strings.Join(near, "\n"))
}

// podProcesses lists processes in Kubernetes pod cgroups: "pid comm args".
func podProcesses(t *testing.T) map[int][2]string {
	t.Helper()
	out := map[int][2]string{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		cg, err := os.ReadFile(d + "/cgroup")
		if err != nil || !bytes.Contains(cg, []byte("kubepods")) {
			continue
		}
		comm, _ := os.ReadFile(d + "/comm")
		args, _ := os.ReadFile(d + "/cmdline")
		out[pid] = [2]string{strings.TrimSpace(string(comm)), strings.TrimSpace(strings.ReplaceAll(string(args), "\x00", " "))}
	}
	return out
}

// gcsfuseProcesses: gcsfuse processes in pod cgroups (gcsfuse runs in the
// mounter pod, or in the driver container with mounter.enabled=false).
// Processes outside pods (other tests on this machine) are not the
// cluster's and are ignored.
func gcsfuseProcesses(t *testing.T) []string {
	var out []string
	for pid, p := range podProcesses(t) {
		if p[0] == "gcsfuse" {
			out = append(out, fmt.Sprintf("%d %s", pid, p[1]))
		}
	}
	return out
}

// checkGcsfuseInMounter asserts that there are gcsfuse processes and that
// every one runs in the mounter pod (its cgroup), as the mounter's uid,
// without capabilities, with no_new_privs and seccomp: not in the driver
// pod, so replacing that pod cannot take them down. It returns how many
// there are.
func checkGcsfuseInMounter(t *testing.T, k *kube, mounterUID string) int {
	t.Helper()
	uid := k.get("-n", k.e.DriverNS, "daemonsets", "-l", "app.kubernetes.io/component=mounter", "{.items[*].spec.template.spec.securityContext.runAsUser}")
	procs := gcsfuseProcesses(t)
	if len(procs) == 0 {
		t.Fatal("no gcsfuse process in any pod cgroup")
	}
	// cgroupfs names the pod's cgroup pod<uid>, systemd pod<uid with _>.
	inPod := []string{"pod" + mounterUID, "pod" + strings.ReplaceAll(mounterUID, "-", "_")}
	for _, p := range procs {
		pid, _, _ := strings.Cut(p, " ")
		cg, err1 := os.ReadFile("/proc/" + pid + "/cgroup")
		st, err2 := os.ReadFile("/proc/" + pid + "/status")
		if err1 != nil || err2 != nil {
			continue // exited meanwhile
		}
		if !strings.Contains(string(cg), inPod[0]) && !strings.Contains(string(cg), inPod[1]) {
			t.Errorf("gcsfuse %s is not in the mounter pod %s's cgroup:\n%s", p, mounterUID, cg)
		}
		status := map[string]string{}
		for _, line := range strings.Split(string(st), "\n") {
			if key, val, ok := strings.Cut(line, ":"); ok {
				status[key] = strings.TrimSpace(val)
			}
		}
		if ids := strings.Fields(status["Uid"]); len(ids) == 0 || ids[0] != uid || slices.Contains(ids, "0") {
			t.Errorf("gcsfuse %s: Uid %q, want the mounter's %s", p, status["Uid"], uid)
		}
		if status["CapEff"] != "0000000000000000" || status["CapPrm"] != "0000000000000000" || status["NoNewPrivs"] != "1" || status["Seccomp"] != "2" {
			t.Errorf("gcsfuse %s: CapEff %s CapPrm %s NoNewPrivs %s Seccomp %s, want no capabilities, no_new_privs, seccomp filter",
				p, status["CapEff"], status["CapPrm"], status["NoNewPrivs"], status["Seccomp"])
		}
	}
	if !t.Failed() {
		t.Logf("%d gcsfuse processes, all in the mounter pod as uid %s without capabilities", len(procs), uid)
	}
	return len(procs)
}

// gcsfuseMounts: fuse.gcsfuse mounts of the given buckets in the host's
// mount namespace and in every pod process's (the driver container's
// included).
func gcsfuseMounts(t *testing.T, buckets []string) []mountEntry {
	t.Helper()
	files := []string{"/proc/self/mountinfo"}
	for pid := range podProcesses(t) {
		files = append(files, fmt.Sprintf("/proc/%d/mountinfo", pid))
	}
	var out []mountEntry
	for _, f := range files {
		ms, err := readMountinfo(f)
		if err != nil {
			continue // the process exited
		}
		for _, m := range ms {
			if !strings.HasPrefix(m.fstype, "fuse") {
				continue
			}
			for _, b := range buckets {
				if strings.HasPrefix(m.source, b+":") || m.source == b {
					out = append(out, m)
				}
			}
		}
	}
	return out
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
