package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/fakegcp"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// Principals of the credentials test.
const (
	nodeSA     = "node@proj.iam.gserviceaccount.com"     // the node's ADC
	readerSA   = "reader@proj.iam.gserviceaccount.com"   // a volume's secret key
	strangerSA = "stranger@proj.iam.gserviceaccount.com" // a valid key without access
	appSA      = "app@proj.iam.gserviceaccount.com"      // impersonated by a pod
	gsaBucket  = "gsa-only-bucket"                       // only appSA may use it
	audience   = "gcsfuse-csi-test"                      // tokenRequests audience
)

func ksaPrincipal(ns string) string { return "system:serviceaccount:" + ns + ":app" }

// credEnv is the e2e environment behind an auth-checking GCS front, with a
// local OAuth token endpoint, STS and IAM Credentials, and the node's ADC
// (GOOGLE_APPLICATION_CREDENTIALS) a key of nodeSA.
type credEnv struct {
	*env
	gcp     *fakegcp.Server
	secrets []string // everything that must never show up in a log, a command line or a file
}

func newCredEnv(t *testing.T) *credEnv {
	t.Helper()
	gcp, err := fakegcp.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcp.Stop)
	ce := &credEnv{gcp: gcp}
	for _, p := range []string{nodeSA, readerSA, ksaPrincipal("team-a"), ksaPrincipal("team-b"), ksaPrincipal("team-d"), ksaPrincipal("team-e")} {
		gcp.Grant(bucket, p)
	}
	gcp.Grant(gsaBucket, appSA)
	gcp.AllowImpersonation(ksaPrincipal("team-c"), appSA)
	nodeKey := gcp.ServiceAccountKey(nodeSA)
	ce.remember(nodeKey)
	cfg := envConfig{
		front: gcp.Wrap,
		driverArgs: []string{"--sts-endpoint=" + gcp.STSURL, "--iam-credentials-endpoint=" + gcp.IAMURL,
			"--workload-identity-provider=" + gcp.Provider, "--token-audience=" + audience, "-v=5"},
		setup: func(t *testing.T, dir string) {
			// Readable by the mounter (nobody) and root only.
			path := filepath.Join(dir, "node-key.json")
			if err := os.WriteFile(path, nodeKey, 0o400); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(path, nobody, nobody); err != nil {
				t.Fatal(err)
			}
			t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", path)
		},
	}
	ce.env = newEnvWith(t, cfg, harness.Object(gsaBucket, "gsa.txt", "for the app account\n"))
	// Runs before the env's own cleanups stop the driver: the logs are
	// complete once every test's unpublish has run.
	t.Cleanup(func() { ce.assertNoSecrets(t) })
	return ce
}

// remember records a key file's private key and every token, to be looked
// for in logs, command lines and files.
func (ce *credEnv) remember(secret []byte) {
	var key struct {
		PrivateKey string `json:"private_key"`
	}
	if json.Unmarshal(secret, &key) == nil && key.PrivateKey != "" {
		// One line of the PEM body: a log would show it whole or escaped.
		lines := strings.Split(key.PrivateKey, "\n")
		ce.secrets = append(ce.secrets, lines[len(lines)/2])
		return
	}
	ce.secrets = append(ce.secrets, string(secret))
}

func (ce *credEnv) ksa(ns string, ttl time.Duration) string {
	tok := ce.gcp.KSAToken(ns, "app", audience, ttl)
	ce.secrets = append(ce.secrets, tok)
	return tok
}

// tokens is volume_context's csi.storage.k8s.io/serviceAccount.tokens, as
// kubelet writes it.
func tokens(tok string, ttl time.Duration) string {
	b, _ := json.Marshal(map[string]any{audience: map[string]string{"token": tok, "expirationTimestamp": time.Now().Add(ttl).UTC().Format(time.RFC3339)}})
	return string(b)
}

func wiAttrs(tok string, ttl time.Duration, kv ...string) map[string]string {
	attrs := map[string]string{
		"csi.storage.k8s.io/ephemeral": "true", "bucketName": bucket, "auth": "workloadIdentity",
		"csi.storage.k8s.io/serviceAccount.tokens": tokens(tok, ttl),
		"csi.storage.k8s.io/pod.name":              "p", "csi.storage.k8s.io/pod.namespace": "ns",
	}
	for i := 0; i+1 < len(kv); i += 2 {
		attrs[kv[i]] = kv[i+1]
	}
	return attrs
}

// principals lists who the front saw read bucket successfully.
func (ce *credEnv) principals(bkt string) []string {
	var out []string
	for _, r := range ce.gcp.Requests() {
		if r.Bucket == bkt && r.Status/100 == 2 && !slices.Contains(out, r.Principal) {
			out = append(out, r.Principal)
		}
	}
	slices.Sort(out)
	return out
}

