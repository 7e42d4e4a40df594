package fakegcp

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RFC 8693 names STS uses.
const (
	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	jwtTokenType       = "urn:ietf:params:oauth:token-type:jwt"
	accessTokenType    = "urn:ietf:params:oauth:token-type:access_token"
)

// providerShape is what an STS audience must look like.
const providerShape = "//iam.googleapis.com/projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL_ID/providers/PROVIDER_ID"

// serveSTSToken is POST /v1/token: a Kubernetes service-account token for a
// federated access token whose principal is its sub,
// "system:serviceaccount:NS:NAME".
func (s *Server) serveSTSToken(w http.ResponseWriter, r *http.Request) {
	status, body := s.stsToken(w, r)
	s.tally(&s.counts.STS, &s.counts.STSRejected, status)
	writeJSON(w, status, body)
}

// stsToken answers a /v1/token request.
func (s *Server) stsToken(w http.ResponseWriter, r *http.Request) (int, any) {
	form, err := readSTSRequest(w, r)
	if err != nil {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: err.Error()}
	}
	if gt := form.Get("grant_type"); gt != tokenExchangeGrant {
		return http.StatusBadRequest, &oauthError{Code: "unsupported_grant_type", Description: fmt.Sprintf("Invalid grant_type: %.100q, want %s", gt, tokenExchangeGrant)}
	}
	if aud := form.Get("audience"); aud != s.Provider {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: fmt.Sprintf(
			"Invalid value for \"audience\". This value should be the full resource name of the Identity Provider, %s (this server accepts only %s).", providerShape, s.Provider)}
	}
	if tt := form.Get("subject_token_type"); tt != jwtTokenType {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: fmt.Sprintf("Invalid subject_token_type: %.100q, want %s", tt, jwtTokenType)}
	}
	if tt := form.Get("requested_token_type"); tt != accessTokenType {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: fmt.Sprintf("Invalid requested_token_type: %.100q, want %s", tt, accessTokenType)}
	}
	subject := form.Get("subject_token")
	if subject == "" {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: "Missing required parameter: subject_token"}
	}
	principal, oerr := s.checkSubjectToken(subject)
	if oerr != nil {
		return http.StatusBadRequest, oerr
	}
	token, ttl, _ := s.issue(principal, 0)
	return http.StatusOK, tokenResponse{AccessToken: token, IssuedTokenType: accessTokenType, ExpiresIn: expiresIn(ttl), TokenType: "Bearer"}
}

// readSTSRequest reads the request's parameters from a form body or, with
// Content-Type application/json, from a JSON object (STS takes both; a
// JSON array value, as scope may be, is joined with spaces).
func readSTSRequest(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		if err := r.ParseForm(); err != nil {
			return nil, fmt.Errorf("the body is not a readable form: %v", err)
		}
		return r.PostForm, nil
	}
	b, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the body: %v", err)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		return nil, fmt.Errorf("the body is not a JSON object: %v", err)
	}
	form := url.Values{}
	for k, v := range fields {
		switch v := v.(type) {
		case string:
			form.Set(k, v)
		case []any:
			parts := make([]string, 0, len(v))
			for _, p := range v {
				parts = append(parts, fmt.Sprint(p))
			}
			form.Set(k, strings.Join(parts, " "))
		}
	}
	return form, nil
}

// checkSubjectToken verifies a KSA token made by KSAToken and returns its
// sub.
func (s *Server) checkSubjectToken(subject string) (string, *oauthError) {
	t, err := parseJWT(subject)
	if err != nil {
		return "", invalidGrant("The subject token is invalid: " + err.Error())
	}
	var c ksaClaims
	if err := t.claims(&c); err != nil {
		return "", invalidGrant("The subject token is invalid: " + err.Error())
	}
	s.mu.Lock()
	pub, trusted := s.trusted[c.Iss]
	s.mu.Unlock()
	switch {
	case c.Iss == ClusterIssuer:
		pub = &s.cluster.PublicKey
	case !trusted:
		return "", invalidGrant(fmt.Sprintf("The subject token's iss is %.100q, want %s or a trusted issuer.", c.Iss, ClusterIssuer))
	}
	if !t.verify(pub) {
		return "", invalidGrant("The subject token's signature does not verify with its issuer's key.")
	}
	now := time.Now()
	if exp := time.Unix(c.Exp, 0); !now.Before(exp) {
		return "", invalidGrant("subject token expired at " + exp.UTC().Format(time.RFC3339))
	}
	if c.Nbf > now.Unix()+60 {
		return "", invalidGrant("The subject token is not valid yet (nbf is in the future).")
	}
	if !strings.HasPrefix(c.Sub, "system:serviceaccount:") {
		return "", invalidGrant(fmt.Sprintf("The subject token's sub %.100q is not a Kubernetes service account.", c.Sub))
	}
	if auds := s.subjectAudiences(); len(auds) > 0 && !c.Aud.has(auds...) {
		return "", invalidGrant(fmt.Sprintf("The audience in the subject token, %q, does not match the provider's allowed audiences %q.", []string(c.Aud), auds))
	}
	return c.Sub, nil
}

// subjectAudiences is what SetSubjectAudiences set.
func (s *Server) subjectAudiences() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.subjectAuds
}
