package auth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/fakegcp"
)

func fetch(t *testing.T, c *auth.Credentials) (string, error) {
	t.Helper()
	ts, err := c.TokenSource(context.Background())
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tok, err := auth.Fetch(ctx, c, ts)
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// Every mode that has tokens gets them from the local stand-ins of Google's
// token endpoint, STS and IAM Credentials; failures say what to fix and
// never echo a secret.
func TestTokenSources(t *testing.T) {
	gcp, err := fakegcp.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer gcp.Stop()
	gcp.AllowImpersonation("system:serviceaccount:ns:app", "app@p.iam.gserviceaccount.com")
	key := gcp.ServiceAccountKey("reader@p.iam.gserviceaccount.com")
	wi := func(tok string, exp time.Time, gsa string) *auth.Credentials {
		return &auth.Credentials{Mode: auth.ModeWorkloadIdentity, Token: tok, TokenExpiry: exp, Provider: gcp.Provider,
			ServiceAccount: gsa, STSEndpoint: gcp.STSURL, IAMEndpoint: gcp.IAMURL}
	}
	ksa := gcp.KSAToken("ns", "app", "aud", time.Hour)
	expired := gcp.KSAToken("ns", "app", "aud", -time.Second)

	for _, tc := range []struct {
		name    string
		creds   *auth.Credentials
		wantErr string // "" for success
	}{
		{"service-account key", &auth.Credentials{Mode: auth.ModeSecret, Key: key}, ""},
		{"deleted key", &auth.Credentials{Mode: auth.ModeSecret, Key: gcp.UnregisteredKey("reader@p.iam.gserviceaccount.com")}, "rejected by its token endpoint (HTTP 400: invalid_grant"},
		{"workload identity", wi(ksa, time.Now().Add(time.Hour), ""), ""},
		{"impersonation", wi(ksa, time.Now().Add(time.Hour), "app@p.iam.gserviceaccount.com"), ""},
		{"impersonation not allowed", wi(ksa, time.Now().Add(time.Hour), "other@p.iam.gserviceaccount.com"), "roles/iam.workloadIdentityUser"},
		{"expired pod token (kubelet's expiry)", wi(expired, time.Now().Add(-time.Second), ""), "expired at"},
		{"expired pod token (STS says)", wi(expired, time.Time{}, ""), "HTTP 400"},
		{"wrong provider", &auth.Credentials{Mode: auth.ModeWorkloadIdentity, Token: ksa, Provider: "projects/9/providers/x", STSEndpoint: gcp.STSURL}, "HTTP 400"},
		{"no pod token", wi("", time.Time{}, ""), "tokenRequests"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := fetch(t, tc.creds)
			if tc.wantErr == "" {
				if err != nil || tok == "" {
					t.Fatalf("token %q, %v", tok, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, auth.ErrRejected) {
				t.Errorf("error %v is not ErrRejected: the credentials, not the network, are wrong", err)
			}
			if strings.Contains(err.Error(), ksa) || strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("the error echoes a secret: %v", err)
			}
		})
	}
	c := gcp.Counts()
	if c.OAuth != 1 || c.STS < 3 || c.IAM != 1 {
		t.Errorf("issued tokens %+v: want 1 OAuth, >=3 STS, 1 IAM", c)
	}
}

func TestIdentityAndFormatting(t *testing.T) {
	key := []byte(`{"type":"service_account","client_email":"a@p.iam.gserviceaccount.com","private_key_id":"k1","private_key":"-----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY-----\n"}`)
	tok := "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6bnM6YXBwIn0.SIGNATURE"
	for _, tc := range []struct {
		c    *auth.Credentials
		want string
	}{
		{nil, "node"},
		{&auth.Credentials{Mode: auth.ModeAnonymous}, "anonymous"},
		{&auth.Credentials{Mode: auth.ModeSecret, Key: key}, "key:a@p.iam.gserviceaccount.com/k1"},
		{&auth.Credentials{Mode: auth.ModeWorkloadIdentity, Token: tok, Provider: "prov", ServiceAccount: "g@p.iam.gserviceaccount.com"}, "workloadIdentity:system:serviceaccount:ns:app->g@p.iam.gserviceaccount.com@prov"},
	} {
		if got := tc.c.Identity(); got != tc.want {
			t.Errorf("Identity() = %q, want %q", got, tc.want)
		}
		for _, s := range []string{fmt.Sprint(tc.c), fmt.Sprintf("%+v", tc.c), fmt.Sprintf("%#v", tc.c), fmt.Sprint(tc.c.MarshalLog())} {
			if strings.Contains(s, "SECRET") || strings.Contains(s, "SIGNATURE") {
				t.Errorf("formatted credentials show a secret: %s", s)
			}
		}
	}
	for _, bad := range []string{`not json SECRET`, `{"type":"authorized_user"}`, `{"type":"service_account"}`} {
		err := auth.ValidateKey([]byte(bad))
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("ValidateKey(%.20q) = %v", bad, err)
		}
	}
}
