// Package fakegcp stands in, on 127.0.0.1 and in-process, for the Google
// services a GCS credential goes through before it reaches a bucket:
//
//   - the OAuth2 token endpoint (oauth2.googleapis.com/token) that trades a
//     service-account key's signed JWT assertion for an access token;
//   - the Security Token Service (sts.googleapis.com/v1/token) that trades a
//     Kubernetes service-account token for a federated access token
//     (Workload Identity Federation, RFC 8693 token exchange);
//   - IAM Credentials generateAccessToken
//     (iamcredentials.googleapis.com), service-account impersonation;
//   - and, through Wrap, the access check GCS itself does: a front for
//     fake-gcs-server that accepts only the access tokens issued here, and
//     only on the buckets their principal was granted.
//
// Keys are RSA-2048 and JWTs RS256, made and checked with the standard
// library only. Nothing here logs a token, key or assertion, and no error
// body echoes one.
package fakegcp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultProvider is the Workload Identity provider a Server accepts as the
// STS audience unless its Provider field is changed.
const DefaultProvider = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/test/providers/k8s"

// DefaultTokenTTL is the lifetime of access tokens until SetTokenTTL.
const DefaultTokenTTL = time.Hour

// Server is the fake of Google's auth services. Its exported fields are set
// by Start; Provider may be changed before the first STS request.
type Server struct {
	URL      string // http://127.0.0.1:PORT
	TokenURL string // URL + "/token": OAuth2 JWT-bearer token endpoint (a key's token_uri)
	STSURL   string // URL + "/v1/token": Security Token Service (RFC 8693 token exchange)
	IAMURL   string // URL: IAM Credentials base, serving POST /v1/projects/-/serviceAccounts/{email}:generateAccessToken
	Provider string // the only STS audience accepted

	http *http.Server
	done chan struct{} // closed by Stop: ends stalls
	stop sync.Once

	cluster    *rsa.PrivateKey // the "cluster issuer" that signs KSA tokens
	clusterKID string
	trusted    map[string]*rsa.PublicKey // more issuers STS accepts, by iss

	mu          sync.Mutex
	ttl         time.Duration
	accounts    map[string][]accountKey // email → registered public keys (possibly none)
	tokens      map[string]issued       // access token → whom it was issued to
	grants      map[string]map[string]bool
	public      map[string]bool
	impersonate map[string]map[string]bool // email → principals allowed to impersonate it
	subjectAuds []string                   // KSA audiences STS accepts; empty: any
	requests    []Request
	counts      Counts
	fault       func(*http.Request) Fault
}

// accountKey is one registered service-account key.
type accountKey struct {
	id  string // private_key_id, the JWT kid
	pub *rsa.PublicKey
}

// issued is what an access token stands for.
type issued struct {
	principal string
	expiry    time.Time
}

// Request is one request the GCS front (Wrap) saw.
type Request struct {
	Method, Path string
	Bucket       string // "" when the path names none
	Principal    string // "" for anonymous or an invalid token
	// Status is what the front or the wrapped handler answered; 0 while the
	// request is in flight, or when it got no answer (a Reset fault, or a
	// client that gave up during a Stall).
	Status int
}

// Counts says how many access tokens each endpoint issued, and how many
// requests it refused.
type Counts struct {
	OAuth, OAuthRejected int // /token
	STS, STSRejected     int // /v1/token
	IAM, IAMRejected     int // generateAccessToken
}

// Fault is what the front does to a request instead of (or before) serving
// it. The zero value is no fault. Stall comes first, then Reset, then Status.
type Fault struct {
	Status int           // answer with this status and a GCS JSON error body
	Reset  bool          // close the connection without answering
	Stall  time.Duration // wait this long first (less if the client gives up)
}

// Start serves the fake on a free loopback port. Stop it with Stop.
func Start() (*Server, error) { return StartAt("127.0.0.1:0") }

// StartAt serves the fake on addr (host:port; port 0 picks a free one).
func StartAt(addr string) (*Server, error) {
	cluster, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("fakegcp: generate cluster issuer key: %w", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("fakegcp: listen: %w", err)
	}
	s := &Server{
		URL:         "http://" + lis.Addr().String(),
		Provider:    DefaultProvider,
		done:        make(chan struct{}),
		cluster:     cluster,
		clusterKID:  randomHex(20),
		ttl:         DefaultTokenTTL,
		accounts:    map[string][]accountKey{},
		tokens:      map[string]issued{},
		grants:      map[string]map[string]bool{},
		public:      map[string]bool{},
		impersonate: map[string]map[string]bool{},
		trusted:     map[string]*rsa.PublicKey{},
	}
	s.TokenURL = s.URL + "/token"
	s.STSURL = s.URL + "/v1/token"
	s.IAMURL = s.URL
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(lis)
	return s, nil
}

