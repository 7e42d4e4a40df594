package fakegcp_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/fakegcp"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

const (
	email     = "reader@test-project.iam.gserviceaccount.com"
	ksaSub    = "system:serviceaccount:ns:name"
	ksaAud    = "test-project.svc.id.goog"
	content   = "hello through the front"
	objName   = "dir/hello.txt"
	scopeRead = "https://www.googleapis.com/auth/devstorage.read_only"
)

// Buckets, each holding objName.
const (
	granted = "granted-bkt"
	other   = "other-bkt"
	public  = "public-bkt"
	fed     = "fed-bkt"
	imp     = "imp-bkt"
)

// env is a fakegcp.Server and a fake GCS behind its front.
type env struct {
	gcp *fakegcp.Server
	gcs *harness.FakeGCS
}

func start(t *testing.T) *env {
	t.Helper()
	gcp, err := fakegcp.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcp.Stop)
	var objects []fakestorage.Object
	for _, b := range []string{granted, other, public, fed, imp} {
		objects = append(objects, harness.Object(b, objName, content))
	}
	gcs, err := harness.StartFakeGCSWrapped(objects, gcp.Wrap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	return &env{gcp: gcp, gcs: gcs}
}

// ctx is a test context with a deadline well inside the test timeout.
func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

// client is a storage client on the front with ts's tokens; retries off, so
// that an injected 5xx shows at once.
func (e *env) client(t *testing.T, opts ...option.ClientOption) *storage.Client {
	t.Helper()
	c, err := storage.NewClient(context.Background(), append([]option.ClientOption{option.WithEndpoint(e.gcs.Endpoint)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// list lists bucket's object names.
func list(ctx context.Context, c *storage.Client, bucket string) ([]string, error) {
	var names []string
	it := c.Bucket(bucket).Objects(ctx, nil)
	for {
		a, err := it.Next()
		if err == iterator.Done {
			return names, nil
		}
		if err != nil {
			return nil, err
		}
		names = append(names, a.Name)
	}
}

// read reads bucket/objName.
func read(ctx context.Context, c *storage.Client, bucket string) (string, error) {
	r, err := c.Bucket(bucket).Object(objName).NewReader(ctx)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// mustReadAndList fails t unless c can list and read bucket.
func mustReadAndList(t *testing.T, c *storage.Client, bucket string) {
	t.Helper()
	names, err := list(ctx(t), c, bucket)
	if err != nil || len(names) != 1 || names[0] != objName {
		t.Fatalf("list %s: %v, %v; want [%s]", bucket, names, err, objName)
	}
	got, err := read(ctx(t), c, bucket)
	if err != nil || got != content {
		t.Fatalf("read %s/%s: %q, %v; want %q", bucket, objName, got, err, content)
	}
}

// wantAPIError fails t unless err is a *googleapi.Error with code.
func wantAPIError(t *testing.T, what string, err error, code int) {
	t.Helper()
	var gerr *googleapi.Error
	if !errors.As(err, &gerr) || gerr.Code != code {
		t.Fatalf("%s: got error %v (%T), want a googleapi.Error %d", what, err, err, code)
	}
}

// doJSON sends req and decodes the JSON answer into out (if not nil).
func doJSON(t *testing.T, req *http.Request, out any) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s %s: answer %d is not JSON: %v: %s", req.Method, req.URL.Path, resp.StatusCode, err, b)
		}
	}
	return resp.StatusCode, string(b)
}

// get is a GET of url with an optional bearer token.
func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return doJSON(t, req, nil)
}

// postForm POSTs form to url and decodes the JSON answer into out.
func postForm(t *testing.T, url string, form url.Values, out any) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return doJSON(t, req, out)
}

// oauthErr is an OAuth2 / STS error answer.
type oauthErr struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// stsAnswer is an STS answer, success or error.
type stsAnswer struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int    `json:"expires_in"`
	oauthErr
}

