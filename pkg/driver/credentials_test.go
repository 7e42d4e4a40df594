package driver

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc/codes"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// testKey is a service-account key file's shape; the private key is not a
// real one (nothing here signs with it).
func testKey(email string) string {
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "client_email": email, "private_key_id": "kid-" + email[:3],
		"private_key": "-----BEGIN PRIVATE KEY-----\nSECRETMATERIAL\n-----END PRIVATE KEY-----\n", "token_uri": "http://127.0.0.1:1/token",
	})
	return string(b)
}

// ksaToken is a JWT-shaped pod token with subject ns/name (unsigned: the
// driver never verifies it, STS does).
func ksaToken(ns, name, nonce string) string {
	enc := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(map[string]any{"sub": "system:serviceaccount:" + ns + ":" + name, "jti": nonce})
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(payload) + ".SIG" + nonce
}

func tokensAttr(audience, token string) string {
	b, _ := json.Marshal(map[string]any{audience: map[string]any{"token": token, "expirationTimestamp": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}})
	return string(b)
}

func TestResolveCredentials(t *testing.T) {
	e := newEnv(t)
	e.d.opts.WIProvider = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/k"
	key := testKey("reader@p.iam.gserviceaccount.com")
	tok := ksaToken("ns", "app", "1")
	tests := []struct {
		name         string
		attrs        map[string]string
		secrets      map[string]string
		publish      bool
		anonDefault  bool
		readOnly     bool
		wantIdentity string
		wantDeferred bool
		wantErr      string // substring of an InvalidArgument message
	}{
		{name: "node by default", wantIdentity: "node"},
		{name: "driver default anonymous", anonDefault: true, wantIdentity: "anonymous"},
		{name: "anonymousAccess=false overrides the default", anonDefault: true, attrs: map[string]string{"anonymousAccess": "false"}, wantIdentity: "node"},
		{name: "anonymousAccess=true", attrs: map[string]string{"anonymousAccess": "true"}, wantIdentity: "anonymous"},
		{name: "anonymousAccess contradicts auth", attrs: map[string]string{"anonymousAccess": "true", "auth": "secret"}, wantErr: "contradicts volume_context.auth=secret"},
		{name: "a secret means auth=secret", secrets: map[string]string{"key.json": key}, wantIdentity: "key:reader@p.iam.gserviceaccount.com/kid-rea"},
		{name: "a secret with auth=node", attrs: map[string]string{"auth": "node"}, secrets: map[string]string{"key.json": key}, wantErr: "secrets: the request carries a secret (keys: key.json) but the volume's auth is node"},
		{name: "wrong secret key name", secrets: map[string]string{"credentials": key}, wantErr: `want exactly one key, "key.json"`},
		{name: "extra secret key", secrets: map[string]string{"key.json": key, "other": "x"}, wantErr: "got keys: key.json, other"},
		{name: "not a key file", secrets: map[string]string{"key.json": "hunter2-not-json"}, wantErr: `secrets["key.json"]: not a JSON document`},
		{name: "not a service account", secrets: map[string]string{"key.json": `{"type":"authorized_user","refresh_token":"hunter2"}`}, wantErr: `type is "authorized_user"`},
		{name: "auth=secret at stage without secrets", attrs: map[string]string{"auth": "secret"}, wantDeferred: true},
		{name: "workload identity at stage", attrs: map[string]string{"auth": "workloadIdentity"}, wantDeferred: true},
		{name: "workload identity without tokens", attrs: map[string]string{"auth": "workloadIdentity"}, publish: true, wantErr: "tokenRequests"},
		{name: "workload identity", attrs: map[string]string{"auth": "workloadIdentity", mounter.AttrTokens: tokensAttr("aud", tok)}, publish: true,
			wantIdentity: "workloadIdentity:system:serviceaccount:ns:app@" + e.d.opts.WIProvider},
		{name: "workload identity impersonating", attrs: map[string]string{"auth": "workloadIdentity", "googleServiceAccount": "gsa@p.iam.gserviceaccount.com", "workloadIdentityProvider": "projects/2/providers/x", mounter.AttrTokens: tokensAttr("aud", tok)}, publish: true,
			wantIdentity: "workloadIdentity:system:serviceaccount:ns:app->gsa@p.iam.gserviceaccount.com@projects/2/providers/x"},
		{name: "tokens for two audiences", attrs: map[string]string{"auth": "workloadIdentity", mounter.AttrTokens: `{"a":{"token":"x"},"b":{"token":"y"}}`}, publish: true, wantErr: "tokens for audiences a, b: set the driver flag --token-audience"},
		{name: "tokens not JSON", attrs: map[string]string{"auth": "workloadIdentity", mounter.AttrTokens: "hunter2"}, publish: true, wantErr: "not the JSON object kubelet writes"},
		{name: "impersonation without workload identity", attrs: map[string]string{"googleServiceAccount": "gsa@p.iam.gserviceaccount.com"}, wantErr: "googleServiceAccount is only used with auth=workloadIdentity"},
		{name: "read-only volumes get a read-only scope", readOnly: true, wantIdentity: "node"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e.d.opts.Anonymous = tc.anonDefault
			vc := capability()
			if tc.readOnly {
				vc.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
			}
			v, err := parseVolume("bkt", tc.attrs, vc, false)
			if err != nil {
				t.Fatal(err)
			}
			creds, deferred, err := e.d.resolveCredentials(v, tc.secrets, tc.attrs, tc.publish)
			if tc.wantErr != "" {
				wantCode(t, err, codes.InvalidArgument, tc.wantErr)
				if strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "SECRETMATERIAL") {
					t.Errorf("the error echoes a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if deferred != tc.wantDeferred {
				t.Fatalf("deferred = %v, want %v", deferred, tc.wantDeferred)
			}
			if deferred {
				return
			}
			if got := creds.Identity(); got != tc.wantIdentity {
				t.Errorf("identity %q, want %q", got, tc.wantIdentity)
			}
			if wantScope := map[bool]string{true: auth.ScopeReadOnly}[tc.readOnly]; creds.Scope != wantScope {
				t.Errorf("scope %q, want %q", creds.Scope, wantScope)
			}
			for _, s := range []string{creds.String(), fmt.Sprintf("%v %+v %#v %s", creds, creds, creds, creds)} {
				if strings.Contains(s, "SECRETMATERIAL") || (creds.Token != "" && strings.Contains(s, creds.Token)) {
					t.Errorf("formatting credentials shows a secret: %s", s)
				}
			}
		})
	}
}

