package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// federated exchanges a Kubernetes service-account token at the Security
// Token Service (RFC 8693) for a federated access token, then, if asked,
// trades that for a Google service account's token at IAM Credentials.
type federated struct {
	creds *Credentials
	scope string
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// Token implements oauth2.TokenSource.
func (f *federated) Token() (*oauth2.Token, error) {
	c := f.creds
	if c.Token == "" {
		return nil, fmt.Errorf("workload identity: no service-account token from kubelet (is tokenRequests set on the CSIDriver?): %w", ErrRejected)
	}
	if !c.TokenExpiry.IsZero() && time.Now().After(c.TokenExpiry) {
		return nil, fmt.Errorf("workload identity: the pod's service-account token expired at %s; kubelet sends a fresh one when it republishes the volume (requiresRepublish on the CSIDriver): %w", c.TokenExpiry.Format(time.RFC3339), ErrRejected)
	}
	scope := f.scope
	if c.ServiceAccount != "" {
		scope = scopeCloud // the federated token only has to reach IAM Credentials
	}
	endpoint := c.STSEndpoint
	if endpoint == "" {
		endpoint = DefaultSTSEndpoint
	}
	form := url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"audience":             {c.Provider},
		"scope":                {scope},
		"requested_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
		"subject_token_type":   {"urn:ietf:params:oauth:token-type:jwt"},
		"subject_token":        {c.Token},
	}
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("workload identity: STS endpoint %q: %w", endpoint, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	var sts struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := do(req, "exchange the pod's service-account token at "+endpoint, &sts); err != nil {
		return nil, fmt.Errorf("workload identity (provider %q): %w", c.Provider, err)
	}
	tok := &oauth2.Token{AccessToken: sts.AccessToken, TokenType: "Bearer", Expiry: expiry(sts.ExpiresIn)}
	if c.ServiceAccount == "" {
		return tok, nil
	}
	return f.impersonate(tok)
}

// impersonate trades a federated token for one of c.ServiceAccount.
func (f *federated) impersonate(fed *oauth2.Token) (*oauth2.Token, error) {
	c := f.creds
	base := c.IAMEndpoint
	if base == "" {
		base = DefaultIAMEndpoint
	}
	endpoint := strings.TrimSuffix(base, "/") + "/v1/projects/-/serviceAccounts/" + url.PathEscape(c.ServiceAccount) + ":generateAccessToken"
	body, _ := json.Marshal(map[string]any{"scope": []string{f.scope}, "lifetime": "3600s"})
	req, err := http.NewRequest(http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("workload identity: IAM endpoint %q: %w", base, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+fed.AccessToken)
	var out struct {
		AccessToken string    `json:"accessToken"`
		ExpireTime  time.Time `json:"expireTime"`
	}
	if err := do(req, "impersonate "+c.ServiceAccount+" at "+base, &out); err != nil {
		return nil, fmt.Errorf("workload identity: %w (the pod's identity needs roles/iam.workloadIdentityUser on that service account)", err)
	}
	return &oauth2.Token{AccessToken: out.AccessToken, TokenType: "Bearer", Expiry: out.ExpireTime}, nil
}

// ErrRejected marks a token request the other side refused: the
// credentials are wrong, not the network.
var ErrRejected = errors.New("credentials rejected")

// do sends req and decodes a 2xx JSON answer into out. Error answers are
// reduced to their error code and description: a server's body is never
// echoed whole.
func do(req *http.Request, what string, out any) error {
	resp, err := httpClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: read answer: %w", what, err)
	}
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("%s: HTTP %d: %s", what, resp.StatusCode, errorText(body))
		if resp.StatusCode/100 == 4 {
			err = fmt.Errorf("%w: %w", err, ErrRejected)
		}
		return err
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: bad answer: %w", what, err)
	}
	return nil
}

// errorText pulls the reason out of an OAuth2 ({"error","error_description"})
// or Google API ({"error":{"message"}}) error body.
func errorText(body []byte) string {
	var oauth struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if json.Unmarshal(body, &oauth) == nil && oauth.Error != "" {
		return clip(strings.TrimSpace(oauth.Error + " " + oauth.Description))
	}
	var api struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &api) == nil && api.Error.Message != "" {
		return clip(api.Error.Message)
	}
	return "no error details"
}

func clip(s string) string {
	if len(s) > 300 {
		return s[:300] + "..."
	}
	return s
}

func expiry(seconds int64) time.Time {
	if seconds <= 0 {
		return time.Time{}
	}
	return time.Now().Add(time.Duration(seconds) * time.Second)
}

// Describe turns a token-source error into a message that says what to
// fix, for the volume's mode. It keeps the wrapped errors.
func Describe(c *Credentials, err error) error {
	if err == nil {
		return nil
	}
	var re *oauth2.RetrieveError
	mode := ModeNode
	if c != nil {
		mode = c.Mode
	}
	switch {
	case mode == ModeSecret && errors.As(err, &re):
		email, id := keyIdentity(c.Key)
		return fmt.Errorf("the service-account key %s (key id %s) from the volume's secret was rejected by its token endpoint (HTTP %d: %s); check that the key still exists and is not disabled, or put a current key in the secret: %w",
			email, id, re.Response.StatusCode, errorText(re.Body), ErrRejected)
	case mode == ModeNode && errors.As(err, &re):
		return fmt.Errorf("the node's credentials were rejected (HTTP %d: %s): %w", re.Response.StatusCode, errorText(re.Body), ErrRejected)
	}
	return err
}

// Fetch gets one token from ts within ctx's deadline (a token source has
// no context of its own), described for c's mode.
func Fetch(ctx context.Context, c *Credentials, ts oauth2.TokenSource) (*oauth2.Token, error) {
	type result struct {
		tok *oauth2.Token
		err error
	}
	done := make(chan result, 1)
	go func() { t, err := ts.Token(); done <- result{t, err} }()
	select {
	case r := <-done:
		return r.tok, Describe(c, r.err)
	case <-ctx.Done():
		return nil, fmt.Errorf("get an access token for %s: %w", c, ctx.Err())
	}
}