// stsForm is a well-formed token-exchange request for subject.
func stsForm(audience, subject string) url.Values {
	return url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"audience":             {audience},
		"scope":                {"https://www.googleapis.com/auth/cloud-platform"},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token":        {subject},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
	}
}

// federatedToken exchanges a fresh KSA token for ns/name at STS.
func (e *env) federatedToken(t *testing.T) string {
	t.Helper()
	var a stsAnswer
	status, body := postForm(t, e.gcp.STSURL, stsForm(e.gcp.Provider, e.gcp.KSAToken("ns", "name", ksaAud, time.Hour)), &a)
	if status != http.StatusOK || a.AccessToken == "" {
		t.Fatalf("STS: %d %s", status, body)
	}
	return a.AccessToken
}

// credentials loads a key file the way the driver does.
func credentials(t *testing.T, key []byte) *google.Credentials {
	t.Helper()
	//lint:ignore SA1019 the driver calls exactly this; it is what must work against the fake.
	creds, err := google.CredentialsFromJSON(context.Background(), key, scopeRead)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

func TestServiceAccountKeyFile(t *testing.T) {
	t.Parallel()
	e := start(t)
	var f map[string]string
	if err := json.Unmarshal(e.gcp.ServiceAccountKey(email), &f); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"type": "service_account", "project_id": "test-project", "client_email": email, "token_uri": e.gcp.TokenURL} {
		if f[k] != want {
			t.Errorf("key file %s = %q, want %q", k, f[k], want)
		}
	}
	for _, k := range []string{"private_key_id", "client_id", "auth_uri"} {
		if f[k] == "" {
			t.Errorf("key file has no %s", k)
		}
	}
	block, _ := pem.Decode([]byte(f["private_key"]))
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("private_key is not a PEM PRIVATE KEY")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatalf("private_key is not PKCS#8: %v", err)
	} else if rk, ok := k.(*rsa.PrivateKey); !ok || rk.N.BitLen() != 2048 {
		t.Fatalf("private_key is not RSA-2048")
	}
}

// The driver's client: key JSON → google.CredentialsFromJSON → token →
// cloud.google.com/go/storage through the front.
func TestServiceAccountKeyReadsGrantedBucketOnly(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(granted, email)
	creds := credentials(t, e.gcp.ServiceAccountKey(email))
	c := e.client(t, option.WithTokenSource(creds.TokenSource))

	mustReadAndList(t, c, granted)
	for _, r := range e.gcp.Requests() {
		t.Logf("front saw %s %s → %d as %q", r.Method, r.Path, r.Status, r.Principal)
		if r.Bucket != granted || r.Principal != email || r.Status != http.StatusOK {
			t.Errorf("front recorded %+v, want bucket %s principal %s status 200", r, granted, email)
		}
	}
	if got := e.gcp.Counts(); got.OAuth != 1 || got.OAuthRejected != 0 {
		t.Errorf("counts %+v, want one OAuth token (reused)", got)
	}

	_, err := list(ctx(t), c, other)
	wantAPIError(t, "list of a bucket not granted", err, http.StatusForbidden)
	if !strings.Contains(err.Error(), email+" does not have storage.objects.list access") {
		t.Errorf("403 message %q does not name the principal and permission", err)
	}
	_, err = read(ctx(t), c, other)
	wantAPIError(t, "read of a bucket not granted", err, http.StatusForbidden)
}

