package fakegcp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// googleError is the error body of Google's JSON APIs (IAM, GCS).
type googleError struct {
	Error googleErrorBody `json:"error"`
}

// googleErrorBody is googleError's "error" object. IAM sets Status, GCS
// sets Errors.
type googleErrorBody struct {
	Code    int           `json:"code"`
	Message string        `json:"message"`
	Errors  []errorDetail `json:"errors,omitempty"`
	Status  string        `json:"status,omitempty"`
}

// errorDetail is one entry of a GCS error's "errors".
type errorDetail struct {
	Message      string `json:"message"`
	Domain       string `json:"domain"`
	Reason       string `json:"reason"`
	LocationType string `json:"locationType,omitempty"`
	Location     string `json:"location,omitempty"`
}

// iamError is an IAM-style error answer.
func iamError(code int, status, message string) (int, any) {
	return code, googleError{Error: googleErrorBody{Code: code, Message: message, Status: status}}
}

// generateAccessTokenRequest is the body of generateAccessToken.
type generateAccessTokenRequest struct {
	Delegates []string `json:"delegates"`
	Scope     []string `json:"scope"`
	Lifetime  string   `json:"lifetime"`
}

// serveGenerateAccessToken is POST
// /v1/projects/-/serviceAccounts/{email}:generateAccessToken: the caller's
// bearer token for an access token of email, if the caller may impersonate
// it.
func (s *Server) serveGenerateAccessToken(w http.ResponseWriter, r *http.Request) {
	status, body := s.generateAccessToken(w, r)
	s.tally(&s.counts.IAM, &s.counts.IAMRejected, status)
	writeJSON(w, status, body)
}

// generateAccessToken answers a generateAccessToken request.
func (s *Server) generateAccessToken(w http.ResponseWriter, r *http.Request) (int, any) {
	email, ok := strings.CutSuffix(r.PathValue("target"), ":generateAccessToken")
	if !ok || email == "" {
		return iamError(http.StatusNotFound, "NOT_FOUND", "Unknown method: this server serves only serviceAccounts/{email}:generateAccessToken")
	}
	caller, err := s.lookup(bearerToken(r))
	if err != nil {
		return iamError(http.StatusUnauthorized, "UNAUTHENTICATED",
			"Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. ("+err.Error()+")")
	}
	var req generateAccessTokenRequest
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		return iamError(http.StatusBadRequest, "INVALID_ARGUMENT", "The request body is not a generateAccessToken JSON object: "+err.Error())
	}
	if len(req.Scope) == 0 {
		return iamError(http.StatusBadRequest, "INVALID_ARGUMENT", "Scope is required.")
	}
	lifetime := time.Duration(0)
	if req.Lifetime != "" {
		lifetime, err = time.ParseDuration(req.Lifetime)
		if err != nil || !strings.HasSuffix(req.Lifetime, "s") || lifetime <= 0 {
			return iamError(http.StatusBadRequest, "INVALID_ARGUMENT", fmt.Sprintf("Invalid lifetime %.40q: want a positive number of seconds like \"3600s\".", req.Lifetime))
		}
	}
	if len(req.Delegates) > 0 {
		return iamError(http.StatusBadRequest, "INVALID_ARGUMENT", "Delegation chains are not supported by this fake.")
	}
	if !s.mayImpersonate(caller, email) {
		return iamError(http.StatusForbidden, "PERMISSION_DENIED",
			fmt.Sprintf("Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist). (%s may not impersonate %s)", caller, email))
	}
	token, _, expiry := s.issue(email, lifetime)
	return http.StatusOK, map[string]string{
		"accessToken": token,
		"expireTime":  expiry.UTC().Format(time.RFC3339),
	}
}

// mayImpersonate reports whether AllowImpersonation(principal, email) was
// called.
func (s *Server) mayImpersonate(principal, email string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.impersonate[email][principal]
}

// bearerToken is the token of an "Authorization: Bearer TOKEN" header, or "".
func bearerToken(r *http.Request) string {
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}
