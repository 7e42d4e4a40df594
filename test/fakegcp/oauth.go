package fakegcp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// jwtBearerGrant is the grant_type of a service-account key's token request
// (RFC 7523).
const jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// maxAssertionLifetime is the longest exp - iat Google accepts.
const maxAssertionLifetime = 3600

// badTimes is Google's answer to an assertion outside its time window.
const badTimes = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim."

// oauthError is the error body of the OAuth2 and STS endpoints.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description"`
}

// invalidGrant is a 400 invalid_grant answer.
func invalidGrant(description string) *oauthError {
	return &oauthError{Code: "invalid_grant", Description: description}
}

// tokenResponse is a successful OAuth2 / STS answer.
type tokenResponse struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	ExpiresIn       int    `json:"expires_in"`
	TokenType       string `json:"token_type"`
}

// serveOAuthToken is POST /token: a signed JWT assertion (RFC 7523) for an
// access token whose principal is the service account's email.
func (s *Server) serveOAuthToken(w http.ResponseWriter, r *http.Request) {
	status, body := s.oauthToken(w, r)
	s.tally(&s.counts.OAuth, &s.counts.OAuthRejected, status)
	writeJSON(w, status, body)
}

// oauthToken answers a /token request.
func (s *Server) oauthToken(w http.ResponseWriter, r *http.Request) (int, any) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: "the body is not a readable form: " + err.Error()}
	}
	if gt := r.PostForm.Get("grant_type"); gt != jwtBearerGrant {
		return http.StatusBadRequest, &oauthError{Code: "unsupported_grant_type", Description: fmt.Sprintf("Invalid grant_type: %.100q, want %s", gt, jwtBearerGrant)}
	}
	assertion := r.PostForm.Get("assertion")
	if assertion == "" {
		return http.StatusBadRequest, &oauthError{Code: "invalid_request", Description: "Missing required parameter: assertion"}
	}
	email, oerr := s.checkAssertion(assertion)
	if oerr != nil {
		return http.StatusBadRequest, oerr
	}
	token, ttl, _ := s.issue(email, 0)
	return http.StatusOK, tokenResponse{AccessToken: token, ExpiresIn: expiresIn(ttl), TokenType: "Bearer"}
}

// assertionClaims are the claims x/oauth2/jwt puts in an assertion.
type assertionClaims struct {
	Iss   string   `json:"iss"`
	Scope string   `json:"scope"`
	Aud   audience `json:"aud"`
	Exp   int64    `json:"exp"`
	Iat   int64    `json:"iat"`
	Sub   string   `json:"sub"`
}

// checkAssertion verifies a JWT assertion the way Google's token endpoint
// does and returns the service account it speaks for.
func (s *Server) checkAssertion(assertion string) (string, *oauthError) {
	t, err := parseJWT(assertion)
	if err != nil {
		return "", invalidGrant("Invalid JWT: " + err.Error())
	}
	var c assertionClaims
	if err := t.claims(&c); err != nil {
		return "", invalidGrant("Invalid JWT: " + err.Error())
	}
	if c.Iss == "" {
		return "", invalidGrant("Invalid JWT: no iss claim (the service account's email)")
	}
	keys, known := s.keysOf(c.Iss)
	if !known {
		return "", invalidGrant("Invalid grant: account not found")
	}
	if !verifyWithAny(t, keys) {
		return "", invalidGrant("Invalid JWT Signature.")
	}
	if !c.Aud.has(s.TokenURL) {
		return "", invalidGrant(fmt.Sprintf("Invalid JWT: Failed audience check. The expected audience is %s.", s.TokenURL))
	}
	now := time.Now().Unix()
	if c.Exp <= now || c.Iat == 0 || c.Iat > now+60 || c.Exp-c.Iat > maxAssertionLifetime {
		return "", invalidGrant(badTimes)
	}
	if c.Sub != "" && c.Sub != c.Iss {
		return "", &oauthError{Code: "unauthorized_client", Description: "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested. (sub differs from iss: domain-wide delegation is not supported here)"}
	}
	if strings.TrimSpace(c.Scope) == "" {
		return "", &oauthError{Code: "invalid_scope", Description: "Invalid OAuth scope or ID token audience provided. (the assertion has no scope claim)"}
	}
	return c.Iss, nil
}

// keysOf returns the keys registered for email, and whether the account
// exists at all.
func (s *Server) keysOf(email string) ([]accountKey, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys, ok := s.accounts[email]
	return append([]accountKey(nil), keys...), ok
}

// verifyWithAny checks t's signature with the key its kid names, else with
// each key in turn.
func verifyWithAny(t *jwt, keys []accountKey) bool {
	for _, k := range keys {
		if k.id == t.header.Kid {
			return t.verify(k.pub)
		}
	}
	for _, k := range keys {
		if t.verify(k.pub) {
			return true
		}
	}
	return false
}

// writeJSON answers status with body as JSON. Token answers must not be
// cached.
func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}