// Uploads, resumable ones included, pass the front with the same token.
func TestResumableUploadThroughFront(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(granted, email)
	c := e.client(t, option.WithTokenSource(credentials(t, e.gcp.ServiceAccountKey(email)).TokenSource))
	data := strings.Repeat("0123456789abcdef", 40<<10) // 640 KiB: three chunks
	w := c.Bucket(granted).Object("big").NewWriter(ctx(t))
	w.ChunkSize = 256 << 10
	if _, err := io.WriteString(w, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("resumable upload: %v", err)
	}
	obj, err := e.gcs.Server.GetObject(granted, "big")
	if err != nil || string(obj.Content) != data {
		t.Fatalf("uploaded object: %d bytes (%v), want %d", len(obj.Content), err, len(data))
	}
	reqs := e.gcp.Requests()
	for _, r := range reqs {
		t.Logf("front saw %s %s → %d", r.Method, r.Path, r.Status)
		if r.Bucket != granted || r.Principal != email || r.Status != http.StatusOK {
			t.Errorf("front recorded %+v", r)
		}
	}
	if len(reqs) < 3 {
		t.Errorf("front saw %d requests, want a resumable upload's several", len(reqs))
	}

	w = c.Bucket(other).Object("big").NewWriter(ctx(t))
	io.WriteString(w, "x")
	wantAPIError(t, "upload to a bucket not granted", w.Close(), http.StatusForbidden)
}

func TestUnregisteredKeyIsRefused(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.ServiceAccountKey(email) // the account has a key, just not this one
	key := e.gcp.UnregisteredKey(email)
	_, err := credentials(t, key).TokenSource.Token()
	var rerr *oauth2.RetrieveError
	if !errors.As(err, &rerr) {
		t.Fatalf("token from an unregistered key: %v (%T), want an oauth2.RetrieveError", err, err)
	}
	// x/oauth2/jwt leaves RetrieveError.ErrorCode and ErrorDescription
	// empty: the OAuth error is only in Body.
	var body oauthErr
	if err := json.Unmarshal(rerr.Body, &body); err != nil {
		t.Fatalf("error body %q is not JSON: %v", rerr.Body, err)
	}
	if rerr.Response.StatusCode != http.StatusBadRequest || body.Error != "invalid_grant" || body.Description != "Invalid JWT Signature." {
		t.Errorf("got %d %s, want 400 invalid_grant \"Invalid JWT Signature.\"", rerr.Response.StatusCode, rerr.Body)
	}
	if !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("the error %q does not say invalid_grant", err)
	}
	if got := e.gcp.Counts(); got.OAuth != 0 || got.OAuthRejected != 1 {
		t.Errorf("counts %+v, want one OAuth rejection", got)
	}
}

// sign makes an RS256 JWT with the key of a key file, for assertions the
// x/oauth2 client would never send.
func sign(t *testing.T, keyFile []byte, claims map[string]any) string {
	t.Helper()
	var f struct {
		PrivateKey   string `json:"private_key"`
		PrivateKeyID string `json:"private_key_id"`
	}
	if err := json.Unmarshal(keyFile, &f); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(f.PrivateKey))
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(map[string]string{"alg": "RS256", "typ": "JWT", "kid": f.PrivateKeyID}) + "." + enc(claims)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig)
}

