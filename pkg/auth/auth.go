// Package auth turns a volume's credentials into OAuth2 access tokens for
// Cloud Storage: the node's Application Default Credentials, a
// service-account key from a Kubernetes Secret, or a pod's Kubernetes
// service-account token exchanged through Workload Identity Federation.
//
// Credentials carry secrets. They cross one boundary only, the node driver's
// 0700 socket to the mounter that hosts gcsfuse, and are never formatted
// into a log line or an error: String, GoString and MarshalLog print only
// the non-secret identity.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// Mode is where a volume's credentials come from.
type Mode string

// Modes, as written in the volume attribute "auth".
const (
	ModeNode             Mode = "node"             // the node's Application Default Credentials
	ModeAnonymous        Mode = "anonymous"        // no credentials: public buckets, emulators
	ModeSecret           Mode = "secret"           // a service-account key from nodeStage/nodePublishSecretRef
	ModeWorkloadIdentity Mode = "workloadIdentity" // the pod's service-account token, exchanged at STS
)

// Modes lists every mode, for error messages.
var Modes = []Mode{ModeNode, ModeAnonymous, ModeSecret, ModeWorkloadIdentity}

// Scopes of the access tokens handed to gcsfuse and used for bucket checks.
const (
	ScopeReadWrite = "https://www.googleapis.com/auth/devstorage.full_control"
	ScopeReadOnly  = "https://www.googleapis.com/auth/devstorage.read_only"
	scopeCloud     = "https://www.googleapis.com/auth/cloud-platform"
)

// Default endpoints of Google's Security Token Service and IAM Credentials
// API.
const (
	DefaultSTSEndpoint = "https://sts.googleapis.com/v1/token"
	DefaultIAMEndpoint = "https://iamcredentials.googleapis.com"
)

// Credentials are what one gcsfuse session authenticates with.
type Credentials struct {
	Mode  Mode   `json:"mode"`
	Scope string `json:"scope,omitempty"` // "" is ScopeReadWrite

	// ModeSecret: the service-account key JSON. Its token_uri is honoured.
	Key []byte `json:"key,omitempty"`

	// ModeWorkloadIdentity: the pod's Kubernetes service-account token, the
	// STS audience (the workload identity pool provider), and optionally a
	// Google service account to impersonate with the federated token.
	Token          string    `json:"token,omitempty"`
	TokenExpiry    time.Time `json:"tokenExpiry,omitzero"`
	Provider       string    `json:"provider,omitempty"`
	ServiceAccount string    `json:"serviceAccount,omitempty"`
	STSEndpoint    string    `json:"stsEndpoint,omitempty"`
	IAMEndpoint    string    `json:"iamEndpoint,omitempty"`
}

// Anonymous reports whether c asks for no credentials at all. Nil
// credentials are the node's.
func (c *Credentials) Anonymous() bool { return c != nil && c.Mode == ModeAnonymous }

// Identity names who the credentials authenticate as, without a secret:
// "node", "anonymous", "key:<client_email>/<key id>", or
// "workloadIdentity:<token subject>[->serviceAccount]@<provider>". Equal
// identities may share a gcsfuse; different ones never do.
func (c *Credentials) Identity() string {
	if c == nil {
		return string(ModeNode)
	}
	switch c.Mode {
	case ModeSecret:
		email, id := keyIdentity(c.Key)
		return "key:" + email + "/" + id
	case ModeWorkloadIdentity:
		s := "workloadIdentity:" + TokenSubject(c.Token)
		if c.ServiceAccount != "" {
			s += "->" + c.ServiceAccount
		}
		return s + "@" + c.Provider
	}
	return string(c.Mode)
}

// IdentityHash is a short fixed-size digest of Identity, for paths.
func (c *Credentials) IdentityHash() string {
	h := sha256.Sum256([]byte(c.Identity()))
	return hex.EncodeToString(h[:8])
}

// String never prints a secret.
func (c *Credentials) String() string {
	if c == nil {
		return string(ModeNode)
	}
	return c.Identity()
}

// GoString keeps %#v from printing the key or the token.
func (c *Credentials) GoString() string { return "auth.Credentials{" + c.String() + "}" }

// MarshalLog is what klog and logr print for c.
func (c *Credentials) MarshalLog() any { return c.String() }

// keyIdentity reads the non-secret fields of a service-account key.
func keyIdentity(key []byte) (email, id string) {
	var f struct {
		Email string `json:"client_email"`
		ID    string `json:"private_key_id"`
	}
	if json.Unmarshal(key, &f) != nil || f.Email == "" {
		sum := sha256.Sum256(key)
		return "unknown", hex.EncodeToString(sum[:6])
	}
	return f.Email, f.ID
}

// ValidateKey checks that key is a service-account key JSON file, without
// echoing any of it.
func ValidateKey(key []byte) error {
	var f struct {
		Type       string `json:"type"`
		Email      string `json:"client_email"`
		PrivateKey string `json:"private_key"`
		TokenURI   string `json:"token_uri"`
	}
	if err := json.Unmarshal(key, &f); err != nil {
		return errors.New("not a JSON document (want a service-account key file as downloaded from Google Cloud)")
	}
	var missing []string
	if f.Type != "service_account" {
		return fmt.Errorf("type is %q; want \"service_account\" (a service-account key file)", f.Type)
	}
	if f.Email == "" {
		missing = append(missing, "client_email")
	}
	if f.PrivateKey == "" {
		missing = append(missing, "private_key")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the key file lacks %s", strings.Join(missing, " and "))
	}
	return nil
}

// TokenSubject reads the "sub" claim of a JWT without verifying it (the
// Security Token Service verifies it). It is used only to tell identities
// apart; "" if token is not a JWT.
func TokenSubject(token string) string {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return ""
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var claims struct {
		Sub string `json:"sub"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return ""
	}
	return claims.Sub
}

// TokenSource returns a source of access tokens for c. It does no I/O: the
// first Token call does. Anonymous credentials have no token source.
func (c *Credentials) TokenSource(ctx context.Context) (oauth2.TokenSource, error) {
	scope := ScopeReadWrite
	if c != nil && c.Scope != "" {
		scope = c.Scope
	}
	mode := ModeNode
	if c != nil {
		mode = c.Mode
	}
	switch mode {
	case ModeNode:
		return &nodeSource{scope: scope}, nil
	case ModeSecret:
		if err := ValidateKey(c.Key); err != nil {
			return nil, fmt.Errorf("service-account key: %w", err)
		}
		creds, err := google.CredentialsFromJSONWithType(ctx, c.Key, google.ServiceAccount, scope)
		if err != nil {
			return nil, errors.New("service-account key: cannot be parsed as a key file (is private_key a PEM key?)")
		}
		return creds.TokenSource, nil
	case ModeWorkloadIdentity:
		return &federated{creds: c, scope: scope}, nil
	case ModeAnonymous:
		return nil, errors.New("anonymous credentials have no tokens")
	}
	return nil, fmt.Errorf("unknown credentials mode %q", mode)
}

// nodeSource finds the Application Default Credentials at the first Token
// call: finding them may ask the metadata server, which is I/O.
type nodeSource struct {
	scope string
	mu    sync.Mutex
	ts    oauth2.TokenSource
}

func (n *nodeSource) Token() (*oauth2.Token, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ts == nil {
		ts, err := google.DefaultTokenSource(context.Background(), n.scope)
		if err != nil {
			return nil, fmt.Errorf("node credentials (Application Default Credentials): %w", err)
		}
		n.ts = ts
	}
	return n.ts.Token()
}
