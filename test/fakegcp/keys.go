package fakegcp

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// ClusterIssuer is the iss of the tokens KSAToken makes.
const ClusterIssuer = "https://kubernetes.default.svc"

// keyFile is a Google service-account key file, fields in Google's order.
type keyFile struct {
	Type                    string `json:"type"`
	ProjectID               string `json:"project_id"`
	PrivateKeyID            string `json:"private_key_id"`
	PrivateKey              string `json:"private_key"`
	ClientEmail             string `json:"client_email"`
	ClientID                string `json:"client_id"`
	AuthURI                 string `json:"auth_uri"`
	TokenURI                string `json:"token_uri"`
	AuthProviderX509CertURL string `json:"auth_provider_x509_cert_url"`
	ClientX509CertURL       string `json:"client_x509_cert_url"`
	UniverseDomain          string `json:"universe_domain"`
}

// ServiceAccountKey makes a new RSA-2048 key for the service account email,
// registers its public half (so the token endpoint accepts assertions it
// signs), and returns it as a Google key file: type "service_account",
// project_id, private_key_id, private_key (PKCS#8 PEM), client_email,
// client_id, auth_uri, token_uri (= s.TokenURL), ...
func (s *Server) ServiceAccountKey(email string) []byte {
	key, id := newServiceAccountKey()
	s.mu.Lock()
	s.accounts[email] = append(s.accounts[email], accountKey{id: id, pub: &key.PublicKey})
	s.mu.Unlock()
	return s.keyFile(email, id, key)
}

// UnregisteredKey returns a key file of the same shape for email whose key
// the server does not know, like a deleted or rotated-away key. The account
// itself exists, so the token endpoint refuses its assertions with 400
// {"error":"invalid_grant","error_description":"Invalid JWT Signature."}.
func (s *Server) UnregisteredKey(email string) []byte {
	key, id := newServiceAccountKey()
	s.mu.Lock()
	if _, ok := s.accounts[email]; !ok {
		s.accounts[email] = nil
	}
	s.mu.Unlock()
	return s.keyFile(email, id, key)
}

// newServiceAccountKey makes an RSA-2048 key and a 40-hex-digit key id.
func newServiceAccountKey() (*rsa.PrivateKey, string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(fmt.Sprintf("fakegcp: generate service account key: %v", err))
	}
	return key, randomHex(20)
}

// keyFile renders a key file for email.
func (s *Server) keyFile(email, id string, key *rsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		panic(fmt.Sprintf("fakegcp: encode service account key: %v", err))
	}
	b, err := json.MarshalIndent(keyFile{
		Type:                    "service_account",
		ProjectID:               projectOf(email),
		PrivateKeyID:            id,
		PrivateKey:              string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		ClientEmail:             email,
		ClientID:                clientID(email),
		AuthURI:                 "https://accounts.google.com/o/oauth2/auth",
		TokenURI:                s.TokenURL,
		AuthProviderX509CertURL: "https://www.googleapis.com/oauth2/v1/certs",
		ClientX509CertURL:       "https://www.googleapis.com/robot/v1/metadata/x509/" + url.PathEscape(email),
		UniverseDomain:          "googleapis.com",
	}, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("fakegcp: encode key file: %v", err))
	}
	return append(b, '\n')
}

// projectOf is PROJECT in NAME@PROJECT.iam.gserviceaccount.com, else
// "test-project".
func projectOf(email string) string {
	_, domain, ok := strings.Cut(email, "@")
	if project, ok2 := strings.CutSuffix(domain, ".iam.gserviceaccount.com"); ok && ok2 && project != "" {
		return project
	}
	return "test-project"
}

// clientID is a stable 21-digit number derived from email, like the
// numeric id Google gives a service account.
func clientID(email string) string {
	sum := sha256.Sum256([]byte(email))
	return fmt.Sprintf("1%020d", binary.BigEndian.Uint64(sum[:8]))
}