func TestOAuthRefusals(t *testing.T) {
	t.Parallel()
	e := start(t)
	key := e.gcp.ServiceAccountKey(email)
	now := time.Now().Unix()
	good := map[string]any{"iss": email, "aud": e.gcp.TokenURL, "scope": scopeRead, "iat": now, "exp": now + 3600}
	with := func(k string, v any) map[string]any {
		c := map[string]any{}
		for k, v := range good {
			c[k] = v
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	for _, tc := range []struct {
		name, grant string
		claims      map[string]any
		want        string
	}{
		{"good", "", good, ""},
		{"grant type", "authorization_code", good, "unsupported_grant_type"},
		{"audience", "", with("aud", "https://oauth2.googleapis.com/token"), "invalid_grant"},
		{"expired", "", with("exp", now-1), "invalid_grant"},
		{"too long", "", with("exp", now+7200), "invalid_grant"},
		{"issued in the future", "", with("iat", now+300), "invalid_grant"},
		{"unknown account", "", with("iss", "nobody@test-project.iam.gserviceaccount.com"), "invalid_grant"},
		{"no scope", "", with("scope", nil), "invalid_scope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grant := "urn:ietf:params:oauth:grant-type:jwt-bearer"
			if tc.grant != "" {
				grant = tc.grant
			}
			assertion := sign(t, key, tc.claims)
			var a stsAnswer
			status, body := postForm(t, e.gcp.TokenURL, url.Values{"grant_type": {grant}, "assertion": {assertion}}, &a)
			if strings.Contains(body, assertion) || strings.Contains(body, assertion[strings.LastIndexByte(assertion, '.')+1:]) {
				t.Errorf("the answer echoes the assertion")
			}
			if tc.want == "" {
				if status != http.StatusOK || a.AccessToken == "" || a.TokenType != "Bearer" || a.ExpiresIn != 3600 {
					t.Fatalf("good assertion: %d %s", status, body)
				}
				return
			}
			if status != http.StatusBadRequest || a.Error != tc.want || a.Description == "" {
				t.Fatalf("got %d %s, want 400 %s", status, body, tc.want)
			}
		})
	}
}

func TestAnonymousAndBadTokens(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Public(public)
	base := strings.TrimSuffix(e.gcs.Endpoint, "/storage/v1/")

	status, body := get(t, e.gcs.Endpoint+"b/"+granted+"/o", "")
	if status != http.StatusUnauthorized || !strings.Contains(body, `"code":401`) {
		t.Errorf("anonymous list of a private bucket: %d %s, want 401", status, body)
	}
	status, body = get(t, e.gcs.Endpoint+"b/"+granted+"/o", "ya29.not-issued-here")
	if status != http.StatusUnauthorized || !strings.Contains(body, `"message":"Invalid Credentials"`) || !strings.Contains(body, `"reason":"authError"`) {
		t.Errorf("unknown token: %d %s, want 401 Invalid Credentials authError", status, body)
	}
	if strings.Contains(body, "ya29.not-issued-here") {
		t.Errorf("the 401 echoes the token")
	}

	anon := e.client(t, option.WithoutAuthentication())
	_, err := list(ctx(t), anon, granted)
	wantAPIError(t, "anonymous list through the storage client", err, http.StatusUnauthorized)
	mustReadAndList(t, anon, public)
	if status, body := get(t, base+"/"+public+"/"+objName, ""); status != http.StatusOK || body != content {
		t.Errorf("anonymous XML read of a public object: %d %q", status, body)
	}
	// A bad token is refused even on a public bucket, as GCS does.
	if status, _ := get(t, base+"/"+public+"/"+objName, "ya29.not-issued-here"); status != http.StatusUnauthorized {
		t.Errorf("bad token on a public bucket: %d, want 401", status)
	}
}

func TestPathsTheFrontRecognises(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(granted, ksaSub)
	token := e.federatedToken(t)
	base := strings.TrimSuffix(e.gcs.Endpoint, "/storage/v1/")
	for _, tc := range []struct {
		path, bucket string
		status       int
	}{
		{"/storage/v1/b?project=test", "", http.StatusOK}, // any valid token lists buckets
		{"/storage/v1/b/" + granted, granted, http.StatusOK},
		{"/storage/v1/b/" + granted + "/o", granted, http.StatusOK},
		{"/storage/v1/b/" + granted + "/o/" + url.PathEscape(objName) + "?alt=media", granted, http.StatusOK},
		{"/download/storage/v1/b/" + granted + "/o/" + url.PathEscape(objName) + "?alt=media", granted, http.StatusOK},
		{"/" + granted + "/" + objName, granted, http.StatusOK},
		{"/storage/v1/b/" + other + "/o", other, http.StatusForbidden},
		{"/" + other + "/" + objName, other, http.StatusForbidden},
		{"/batch/storage/v1", "", http.StatusForbidden},
		{"/_internal/healthcheck", "", http.StatusForbidden},
		{"/", "", http.StatusForbidden},
	} {
		status, body := get(t, base+tc.path, token)
		if status != tc.status {
			t.Errorf("GET %s: %d %s, want %d", tc.path, status, body, tc.status)
		}
		reqs := e.gcp.Requests()
		if last := reqs[len(reqs)-1]; last.Bucket != tc.bucket || last.Status != status {
			t.Errorf("GET %s recorded as %+v, want bucket %q status %d", tc.path, last, tc.bucket, status)
		}
	}
}

func TestFederatedToken(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(fed, ksaSub)
	token := e.federatedToken(t)
	c := e.client(t, option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: token})))
	mustReadAndList(t, c, fed)
	if reqs := e.gcp.Requests(); reqs[0].Principal != ksaSub {
		t.Errorf("front recorded principal %q, want %q", reqs[0].Principal, ksaSub)
	}
	_, err := list(ctx(t), c, other)
	wantAPIError(t, "federated token on a bucket not granted", err, http.StatusForbidden)

	// The JSON body form is accepted too.
	b, _ := json.Marshal(map[string]any{
		"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
		"audience":   e.gcp.Provider, "scope": []string{"https://www.googleapis.com/auth/cloud-platform"},
		"requested_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"subject_token":        e.gcp.KSAToken("ns", "name", ksaAud, time.Hour),
		"subject_token_type":   "urn:ietf:params:oauth:token-type:jwt",
	})
	req, _ := http.NewRequest(http.MethodPost, e.gcp.STSURL, strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	var a stsAnswer
	if status, body := doJSON(t, req, &a); status != http.StatusOK || a.IssuedTokenType != "urn:ietf:params:oauth:token-type:access_token" || a.TokenType != "Bearer" || a.ExpiresIn != 3600 {
		t.Errorf("STS with a JSON body: %d %s", status, body)
	}
	if got := e.gcp.Counts(); got.STS != 2 || got.STSRejected != 0 {
		t.Errorf("counts %+v, want 2 STS tokens", got)
	}
}

