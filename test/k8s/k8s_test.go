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
	Driver      string // CSI driver name
	DriverNS    string // namespace of the driver DaemonSet
	Busybox     string // busybox image present on the node
	RunID       string // makes bucket, namespace and PV names unique
	Namespace   string
	BucketIn    string // inline ephemeral volume
	BucketPV    string // static PV/PVC
	BucketWeb   string // httpd
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
		Driver:     os.Getenv("E2E_K8S_DRIVER"),
		DriverNS:   os.Getenv("E2E_K8S_DRIVER_NAMESPACE"),
		Busybox:    os.Getenv("E2E_K8S_BUSYBOX_IMAGE"),
	}
	for name, v := range map[string]string{
		"E2E_K8S_KUBECTL": e.Kubectl, "E2E_K8S_KUBECONFIG": e.Kubeconfig, "E2E_K8S_KUBELET_DIR": e.KubeletDir,
		"E2E_K8S_FAKE_GCS": e.FakeGCS, "E2E_K8S_DRIVER": e.Driver, "E2E_K8S_DRIVER_NAMESPACE": e.DriverNS,
		"E2E_K8S_BUSYBOX_IMAGE": e.Busybox,
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
	g := &fakeGCS{t: t, base: e.FakeGCS}

	for _, b := range []string{e.BucketIn, e.BucketPV, e.BucketWeb} {
		g.createBucket(b)
	}
	g.put(e.BucketIn, "hello.txt", "hello from the inline bucket\n")
	g.put(e.BucketPV, "hello.txt", "hello from the PV bucket\n")
	g.put(e.BucketPV, "docs/nested.txt", "nested object\n")
	g.put(e.BucketWeb, "index.html", "<h1>served from "+e.BucketWeb+"</h1>\n")
	g.put(e.BucketWeb, "assets/app.txt", "asset body\n")

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
		t.Skip("not yet: gcsfuse runs inside the driver container, so deleting the driver pod ends the node's mounts; " +
			"this check comes with the separate mounter DaemonSet (later issue)")
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

		ours := []string{e.BucketIn, e.BucketPV, e.BucketWeb}
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
		// The driver is still there, healthy, and only the buckets' objects remain.
		if phase := k.get("-n", e.DriverNS, "pods", "-l", "app.kubernetes.io/name=gcsfuse-csi", "{.items[*].status.phase}"); phase != "Running" {
			t.Errorf("driver pod phase after the tests: %q", phase)
		}
		// ... and was never restarted (its exec liveness probe, `gcsfuse-csi probe`, kept passing).
		if n := k.get("-n", e.DriverNS, "pods", "-l", "app.kubernetes.io/name=gcsfuse-csi", "{.items[*].status.containerStatuses[*].restartCount}"); n != "0" {
			t.Errorf("driver container restarts: %q, want 0", n)
		}
		t.Logf("no fuse.gcsfuse mount of %v in the host or driver mount namespaces, no gcsfuse process in any pod cgroup", ours)
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

func render(t *testing.T, text string, e *env) string {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New("").Parse(text)).Execute(&b, e); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// ---------------------------------------------------------------- kubectl

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
		logs, _ := k.cmd("", "-n", k.e.DriverNS, "logs", "-l", "app.kubernetes.io/name=gcsfuse-csi", "--tail=40")
		k.t.Fatalf("pod %s not Ready: %v\n%s\n--- describe:\n%s\n--- driver logs:\n%s", pod, err, out, tail(d, 30), logs)
	}
	k.t.Logf("pod %s Ready in %s", pod, time.Since(start).Round(100*time.Millisecond))
}

func (k *kube) dumpState() {
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide"},
		{"-n", k.e.Namespace, "get", "events", "--sort-by=.lastTimestamp"},
		{"-n", k.e.DriverNS, "logs", "-l", "app.kubernetes.io/name=gcsfuse-csi", "--tail=80"},
	} {
		out, _ := k.cmd("", args...)
		k.t.Logf("kubectl %s:\n%s", strings.Join(args, " "), out)
	}
}

// ---------------------------------------------------------------- fake GCS

type fakeGCS struct {
	t    *testing.T
	base string
}

func (g *fakeGCS) with(t *testing.T) *fakeGCS { return &fakeGCS{t: t, base: g.base} }

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
// driver container). Processes outside pods (other tests on this machine)
// are not the cluster's and are ignored.
func gcsfuseProcesses(t *testing.T) []string {
	var out []string
	for pid, p := range podProcesses(t) {
		if p[0] == "gcsfuse" {
			out = append(out, fmt.Sprintf("%d %s", pid, p[1]))
		}
	}
	return out
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
