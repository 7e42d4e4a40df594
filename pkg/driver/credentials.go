package driver

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// SecretKey is the one key a volume's Secret holds: a service-account key
// file, as downloaded from Google Cloud.
const SecretKey = "key.json"

// stagedDir (under the state dir) marks staged volumes whose credentials
// came from nodeStageSecretRef: the marker, which holds no secret, tells a
// restarted driver that it no longer has them.
const stagedDir = "staged"

// resolveCredentials decides a volume's credentials from its attributes,
// the request's secrets and (on publish) kubelet's service-account tokens.
// deferred is true when they only arrive with a later call: a stage of a
// volume whose key comes with each publish, or of a Workload Identity
// volume (pod tokens come with publishes only).
func (d *Driver) resolveCredentials(v *mounter.Volume, secrets, attrs map[string]string, publish bool) (creds *auth.Credentials, deferred bool, err error) {
	mode := v.Auth.Mode
	if anon, ok := v.Flag("anonymous-access"); ok {
		switch {
		case anon == "true" && mode == "":
			mode = auth.ModeAnonymous
		case anon == "true" && mode != auth.ModeAnonymous, anon == "false" && mode == auth.ModeAnonymous:
			return nil, false, invalid("volume_context.anonymousAccess=%s contradicts volume_context.auth=%s", anon, mode)
		case mode == "":
			mode = auth.ModeNode
		}
	}
	if mode == "" {
		switch {
		case len(secrets) > 0:
			mode = auth.ModeSecret
		case d.opts.Anonymous:
			mode = auth.ModeAnonymous
		default:
			mode = auth.ModeNode
		}
	}
	if v.Auth.ServiceAccount != "" && mode != auth.ModeWorkloadIdentity {
		return nil, false, invalid("volume_context.%s is only used with auth=%s (this volume's auth is %s)", mounter.AttrServiceAccount, auth.ModeWorkloadIdentity, mode)
	}
	if v.Auth.Provider != "" && mode != auth.ModeWorkloadIdentity {
		return nil, false, invalid("volume_context.%s is only used with auth=%s (this volume's auth is %s)", mounter.AttrProvider, auth.ModeWorkloadIdentity, mode)
	}
	if len(secrets) > 0 && mode != auth.ModeSecret {
		return nil, false, invalid("secrets: the request carries a secret (keys: %s) but the volume's auth is %s; set volume_context.auth=secret, or remove the nodeStageSecretRef/nodePublishSecretRef", secretKeys(secrets), mode)
	}
	creds = &auth.Credentials{Mode: mode}
	if v.ReadOnly() {
		creds.Scope = auth.ScopeReadOnly
	}
	switch mode {
	case auth.ModeSecret:
		if len(secrets) == 0 {
			return nil, true, nil
		}
		key, ok := secrets[SecretKey]
		if !ok || len(secrets) > 1 {
			return nil, false, invalid("secrets: want exactly one key, %q, holding a service-account key file; got keys: %s", SecretKey, secretKeys(secrets))
		}
		if err := auth.ValidateKey([]byte(key)); err != nil {
			return nil, false, invalid("secrets[%q]: %v", SecretKey, err)
		}
		creds.Key = []byte(key)
	case auth.ModeWorkloadIdentity:
		if !publish {
			return nil, true, nil
		}
		if err := d.podToken(creds, attrs[mounter.AttrTokens]); err != nil {
			return nil, false, err
		}
		creds.Provider = v.Auth.Provider
		if creds.Provider == "" {
			creds.Provider = d.opts.WIProvider
		}
		if creds.Provider == "" {
			return nil, false, invalid("volume_context.%s is required with auth=%s (or set the driver flag --workload-identity-provider): the workload identity pool provider to exchange the pod's token at", mounter.AttrProvider, mode)
		}
		creds.ServiceAccount = v.Auth.ServiceAccount
		creds.STSEndpoint, creds.IAMEndpoint = d.opts.STSEndpoint, d.opts.IAMEndpoint
	}
	return creds, false, nil
}