func TestSTSRefusals(t *testing.T) {
	t.Parallel()
	e := start(t)
	stranger, err := fakegcp.Start() // another cluster: another issuer key
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Stop()
	for _, tc := range []struct {
		name, audience, subject, code, says string
	}{
		{"expired", e.gcp.Provider, e.gcp.KSAToken("ns", "name", ksaAud, -time.Second), "invalid_grant", "subject token expired"},
		{"wrong audience", "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/test/providers/other", e.gcp.KSAToken("ns", "name", ksaAud, time.Hour), "invalid_request", "//iam.googleapis.com/projects/"},
		{"other issuer key", e.gcp.Provider, stranger.KSAToken("ns", "name", ksaAud, time.Hour), "invalid_grant", "signature"},
		{"not a JWT", e.gcp.Provider, "not-a-jwt", "invalid_grant", "not a JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var a stsAnswer
			status, body := postForm(t, e.gcp.STSURL, stsForm(tc.audience, tc.subject), &a)
			if status != http.StatusBadRequest || a.Error != tc.code || !strings.Contains(a.Description, tc.says) {
				t.Fatalf("got %d %s, want 400 %s saying %q", status, body, tc.code, tc.says)
			}
			if strings.Contains(body, tc.subject) {
				t.Errorf("the answer echoes the subject token")
			}
		})
	}
	e.gcp.SetSubjectAudiences("https://iam.googleapis.com" + strings.TrimPrefix(e.gcp.Provider, "/"))
	var a stsAnswer
	if status, body := postForm(t, e.gcp.STSURL, stsForm(e.gcp.Provider, e.gcp.KSAToken("ns", "name", ksaAud, time.Hour)), &a); status != http.StatusBadRequest || a.Error != "invalid_grant" {
		t.Errorf("subject audience not allowed: %d %s, want 400 invalid_grant", status, body)
	}
	if got := e.gcp.Counts(); got.STS != 0 || got.STSRejected != 5 {
		t.Errorf("counts %+v, want 5 STS rejections", got)
	}
}

