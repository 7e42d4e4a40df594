package mounter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// maxSocketPath is the longest unix socket path the kernel accepts.
const maxSocketPath = 107

// tokenServer hands one session's access tokens to its gcsfuse, which asks
// for them with --token-url=unix://PATH. The socket sits in the session's
// 0700 directory and answers only its own uid and root, so the URL on
// gcsfuse's command line names no secret, and no key or token ever touches
// a file.
type tokenServer struct {
	session string
	srv     *http.Server

	mu    sync.Mutex
	creds *auth.Credentials
	src   oauth2.TokenSource // caches the last token until shortly before it expires
}

// startTokenServer serves c's tokens on a unix socket at path.
func startTokenServer(path, session string, c *auth.Credentials) (*tokenServer, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("token socket path %q is %d bytes, over the kernel's limit of %d: use a shorter work dir", path, len(path), maxSocketPath)
	}
	t := &tokenServer{session: session}
	if err := t.update(c); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("token socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, err
	}
	t.srv = &http.Server{
		Handler:           t,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, c)
		},
	}
	go func() { _ = t.srv.Serve(lis) }()
	return t, nil
}

type peerKey struct{}

// update swaps in fresh credentials (a republish brings a new pod token).
// The token already handed out stays valid until it expires; the next one
// comes from the new credentials. The identity may not change: sessions
// are per identity.
func (t *tokenServer) update(c *auth.Credentials) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.creds != nil && c.Identity() != t.creds.Identity() {
		return fmt.Errorf("session %s serves %s, not %s", t.session, t.creds, c)
	}
	src, err := c.TokenSource(context.Background())
	if err != nil {
		return err
	}
	var last *oauth2.Token
	if t.src != nil {
		// Only a token already fetched: never a new fetch with the old
		// credentials just to carry it over.
		if r, ok := t.src.(*reuse); ok {
			last = r.cached()
		}
	}
	t.creds, t.src = c, &reuse{inner: oauth2.ReuseTokenSource(last, src), last: last}
	return nil
}

// reuse remembers the last token its ReuseTokenSource returned.
type reuse struct {
	inner oauth2.TokenSource
	mu    sync.Mutex
	last  *oauth2.Token
}

func (r *reuse) Token() (*oauth2.Token, error) {
	tok, err := r.inner.Token()
	if err == nil {
		r.mu.Lock()
		r.last = tok
		r.mu.Unlock()
	}
	return tok, err
}

func (r *reuse) cached() *oauth2.Token {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func (t *tokenServer) close() {
	if t != nil && t.srv != nil {
		_ = t.srv.Close()
	}
}

// ServeHTTP answers gcsfuse's token request in the metadata server's shape.
func (t *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if c, ok := r.Context().Value(peerKey{}).(*net.UnixConn); ok {
		if uid, err := peerUID(c); err != nil || (uid != 0 && uid != uint32(os.Getuid())) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
	}
	if r.Header.Get("Metadata-Flavor") != "Google" {
		http.Error(w, "missing Metadata-Flavor: Google", http.StatusForbidden)
		return
	}
	t.mu.Lock()
	creds, src := t.creds, t.src
	t.mu.Unlock()
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	tok, err := auth.Fetch(ctx, creds, src)
	if err != nil {
		klog.ErrorS(err, "cannot get an access token for gcsfuse; its GCS calls fail until this is fixed", "session", t.session, "identity", creds)
		code := http.StatusBadGateway
		if errors.Is(err, auth.ErrRejected) {
			code = http.StatusUnauthorized
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	klog.V(4).InfoS("served an access token to gcsfuse", "session", t.session, "identity", creds, "expiry", tok.Expiry)
	out := map[string]any{"access_token": tok.AccessToken, "token_type": "Bearer"}
	if !tok.Expiry.IsZero() {
		out["expiry"] = tok.Expiry
		out["expires_in"] = int64(time.Until(tok.Expiry).Seconds())
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