// podToken picks the pod's service-account token out of what kubelet
// passes in volume_context (CSIDriver tokenRequests): a JSON object from
// audience to {token, expirationTimestamp}.
func (d *Driver) podToken(creds *auth.Credentials, raw string) error {
	field := "volume_context." + mounter.AttrTokens
	if raw == "" {
		return invalid("%s is missing: auth=%s needs the pod's service-account token; the CSIDriver object must list tokenRequests (the chart sets them with workloadIdentity.enabled=true) and have podInfoOnMount", field, auth.ModeWorkloadIdentity)
	}
	var tokens map[string]struct {
		Token  string    `json:"token"`
		Expiry time.Time `json:"expirationTimestamp"`
	}
	if err := json.Unmarshal([]byte(raw), &tokens); err != nil {
		return invalid("%s: not the JSON object kubelet writes (audience to {token, expirationTimestamp})", field)
	}
	audiences := make([]string, 0, len(tokens))
	for a := range tokens {
		audiences = append(audiences, a)
	}
	slices.Sort(audiences)
	audience := d.opts.TokenAudience
	switch {
	case audience == "" && len(tokens) == 1:
		audience = audiences[0]
	case audience == "":
		return invalid("%s has tokens for audiences %s: set the driver flag --token-audience to pick one", field, strings.Join(audiences, ", "))
	}
	t, ok := tokens[audience]
	if !ok || t.Token == "" {
		return invalid("%s has no token for audience %q (it has: %s); the CSIDriver tokenRequests and --token-audience must agree", field, audience, strings.Join(audiences, ", "))
	}
	creds.Token, creds.TokenExpiry = t.Token, t.Expiry
	return nil
}

func secretKeys(secrets map[string]string) string {
	keys := make([]string, 0, len(secrets))
	for k := range secrets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

// ownSession reports whether a persistent volume's publish mounts a session
// of its own per identity rather than binding the staged mount: its
// credentials come with the publish.
func ownSession(creds *auth.Credentials, publishSecrets bool) bool {
	return creds != nil && (creds.Mode == auth.ModeWorkloadIdentity || (creds.Mode == auth.ModeSecret && publishSecrets))
}

// sharedMountPoint is where the session serving v with its credentials is
// mounted: one per volume key and identity. Node and anonymous volumes keep
// the key alone, as before identities existed.
func (d *Driver) sharedMountPoint(v *mounter.Volume) string {
	key := v.Key()
	if c := v.Credentials; c != nil && (c.Mode == auth.ModeSecret || c.Mode == auth.ModeWorkloadIdentity) {
		key += "\x00" + c.Identity()
	}
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(d.opts.StateDir, inlineDir, hex.EncodeToString(sum[:8]))
}

// stageCredentials remembers the keys of volumes staged with
// nodeStageSecretRef, by staging path: a publish that has to mount such a
// volume again (its gcsfuse died) gets no secrets from kubelet.
type stageCredentials struct {
	mu    sync.Mutex
	dir   string
	creds map[string]*auth.Credentials
}

func (s *stageCredentials) marker(stagingPath string) string {
	sum := sha256.Sum256([]byte(stagingPath))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:8]))
}

// remember keeps c for stagingPath, and a marker (no secret in it) that
// outlives this process.
func (s *stageCredentials) remember(stagingPath string, c *auth.Credentials) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.creds == nil {
		s.creds = map[string]*auth.Credentials{}
	}
	s.creds[stagingPath] = c
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return err
	}
	return os.WriteFile(s.marker(stagingPath), []byte(c.Identity()+"\n"), 0o600)
}

// lookup returns the credentials kept for stagingPath, or an error saying
// why a volume staged with a secret cannot be mounted again here.
func (s *stageCredentials) lookup(stagingPath string) (*auth.Credentials, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.creds[stagingPath]; c != nil {
		return c, nil
	}
	if _, err := os.Stat(s.marker(stagingPath)); err == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the volume at %q was staged with a key from nodeStageSecretRef, which this driver no longer holds (it restarted since); delete the pod so that kubelet stages the volume again, or use nodePublishSecretRef, which kubelet sends with every publish", stagingPath)
	}
	return nil, nil
}

func (s *stageCredentials) forget(stagingPath string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.creds, stagingPath)
	if err := os.Remove(s.marker(stagingPath)); err != nil && !errors.Is(err, os.ErrNotExist) {
		klog.ErrorS(err, "removing a stage credentials marker", "staging", stagingPath)
	}
}

// redactTokens returns req with kubelet's service-account tokens replaced,
// for logging; req itself is not changed.
func redactTokens(req any) any {
	r, ok := req.(*csi.NodePublishVolumeRequest)
	if !ok || r.GetVolumeContext()[mounter.AttrTokens] == "" {
		return req
	}
	c := proto.Clone(r).(*csi.NodePublishVolumeRequest)
	c.VolumeContext[mounter.AttrTokens] = "***stripped***"
	return c
}