// generateAccessToken calls IAM for email with bearer.
func (e *env) generateAccessToken(t *testing.T, bearer, email string, out any) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.gcp.ImpersonationURL(email), strings.NewReader(`{"scope":["https://www.googleapis.com/auth/devstorage.read_only"],"lifetime":"3600s"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+bearer)
	return doJSON(t, req, out)
}

func TestImpersonation(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(imp, email)
	fedToken := e.federatedToken(t)

	var denied struct {
		Error struct {
			Code            int
			Message, Status string
		}
	}
	status, body := e.generateAccessToken(t, fedToken, email, &denied)
	if status != http.StatusForbidden || denied.Error.Status != "PERMISSION_DENIED" || !strings.Contains(denied.Error.Message, "Permission 'iam.serviceAccounts.getAccessToken' denied") {
		t.Fatalf("impersonation not allowed: %d %s, want 403 PERMISSION_DENIED", status, body)
	}

	e.gcp.AllowImpersonation(ksaSub, email)
	var got struct{ AccessToken, ExpireTime string }
	if status, body := e.generateAccessToken(t, fedToken, email, &got); status != http.StatusOK || got.AccessToken == "" {
		t.Fatalf("impersonation allowed: %d %s", status, body)
	}
	if exp, err := time.Parse(time.RFC3339, got.ExpireTime); err != nil || time.Until(exp) < 59*time.Minute || time.Until(exp) > time.Hour {
		t.Errorf("expireTime %q (%v), want about an hour from now in RFC 3339", got.ExpireTime, err)
	}
	c := e.client(t, option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: got.AccessToken})))
	mustReadAndList(t, c, imp)
	if r := e.gcp.Requests()[0]; r.Principal != email {
		t.Errorf("impersonated token recorded as %q, want %q", r.Principal, email)
	}
	// The federated token itself was not granted the bucket.
	_, err := list(ctx(t), e.client(t, option.WithTokenSource(oauth2.StaticTokenSource(&oauth2.Token{AccessToken: fedToken}))), imp)
	wantAPIError(t, "federated token on the impersonated account's bucket", err, http.StatusForbidden)

	if status, body := e.generateAccessToken(t, "ya29.not-issued-here", email, nil); status != http.StatusUnauthorized || strings.Contains(body, "ya29.not-issued-here") {
		t.Errorf("bad bearer: %d %s, want 401 without the token", status, body)
	}
	if got := e.gcp.Counts(); got.IAM != 1 || got.IAMRejected != 2 {
		t.Errorf("counts %+v, want 1 IAM token and 2 refusals", got)
	}
}

// The whole Workload Identity Federation chain through x/oauth2's own
// external_account client: KSA token file → STS → generateAccessToken →
// GCS.
func TestExternalAccountConfig(t *testing.T) {
	t.Parallel()
	e := start(t)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(e.gcp.KSAToken("ns", "name", ksaAud, time.Hour)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.gcp.Grant(imp, email)
	e.gcp.Grant(fed, ksaSub)
	load := func(impersonate string) oauth2.TokenSource {
		creds, err := google.CredentialsFromJSONWithType(context.Background(), e.gcp.ExternalAccountConfig(tokenFile, impersonate), google.ExternalAccount, scopeRead)
		if err != nil {
			t.Fatal(err)
		}
		return creds.TokenSource
	}

	mustReadAndList(t, e.client(t, option.WithTokenSource(load(""))), fed)

	if _, err := load(email).Token(); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("impersonation without AllowImpersonation: %v, want a 403", err)
	}
	e.gcp.AllowImpersonation(ksaSub, email)
	mustReadAndList(t, e.client(t, option.WithTokenSource(load(email))), imp)
	for _, r := range e.gcp.Requests() {
		if want := map[string]string{fed: ksaSub, imp: email}[r.Bucket]; r.Principal != want {
			t.Errorf("front recorded %+v, want principal %s", r, want)
		}
	}
	if got := e.gcp.Counts(); got.STS != 3 || got.IAM != 1 || got.IAMRejected != 1 {
		t.Errorf("counts %+v, want 3 STS tokens, 1 IAM token, 1 IAM refusal", got)
	}
}

func TestExpiredTokenIsRejected(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(granted, email)
	e.gcp.SetTokenTTL(time.Second)
	tok, err := credentials(t, e.gcp.ServiceAccountKey(email)).TokenSource.Token()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expiry); d > time.Second || d < 0 {
		t.Errorf("token expires in %v, want within the 1s TTL", d)
	}
	url := e.gcs.Endpoint + "b/" + granted + "/o"
	if status, body := get(t, url, tok.AccessToken); status != http.StatusOK {
		t.Fatalf("fresh token: %d %s", status, body)
	}
	time.Sleep(2 * time.Second)
	status, body := get(t, url, tok.AccessToken)
	if status != http.StatusUnauthorized || !strings.Contains(body, "Invalid Credentials") {
		t.Fatalf("expired token: %d %s, want 401 Invalid Credentials", status, body)
	}
}

// The driver's client refreshes a token that expired: with a 1s TTL (under
// x/oauth2's 10s early-expiry margin) it fetches a new one for every
// request, and every request passes.
func TestClientRefreshesExpiredTokens(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Grant(granted, email)
	e.gcp.SetTokenTTL(time.Second)
	c := e.client(t, option.WithTokenSource(credentials(t, e.gcp.ServiceAccountKey(email)).TokenSource))
	mustReadAndList(t, c, granted)
	time.Sleep(1500 * time.Millisecond)
	mustReadAndList(t, c, granted)
	n := e.gcp.Counts().OAuth
	t.Logf("%d front requests took %d tokens", len(e.gcp.Requests()), n)
	if n < 2 {
		t.Errorf("%d tokens issued, want a refresh after expiry", n)
	}
	for _, r := range e.gcp.Requests() {
		if r.Status != http.StatusOK {
			t.Errorf("front recorded %+v, want every request to pass", r)
		}
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.gcp.Public(public)
	url := e.gcs.Endpoint + "b/" + public + "/o"
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	e.gcp.SetFault(func(r *http.Request) fakegcp.Fault { return fakegcp.Fault{Status: http.StatusServiceUnavailable} })
	if status, body := get(t, url, ""); status != http.StatusServiceUnavailable || !strings.Contains(body, `"code":503`) {
		t.Errorf("503 fault: %d %s", status, body)
	}

	e.gcp.SetFault(func(r *http.Request) fakegcp.Fault { return fakegcp.Fault{Reset: true} })
	if resp, err := hc.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("reset fault: got an answer %d, want a connection error", resp.StatusCode)
	}

	e.gcp.SetFault(func(r *http.Request) fakegcp.Fault { return fakegcp.Fault{Stall: time.Minute} })
	short := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 200 * time.Millisecond}
	began := time.Now()
	if resp, err := short.Get(url); err == nil {
		resp.Body.Close()
		t.Errorf("stall fault: got an answer %d, want the client's timeout", resp.StatusCode)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("stalled request took %v, want the client's 200ms timeout", d)
	}

	// A stall alone delays the request, which then goes on as usual.
	e.gcp.SetFault(func(r *http.Request) fakegcp.Fault { return fakegcp.Fault{Stall: 50 * time.Millisecond} })
	if status, body := get(t, url, ""); status != http.StatusOK {
		t.Errorf("after a short stall: %d %s, want 200", status, body)
	}
	e.gcp.SetFault(nil)
	if status, _ := get(t, url, ""); status != http.StatusOK {
		t.Errorf("without faults: %d, want 200", status)
	}

	var statuses []int
	for _, r := range e.gcp.Requests() {
		statuses = append(statuses, r.Status)
	}
	if want := []int{503, 0, 0, 200, 200}; !slices.Equal(statuses, want) {
		t.Errorf("front recorded statuses %v, want %v", statuses, want)
	}
}
