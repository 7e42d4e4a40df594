package fakegcp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// jwtHeader is the JOSE header of an RS256 JWT.
type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ,omitempty"`
	Kid string `json:"kid,omitempty"`
}

// jwt is a JWT split into its parts; the signature is not checked yet.
type jwt struct {
	header       jwtHeader
	payload      []byte // the claims, JSON
	signingInput string // base64url(header) + "." + base64url(payload)
	signature    []byte
}

// signJWT makes base64url(header).base64url(claims).base64url(signature),
// the signature RS256 (RSASSA-PKCS1-v1_5 over SHA-256).
func signJWT(key *rsa.PrivateKey, header jwtHeader, claims any) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(h) + "." + base64.RawURLEncoding.EncodeToString(c)
	sum := sha256.Sum256([]byte(input))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// parseJWT splits a compact JWT and decodes its header. It accepts only
// RS256. The errors never quote the token.
func parseJWT(token string) (*jwt, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("not a JWT: %d dot-separated parts, want 3", len(parts))
	}
	h, err := decodeSegment(parts[0])
	if err != nil {
		return nil, fmt.Errorf("JWT header is not base64url: %v", err)
	}
	payload, err := decodeSegment(parts[1])
	if err != nil {
		return nil, fmt.Errorf("JWT payload is not base64url: %v", err)
	}
	sig, err := decodeSegment(parts[2])
	if err != nil {
		return nil, fmt.Errorf("JWT signature is not base64url: %v", err)
	}
	t := &jwt{payload: payload, signingInput: parts[0] + "." + parts[1], signature: sig}
	if err := json.Unmarshal(h, &t.header); err != nil {
		return nil, errors.New("JWT header is not a JSON object")
	}
	if t.header.Alg != "RS256" {
		return nil, fmt.Errorf("JWT alg is %q, want RS256", t.header.Alg)
	}
	return t, nil
}

// decodeSegment decodes base64url, with or without padding (x/oauth2's jws
// strips it; some encoders keep it).
func decodeSegment(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// verify checks the RS256 signature against pub.
func (t *jwt) verify(pub *rsa.PublicKey) bool {
	sum := sha256.Sum256([]byte(t.signingInput))
	return rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], t.signature) == nil
}

// claims decodes the payload into v.
func (t *jwt) claims(v any) error {
	if err := json.Unmarshal(t.payload, v); err != nil {
		return fmt.Errorf("JWT claims are not the expected JSON object: %v", err)
	}
	return nil
}

// audience is a JWT aud claim: a string or an array of strings.
type audience []string

// UnmarshalJSON accepts both forms of aud.
func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

// has reports whether a holds any of want.
func (a audience) has(want ...string) bool {
	for _, x := range a {
		for _, w := range want {
			if x == w {
				return true
			}
		}
	}
	return false
}