func (ce *credEnv) stageWith(t *testing.T, volumeID, stage string, secrets map[string]string) error {
	t.Helper()
	mkdir(t, stage)
	t.Cleanup(func() {
		ce.cleanupCall(t, "unstage "+stage, func(ctx context.Context) error { return ce.unstage(ctx, volumeID, stage) })
	})
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	_, err := ce.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: volumeID, StagingTargetPath: stage, VolumeCapability: rwx, Secrets: secrets})
	return err
}

func mustRead(t *testing.T, path, want string) {
	t.Helper()
	got, err := readWithin(path, 20*time.Second)
	if err != nil || got != want {
		t.Fatalf("read %s: %q, %v; want %q", path, got, err, want)
	}
}

// TestCredentials mounts through a GCS front that checks every request's
// bearer token, with each credential mode, on the split deployment.
func TestCredentials(t *testing.T) {
	ce := newCredEnv(t)
	t.Run("node_adc", ce.testNodeADC)
	t.Run("secret_key", ce.testSecretKey)
	t.Run("bad_keys", ce.testBadKeys)
	t.Run("workload_identity", ce.testWorkloadIdentity)
	t.Run("token_refresh", ce.testTokenRefresh)
}

// No auth attribute, no secret: the node's ADC (a key file here), whose
// tokens the mounter serves to gcsfuse.
func (ce *credEnv) testNodeADC(t *testing.T) {
	stage, target := ce.path("adc/stage"), ce.path("adc/target")
	ce.mustStage(t, bucket, stage, rwx, nil)
	ce.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	mustRead(t, filepath.Join(target, "top.txt"), fixture["top.txt"])
	if got := ce.principals(bucket); !slices.Equal(got, []string{nodeSA}) {
		t.Errorf("the front saw %v read the bucket, want the node's account only", got)
	}
}

// A key from nodeStageSecretRef: gcsfuse reads as that account.
func (ce *credEnv) testSecretKey(t *testing.T) {
	key := ce.gcp.ServiceAccountKey(readerSA)
	ce.remember(key)
	stage, target := ce.path("key/stage"), ce.path("key/target")
	before := len(ce.gcsfuse(t))
	if err := ce.stageWith(t, bucket, stage, map[string]string{"key.json": string(key)}); err != nil {
		t.Fatal(err)
	}
	ce.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	mustRead(t, filepath.Join(target, "a/x.txt"), fixture["a/x.txt"])
	if n := len(ce.gcsfuse(t)); n != before+1 {
		t.Errorf("%d gcsfuse after staging with a key, want %d (one more)", n, before+1)
	}
	if got := ce.principals(bucket); !slices.Contains(got, readerSA) {
		t.Errorf("the front saw %v, want %s among them", got, readerSA)
	}
}

// A deleted key and a key without access fail the stage with
// PermissionDenied that says what to fix, and leave nothing behind.
func (ce *credEnv) testBadKeys(t *testing.T) {
	gone := ce.gcp.UnregisteredKey(readerSA)
	stranger := ce.gcp.ServiceAccountKey(strangerSA)
	ce.remember(gone)
	ce.remember(stranger)
	before := ce.gcsfuse(t)
	for _, tc := range []struct {
		name, key string
		want      []string
	}{
		{"deleted key", string(gone), []string{"rejected by its token endpoint", readerSA, "put a current key in the secret"}},
		{"no access", string(stranger), []string{strangerSA, "may not list", gsaNote}},
	} {
		stage := ce.path("bad/" + strings.ReplaceAll(tc.name, " ", "-"))
		err := ce.stageWith(t, bucket, stage, map[string]string{"key.json": tc.key})
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("%s: %v, want PermissionDenied", tc.name, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(status.Convert(err).Message(), w) {
				t.Errorf("%s: message %q lacks %q", tc.name, status.Convert(err).Message(), w)
			}
		}
		if ce.mountsAt(t, stage) != 0 {
			t.Errorf("%s: a mount was left at %s", tc.name, stage)
		}
	}
	if after := ce.gcsfuse(t); !slices.Equal(after, before) {
		t.Errorf("gcsfuse processes %v after refused stages, want %v", after, before)
	}
}

// gsaNote is the hint a PermissionDenied for a bucket carries.
const gsaNote = "grant it"