// TrustIssuer makes STS accept subject tokens from another issuer too: a
// real cluster's service-account tokens (iss, and the API server's
// service-account public key), as a workload identity pool's OIDC provider
// would.
func (s *Server) TrustIssuer(iss string, pub *rsa.PublicKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trusted[iss] = pub
}

// routes is the auth services' handler.
func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", s.serveOAuthToken)
	mux.HandleFunc("POST /v1/token", s.serveSTSToken)
	mux.HandleFunc("POST /v1/projects/{project}/serviceAccounts/{target}", s.serveGenerateAccessToken)
	return mux
}

// Stop closes the listener and every connection, and ends any Stall in
// progress on a front made by Wrap.
func (s *Server) Stop() {
	s.stop.Do(func() {
		close(s.done)
		s.http.Close()
	})
}

// SetTokenTTL sets the lifetime of every access token issued from now on
// (tokens issued before keep theirs). d must be positive.
func (s *Server) SetTokenTTL(d time.Duration) {
	if d <= 0 {
		panic(fmt.Sprintf("fakegcp: SetTokenTTL(%v): the lifetime must be positive", d))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ttl = d
}

// SetSubjectAudiences makes STS accept only KSA tokens whose aud holds one
// of auds (as GKE checks a token's audience against the pool's). With none
// (the default) any audience is accepted.
func (s *Server) SetSubjectAudiences(auds ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.subjectAuds = append([]string(nil), auds...)
}

// Grant lets principal use bucket: a service-account email, or
// "system:serviceaccount:NS:NAME" for a federated (STS) token.
func (s *Server) Grant(bucket, principal string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grants[bucket] == nil {
		s.grants[bucket] = map[string]bool{}
	}
	s.grants[bucket][principal] = true
}

// Public lets requests without an Authorization header use bucket (as
// allUsers would). A request with a bad token is still refused.
func (s *Server) Public(bucket string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.public[bucket] = true
}

// AllowImpersonation lets principal (usually "system:serviceaccount:NS:NAME")
// call generateAccessToken for the service account email, as
// roles/iam.workloadIdentityUser or serviceAccountTokenCreator would.
func (s *Server) AllowImpersonation(principal, email string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.impersonate[email] == nil {
		s.impersonate[email] = map[string]bool{}
	}
	s.impersonate[email][principal] = true
}

// SetFault installs f as the front's fault hook: every request Wrap sees is
// first passed to f, and a non-zero Fault is applied before the auth check.
// nil removes the hook.
func (s *Server) SetFault(f func(r *http.Request) Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fault = f
}

// Requests returns what the front saw so far, in the order it arrived.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Counts returns how many tokens each endpoint has issued and refused.
func (s *Server) Counts() Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts
}

// AccessTokens returns every access token issued so far, for tests that
// check none of them leaked into a log or a file.
func (s *Server) AccessTokens() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.tokens))
	for t := range s.tokens {
		out = append(out, t)
	}
	return out
}

// issue makes a new access token for principal that lives for the current
// TTL, or for max if that is shorter (and positive). It returns the token,
// its lifetime and its expiry.
func (s *Server) issue(principal string, max time.Duration) (string, time.Duration, time.Time) {
	token := "ya29.fake-" + randomToken(32)
	s.mu.Lock()
	defer s.mu.Unlock()
	ttl := s.ttl
	if max > 0 && max < ttl {
		ttl = max
	}
	expiry := time.Now().Add(ttl)
	s.tokens[token] = issued{principal: principal, expiry: expiry}
	return token, ttl, expiry
}

// errExpired and errUnknownToken say why lookup refused a token.
var (
	errExpired      = errors.New("access token expired")
	errUnknownToken = errors.New("access token not issued by this server")
)

// lookup returns the principal an unexpired access token was issued to.
func (s *Server) lookup(token string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.tokens[token]
	switch {
	case !ok:
		return "", errUnknownToken
	case !time.Now().Before(t.expiry):
		return "", errExpired
	}
	return t.principal, nil
}

// tally counts one answer of an endpoint: in ok if it issued a token (2xx),
// in rejected otherwise. ok and rejected point into s.counts.
func (s *Server) tally(ok, rejected *int, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status >= 200 && status < 300 {
		*ok++
	} else {
		*rejected++
	}
}

// expiresIn is a lifetime in whole seconds, rounded up so that a token
// never looks like one without expiry (0) to a client.
func expiresIn(d time.Duration) int {
	return int(math.Ceil(d.Seconds()))
}

// randomToken is n random bytes, base64url without padding.
func randomToken(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// randomHex is n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
