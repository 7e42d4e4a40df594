package mounter

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// stsStub is a Security Token Service that accepts the subject tokens in
// valid and answers with "fed-" + the subject token.
type stsStub struct {
	mu    sync.Mutex
	valid map[string]bool
	calls int
}

func (s *stsStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_ = r.ParseForm()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	sub := r.PostForm.Get("subject_token")
	if !s.valid[sub] || r.PostForm.Get("audience") != "provider" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_grant","error_description":"subject token rejected"}`)
		return
	}
	fmt.Fprintf(w, `{"access_token":"fed-%s","token_type":"Bearer","expires_in":3600}`, sub)
}

// getToken asks the session's token socket as gcsfuse does.
func getToken(t *testing.T, sock string, flavor bool) (int, map[string]any) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequest(http.MethodGet, "http://unix/", nil)
	if flavor {
		req.Header.Set("Metadata-Flavor", "Google")
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(body, &out)
	return resp.StatusCode, out
}

// A Workload Identity session gets its token from its own socket; a
// refresh with a new pod token keeps it working after the old one is
// refused; another identity cannot take the session over.
func TestTokenSocketServesAndRefreshes(t *testing.T) {
	sts := &stsStub{valid: map[string]bool{"pod-token-1": true}}
	srv := httptest.NewServer(sts)
	defer srv.Close()
	bin := script(t, `while :; do sleep 0.05; done`)
	d := NewProcessDaemon(bin, t.TempDir())
	defer d.StopAll()
	creds := func(tok string) *auth.Credentials {
		return &auth.Credentials{Mode: auth.ModeWorkloadIdentity, Token: tok, Provider: "provider", STSEndpoint: srv.URL}
	}
	ctx := context.Background()
	if err := d.Start(ctx, Session{ID: "s", Bucket: "b", Credentials: creds("pod-token-1")}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(d.WorkDir, "s", "token.sock")
	if code, _ := getToken(t, sock, false); code != http.StatusForbidden {
		t.Errorf("a request without Metadata-Flavor got %d, want 403", code)
	}
	code, tok := getToken(t, sock, true)
	if code != 200 || tok["access_token"] != "fed-pod-token-1" || tok["token_type"] != "Bearer" || tok["expiry"] == nil {
		t.Fatalf("token answer %d %v", code, tok)
	}
	if st, _ := d.Status(ctx, "s"); !strings.HasPrefix(st.Identity, "workloadIdentity:") {
		t.Errorf("status identity %q", st.Identity)
	}

	// The cached token is reused, not exchanged again.
	getToken(t, sock, true)
	if sts.calls != 1 {
		t.Errorf("%d STS calls for two token requests, want 1 (cached)", sts.calls)
	}

	// kubelet renewed the pod token; STS now refuses the old one.
	sts.mu.Lock()
	sts.valid = map[string]bool{"pod-token-2": true}
	sts.mu.Unlock()
	if err := d.Refresh(ctx, "s", creds("pod-token-2")); err != nil {
		t.Fatal(err)
	}
	// The token already handed out stays until it nears expiry.
	if _, tok := getToken(t, sock, true); tok["access_token"] != "fed-pod-token-1" {
		t.Errorf("after refresh: %v, want the still-valid token kept", tok)
	}

	// A session whose token is near expiry fetches with the new pod token.
	d2 := NewProcessDaemon(bin, t.TempDir())
	defer d2.StopAll()
	if err := d2.Start(ctx, Session{ID: "s", Bucket: "b", Credentials: creds("pod-token-old")}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	sock2 := filepath.Join(d2.WorkDir, "s", "token.sock")
	if code, body := getToken(t, sock2, true); code != http.StatusUnauthorized || !strings.Contains(fmt.Sprint(body["error"]), "subject token rejected") {
		t.Errorf("a refused exchange answered %d %v, want 401 with STS's reason", code, body)
	} else if strings.Contains(fmt.Sprint(body), "pod-token-old") {
		t.Errorf("the error echoes the pod token: %v", body)
	}
	if err := d2.Refresh(ctx, "s", creds("pod-token-2")); err != nil {
		t.Fatal(err)
	}
	if code, tok := getToken(t, sock2, true); code != 200 || tok["access_token"] != "fed-pod-token-2" {
		t.Errorf("after refresh: %d %v, want a token from the new pod token", code, tok)
	}

	// Another identity may not take a session over.
	other := &auth.Credentials{Mode: auth.ModeAnonymous}
	if err := d.Refresh(ctx, "s", other); err == nil {
		t.Error("refresh with another identity was accepted")
	}
	if err := d.Refresh(ctx, "nope", creds("x")); err != ErrUnknownSession {
		t.Errorf("refresh of an unknown session: %v", err)
	}
	// The socket goes with the session.
	if err := d.Stop(ctxTimeout(t, 100*time.Millisecond), "s"); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("the token socket still answers after the session stopped")
	}
}

// Credentials cross the mounter socket intact, and a refresh reaches the
// session there.
func TestRemoteDaemonCarriesCredentials(t *testing.T) {
	sts := &stsStub{valid: map[string]bool{"t1": true, "t2": true}}
	srv := httptest.NewServer(sts)
	defer srv.Close()
	bin := script(t, `while :; do sleep 0.05; done`)
	rd, pd := startHost(t, bin, nil)
	ctx := context.Background()
	c := &auth.Credentials{Mode: auth.ModeWorkloadIdentity, Token: "t1", Provider: "provider", STSEndpoint: srv.URL}
	if err := rd.Start(ctx, Session{ID: "s1", Bucket: "bkt", Credentials: c}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(pd.WorkDir, "s1", "token.sock")
	if _, tok := getToken(t, sock, true); tok["access_token"] != "fed-t1" {
		t.Fatalf("token %v", tok)
	}
	c2 := *c
	c2.Token = "t2"
	if err := rd.Refresh(ctx, "s1", &c2); err != nil {
		t.Fatal(err)
	}
	if err := rd.Refresh(ctx, "nope", &c2); err != ErrUnknownSession {
		t.Errorf("remote refresh of an unknown session: %v", err)
	}
	st, err := rd.Status(ctx, "s1")
	if err != nil || st.Identity != c.Identity() {
		t.Errorf("status %+v %v: want identity %q", st, err, c.Identity())
	}
	_ = rd.Stop(ctxTimeout(t, 100*time.Millisecond), "s1")
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