func (e *env) publishWI(target, token string, extra ...string) error {
	attrs := map[string]string{"csi.storage.k8s.io/ephemeral": "true", "bucketName": "bkt", "auth": "workloadIdentity", mounter.AttrTokens: tokensAttr("aud", token)}
	for i := 0; i+1 < len(extra); i += 2 {
		attrs[extra[i]] = extra[i+1]
	}
	_, err := e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: "csi-" + filepath.Base(target), TargetPath: target, VolumeContext: attrs, VolumeCapability: capability()})
	return err
}

// Pods with different identities never share a gcsfuse; pods with the same
// identity and volume do; a republish hands the session the new token.
func TestWorkloadIdentitySessionsPerIdentity(t *testing.T) {
	e := newEnv(t)
	e.d.opts.WIProvider = "projects/1/providers/k"
	a1, b1, a2 := ksaToken("ns", "a", "1"), ksaToken("ns", "b", "1"), ksaToken("ns", "a", "2")
	if err := e.publishWI(e.path("pod-a"), a1); err != nil {
		t.Fatal(err)
	}
	if err := e.publishWI(e.path("pod-b"), b1); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Starts != 2 {
		t.Fatalf("two identities started %d gcsfuse, want 2", e.daemon.Starts)
	}
	if err := e.publishWI(e.path("pod-a2"), a2); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Starts != 2 {
		t.Fatalf("a third pod with the first's identity started gcsfuse %d times in all, want it to share (2)", e.daemon.Starts)
	}
	tokens := map[string]string{}
	for id, s := range e.daemon.Running {
		if s.Credentials == nil || s.Credentials.Mode != auth.ModeWorkloadIdentity {
			t.Fatalf("session %s has credentials %v", id, s.Credentials)
		}
		tokens[auth.TokenSubject(s.Credentials.Token)] = s.Credentials.Token
	}
	// The shared session got the newest token of its identity.
	if tokens["system:serviceaccount:ns:a"] != a2 || tokens["system:serviceaccount:ns:b"] != b1 {
		t.Errorf("session tokens %v: want a's newest and b's", tokens)
	}
	// kubelet republishes pod-a with a renewed token.
	a3 := ksaToken("ns", "a", "3")
	if err := e.publishWI(e.path("pod-a"), a3); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range e.daemon.Running {
		found = found || s.Credentials.Token == a3
	}
	if !found || e.daemon.Starts != 2 {
		t.Errorf("republish: token refreshed %v, starts %d; want the running session refreshed", found, e.daemon.Starts)
	}
	// Unpublishing both a pods ends a's session only.
	for _, p := range []string{"pod-a", "pod-a2"} {
		if err := e.unpublish(e.path(p)); err != nil {
			t.Fatal(err)
		}
	}
	if e.daemon.Count() != 1 {
		t.Errorf("%d sessions after a's pods left, want b's only", e.daemon.Count())
	}
}