// ksaClaims are the claims of a projected Kubernetes service-account token.
type ksaClaims struct {
	Aud        audience      `json:"aud"`
	Exp        int64         `json:"exp"`
	Iat        int64         `json:"iat"`
	Iss        string        `json:"iss"`
	Jti        string        `json:"jti,omitempty"`
	Kubernetes kubernetesIdx `json:"kubernetes.io"`
	Nbf        int64         `json:"nbf"`
	Sub        string        `json:"sub"`
}

// kubernetesIdx is the "kubernetes.io" claim.
type kubernetesIdx struct {
	Namespace      string `json:"namespace"`
	ServiceAccount struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"serviceaccount"`
}

// KSAToken makes a Kubernetes-service-account-like token for NAMESPACE/NAME,
// as the TokenRequest API would: an RS256 JWT signed by the server's own
// cluster issuer key, with iss ClusterIssuer, sub
// "system:serviceaccount:NAMESPACE:NAME", aud [audience], iat = nbf = now,
// exp = now + ttl (a ttl <= 0 makes an already expired token), and the
// "kubernetes.io" claim {namespace, serviceaccount: {name, uid}}.
func (s *Server) KSAToken(namespace, name, audience string, ttl time.Duration) string {
	now := time.Now()
	c := ksaClaims{
		Aud: []string{audience},
		Exp: now.Add(ttl).Unix(),
		Iat: now.Unix(),
		Iss: ClusterIssuer,
		Jti: uuid(randomHex(16)),
		Nbf: now.Unix(),
		Sub: "system:serviceaccount:" + namespace + ":" + name,
	}
	if ttl <= 0 {
		c.Exp = now.Unix() - 1 // whole seconds: make sure it is already past
	}
	c.Kubernetes.Namespace = namespace
	c.Kubernetes.ServiceAccount.Name = name
	c.Kubernetes.ServiceAccount.UID = serviceAccountUID(namespace, name)
	token, err := signJWT(s.cluster, jwtHeader{Alg: "RS256", Kid: s.clusterKID}, c)
	if err != nil {
		panic(fmt.Sprintf("fakegcp: sign KSA token: %v", err))
	}
	return token
}

// serviceAccountUID is a stable UUID for NAMESPACE/NAME.
func serviceAccountUID(namespace, name string) string {
	sum := sha256.Sum256([]byte(namespace + "/" + name))
	return uuid(fmt.Sprintf("%x", sum[:16]))
}

// uuid formats 32 hex digits as 8-4-4-4-12.
func uuid(h string) string {
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// ImpersonationURL is the generateAccessToken URL for email, what an
// external_account config's service_account_impersonation_url holds.
func (s *Server) ImpersonationURL(email string) string {
	return s.IAMURL + "/v1/projects/-/serviceAccounts/" + email + ":generateAccessToken"
}

// ExternalAccountConfig returns a Workload Identity Federation credential
// configuration (type "external_account", as `gcloud iam
// workload-identity-pools create-cred-config` writes) for this server: the
// subject token is read from tokenFile, exchanged at s.STSURL for
// s.Provider, and, if impersonate is not "", traded for a token of that
// service account at s.ImpersonationURL(impersonate).
func (s *Server) ExternalAccountConfig(tokenFile, impersonate string) []byte {
	cfg := map[string]any{
		"type":               "external_account",
		"audience":           s.Provider,
		"subject_token_type": jwtTokenType,
		"token_url":          s.STSURL,
		"credential_source": map[string]any{
			"file":   tokenFile,
			"format": map[string]string{"type": "text"},
		},
		"universe_domain": "googleapis.com",
	}
	if impersonate != "" {
		cfg["service_account_impersonation_url"] = s.ImpersonationURL(impersonate)
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		panic(fmt.Sprintf("fakegcp: encode external account config: %v", err))
	}
	return append(b, '\n')
}