// Different identities never share a gcsfuse; the same identity does; a
// pod impersonating a Google service account reads as that account.
func (ce *credEnv) testWorkloadIdentity(t *testing.T) {
	before := len(ce.gcsfuse(t))
	pods := []struct{ name, ns string }{{"pod-a", "team-a"}, {"pod-b", "team-b"}, {"pod-a2", "team-a"}}
	for _, p := range pods {
		target := ce.path("wi/" + p.name)
		ce.mustPublish(t, inline("csi-"+p.name, target, rwx, wiAttrs(ce.ksa(p.ns, time.Hour), time.Hour)))
		mustRead(t, filepath.Join(target, "top.txt"), fixture["top.txt"])
	}
	if n := len(ce.gcsfuse(t)); n != before+2 {
		t.Errorf("%d new gcsfuse for identities a, b, a: want 2 (a's pods share)", n-before)
	}
	got := ce.principals(bucket)
	for _, ns := range []string{"team-a", "team-b"} {
		if !slices.Contains(got, ksaPrincipal(ns)) {
			t.Errorf("the front saw %v, want %s among them", got, ksaPrincipal(ns))
		}
	}

	// team-c may not read the bucket itself; it impersonates appSA.
	target := ce.path("wi/pod-c")
	ce.mustPublish(t, inline("csi-pod-c", target, rwx, wiAttrs(ce.ksa("team-c", time.Hour), time.Hour, "bucketName", gsaBucket, "googleServiceAccount", appSA)))
	mustRead(t, filepath.Join(target, "gsa.txt"), "for the app account\n")
	if got := ce.principals(gsaBucket); !slices.Equal(got, []string{appSA}) {
		t.Errorf("the front saw %v read %s, want %s only", got, gsaBucket, appSA)
	}
}

// Access tokens live 12 s here. Pod D's pod token expires at 14 s but
// kubelet republishes it with a fresh one: reads go on past both expiries.
// Pod E's is never renewed: once its token and access token have expired,
// its reads fail, which shows that D's work because of the refresh.
func (ce *credEnv) testTokenRefresh(t *testing.T) {
	ce.gcp.SetTokenTTL(12 * time.Second)
	t.Cleanup(func() { ce.gcp.SetTokenTTL(time.Hour) })
	const podTTL = 14 * time.Second
	start := time.Now()
	attrs := func(tok string, ttl time.Duration) map[string]string {
		return wiAttrs(tok, ttl, "metadataCacheTTLSeconds", "0", "metadataCacheNegativeTTLSeconds", "0")
	}
	d, e := ce.path("refresh/pod-d"), ce.path("refresh/pod-e")
	ce.mustPublish(t, inline("csi-pod-d", d, rwx, attrs(ce.ksa("team-d", podTTL), podTTL)))
	ce.mustPublish(t, inline("csi-pod-e", e, rwx, attrs(ce.ksa("team-e", podTTL), podTTL)))
	mustRead(t, filepath.Join(d, "top.txt"), fixture["top.txt"])
	mustRead(t, filepath.Join(e, "top.txt"), fixture["top.txt"])

	// kubelet's periodic republish of D with a renewed token.
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if _, err := ce.node().NodePublishVolume(ctx, inline("csi-pod-d", d, rwx, attrs(ce.ksa("team-d", time.Hour), time.Hour))); err != nil {
		t.Fatalf("republish: %v", err)
	}
	time.Sleep(time.Until(start.Add(podTTL + 2*time.Second)))
	for _, name := range []string{"late-d.txt", "late-e.txt"} {
		w := ce.gcs.Client.Bucket(bucket).Object(name).NewWriter(context.Background())
		w.Write([]byte("written after the first tokens expired\n"))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	mustRead(t, filepath.Join(d, "late-d.txt"), "written after the first tokens expired\n")
	if got, err := readWithin(filepath.Join(e, "late-e.txt"), 20*time.Second); err == nil {
		t.Errorf("pod E read %q with an expired pod token and no republish: the refresh test proves nothing", got)
	}
	if !strings.Contains(readAll(t, ce.mounterLog), "expired") {
		t.Errorf("the mounter log does not say why pod E's token failed")
	}
}

func readAll(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertNoSecrets looks for every key and token of the test in the driver's
// and the mounter's logs, in every process's command line, and in every
// file under the test directory.
func (ce *credEnv) assertNoSecrets(t *testing.T) {
	t.Helper()
	secrets := append(slices.Clone(ce.secrets), ce.gcp.AccessTokens()...)
	if len(ce.gcp.AccessTokens()) == 0 {
		t.Error("no access token was issued: the secrets check would look for nothing")
	}
	check := func(where string, content []byte) {
		for _, s := range secrets {
			if strings.Contains(string(content), s) {
				t.Errorf("a secret (%.12s...) appears in %s", s, where)
			}
		}
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil {
			check(p, b)
		}
	}
	_ = filepath.Walk(ce.dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || strings.HasSuffix(path, "node-key.json") {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil {
			check(path, b)
		}
		return nil
	})
	if !strings.Contains(readAll(t, ce.log), "NodePublishVolume") {
		t.Error("the driver log has no request payloads: the check above looked at nothing (want -v=5)")
	}
}