func (e *env) stageWithSecret(vol, path string, secrets map[string]string) error {
	_, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: path, VolumeCapability: capability(), Secrets: secrets})
	return err
}

// A volume staged with nodeStageSecretRef is mounted again with its key when
// its gcsfuse died; a restarted driver, which lost the key, says so instead
// of silently mounting it with the node's identity.
func TestStageSecretSurvivesARemountButNotARestart(t *testing.T) {
	e := newEnv(t)
	key := testKey("writer@p.iam.gserviceaccount.com")
	stage, target := e.path("stage"), e.path("target")
	if err := e.stageWithSecret("bkt", stage, map[string]string{"key.json": key}); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	var sid string
	for id, s := range e.daemon.Running {
		sid = id
		if string(s.Credentials.Key) != key {
			t.Fatalf("staged session credentials %v, want the secret's key", s.Credentials)
		}
	}
	// gcsfuse died after a while (no crash loop): both mounts answer
	// ENOTCONN.
	dead := func() {
		e.now = e.now.Add(time.Hour)
		e.daemon.Kill(sid, nil)
		e.fm.MountCheckErrors = map[string]error{stage: syscall.ENOTCONN, target: syscall.ENOTCONN}
	}
	dead()
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatalf("publish after gcsfuse died: %v", err)
	}
	e.fm.MountCheckErrors = nil
	if s := e.daemon.Running[sid]; s.Credentials == nil || string(s.Credentials.Key) != key {
		t.Fatalf("remounted with %v, want the stage secret's key", s.Credentials)
	}

	// Same state dir, new driver process: the key is gone.
	e2 := newEnvAt(t, e)
	dead()
	err := e2.publish("bkt", stage, target, false)
	wantCode(t, err, codes.FailedPrecondition, "staged with a key from nodeStageSecretRef, which this driver no longer holds")
	if e.daemon.Count() != 0 {
		t.Errorf("a session was started without the volume's key")
	}
	// kubelet staging again (a new pod) gives the key back.
	e.fm.MountCheckErrors = nil
	if err := e2.stageWithSecret("bkt", stage, map[string]string{"key.json": key}); err != nil {
		t.Fatal(err)
	}
	if err := e2.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	if err := e2.unpublish(target); err != nil {
		t.Fatal(err)
	}
	if err := e2.unstage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	if m, _ := filepath.Glob(filepath.Join(e.dir, "state", stagedDir, "*")); len(m) != 0 {
		t.Errorf("unstage left markers %v", m)
	}
}

// A PV whose key comes with each publish (nodePublishSecretRef) stages
// nothing and mounts per identity at publish.
func TestPublishSecretMountsPerKey(t *testing.T) {
	e := newEnv(t)
	stage := e.path("stage")
	attrs := map[string]string{"auth": "secret"}
	if _, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, VolumeCapability: capability(), VolumeContext: attrs}); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Starts != 0 {
		t.Fatalf("stage without the key started gcsfuse")
	}
	pub := func(target, key string) error {
		_, err := e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, TargetPath: target, VolumeCapability: capability(), VolumeContext: attrs, Secrets: map[string]string{"key.json": key}})
		return err
	}
	k1, k2 := testKey("one@p.iam.gserviceaccount.com"), testKey("two@p.iam.gserviceaccount.com")
	for _, p := range []struct{ target, key string }{{"t1", k1}, {"t2", k2}, {"t3", k1}} {
		if err := pub(e.path(p.target), p.key); err != nil {
			t.Fatal(err)
		}
	}
	if e.daemon.Starts != 2 {
		t.Errorf("two keys started %d gcsfuse, want 2", e.daemon.Starts)
	}
	_, err := e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, TargetPath: e.path("t4"), VolumeCapability: capability(), VolumeContext: attrs})
	wantCode(t, err, codes.FailedPrecondition, "neither NodeStage nor this publish brought a key")
}

func TestRedactTokens(t *testing.T) {
	tok := ksaToken("ns", "a", "secret-nonce")
	req := &csi.NodePublishVolumeRequest{VolumeId: "v", VolumeContext: map[string]string{mounter.AttrTokens: tokensAttr("aud", tok), "bucketName": "b"}, Secrets: map[string]string{"key.json": "SECRETMATERIAL"}}
	out := fmt.Sprint(protosanitizer.StripSecrets(redactTokens(req)))
	if strings.Contains(out, "secret-nonce") || strings.Contains(out, "SECRETMATERIAL") || !strings.Contains(out, "bucketName") {
		t.Errorf("logged request %s: want tokens and secrets stripped, the rest kept", out)
	}
	if req.VolumeContext[mounter.AttrTokens] == "***stripped***" {
		t.Error("redaction changed the request itself")
	}
}
