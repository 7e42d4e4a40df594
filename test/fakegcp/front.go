package fakegcp

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// pathKind is what a GCS request path is about.
type pathKind int

const (
	pathUnknown pathKind = iota // not served by the front: 403
	pathService                 // /storage/v1/b: list or create buckets; any valid token
	pathBucket                  // one bucket's metadata or objects
)

// bucketPrefixes are the JSON API paths followed by {bucket}/...
var bucketPrefixes = []string{"/storage/v1/b/", "/download/storage/v1/b/", "/upload/storage/v1/b/"}

// reservedSegments are first path segments that are API roots, never XML
// API bucket names.
var reservedSegments = map[string]bool{"storage": true, "download": true, "upload": true, "batch": true}

// classify works out the bucket a GCS request path names:
//
//	/storage/v1/b, /storage/v1/b/              pathService
//	/storage/v1/b/{bucket}[/...]               pathBucket (JSON API)
//	/download/storage/v1/b/{bucket}/...        pathBucket (JSON media download)
//	/upload/storage/v1/b/{bucket}/...          pathBucket (JSON media upload)
//	/{bucket}[/{object...}]                    pathBucket (XML API)
//	anything else (/batch/..., /_internal/...,
//	/upload/resumable/..., /)                  pathUnknown
//
// {bucket} must be a well-formed bucket name, and the XML form's first
// segment none of storage, download, upload, batch.
func classify(path string) (string, pathKind) {
	if path == "/storage/v1/b" || path == "/storage/v1/b/" {
		return "", pathService
	}
	for _, prefix := range bucketPrefixes {
		if rest, ok := strings.CutPrefix(path, prefix); ok {
			bucket, _, _ := strings.Cut(rest, "/")
			if !validBucketName(bucket) {
				return "", pathUnknown
			}
			return bucket, pathBucket
		}
	}
	bucket, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if reservedSegments[bucket] || !validBucketName(bucket) {
		return "", pathUnknown
	}
	return bucket, pathBucket
}

// validBucketName reports whether name is a GCS bucket name: 3 to 222
// characters of a-z, 0-9, '-', '_' and '.', starting and ending with a
// letter or digit.
func validBucketName(name string) bool {
	if len(name) < 3 || len(name) > 222 {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= 'a' && c <= 'z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || i == len(name)-1 || c != '-' && c != '_' && c != '.') {
			return false
		}
	}
	return true
}

// Wrap returns the GCS front for h (fake-gcs-server's handler): it records
// every request (Requests), applies the fault hook (SetFault), and passes a
// request on to h, unchanged, only if GCS would let it through:
//
//   - a path whose bucket it can work out (see classify; anything else is
//     403);
//   - no Authorization header: only on a Public bucket, else 401;
//   - "Bearer TOKEN" with TOKEN not issued here, or expired: 401 "Invalid
//     Credentials";
//   - a valid token whose principal was not Granted the bucket (and the
//     bucket is not Public): 403; on /storage/v1/b any valid token will do.
//
// Refusals have the GCS JSON API error shape, for the XML paths too.
func (s *Server) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bucket, kind := classify(r.URL.Path)
		i := s.begin(Request{Method: r.Method, Path: r.URL.Path, Bucket: bucket})
		if status, handled := s.applyFault(w, r); handled {
			s.end(i, "", status)
			return
		}
		principal, status, body := s.authorize(r, bucket, kind)
		if status != 0 {
			if status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="https://accounts.google.com/"`)
			}
			writeJSON(w, status, body)
			s.end(i, principal, status)
			return
		}
		rec := &statusRecorder{ResponseWriter: w}
		h.ServeHTTP(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		s.end(i, principal, rec.status)
	})
}

// begin records a request as it arrives and returns its index.
func (s *Server) begin(req Request) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
	return len(s.requests) - 1
}

// end fills in who request i was from and what it was answered.
func (s *Server) end(i int, principal string, status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[i].Principal = principal
	s.requests[i].Status = status
}

// authorize decides a request as GCS would. status 0 means allowed (by
// principal, "" for anonymous); otherwise status and body are the refusal.
func (s *Server) authorize(r *http.Request, bucket string, kind pathKind) (principal string, status int, body any) {
	if kind == pathUnknown {
		return "", http.StatusForbidden, gcsError(http.StatusForbidden, "forbidden",
			fmt.Sprintf("The front does not serve %s %s: only /storage/v1/b[/BUCKET/...], /download/storage/v1/b/BUCKET/..., /upload/storage/v1/b/BUCKET/... and /BUCKET/OBJECT.", r.Method, r.URL.Path))
	}
	if r.Header.Get("Authorization") == "" {
		if kind == pathBucket && s.isPublic(bucket) {
			return "", 0, nil
		}
		return "", http.StatusUnauthorized, gcsError(http.StatusUnauthorized, "required", deniedMessage("Anonymous caller"))
	}
	principal, err := s.lookup(bearerToken(r))
	if err != nil {
		return "", http.StatusUnauthorized, invalidCredentials()
	}
	if kind == pathService || s.isGranted(bucket, principal) || s.isPublic(bucket) {
		return principal, 0, nil
	}
	return principal, http.StatusForbidden, gcsError(http.StatusForbidden, "forbidden", deniedMessage(principal))
}

// deniedMessage is GCS's message for who lacking access to a bucket.
func deniedMessage(who string) string {
	return who + " does not have storage.objects.list access to the Google Cloud Storage bucket. Permission 'storage.objects.list' denied on resource (or it may not exist)."
}

// gcsError is a GCS JSON API error body.
func gcsError(code int, reason, message string) googleError {
	return googleError{Error: googleErrorBody{Code: code, Message: message,
		Errors: []errorDetail{{Message: message, Domain: "global", Reason: reason}}}}
}

// invalidCredentials is GCS's answer to a bad or expired bearer token.
func invalidCredentials() googleError {
	return googleError{Error: googleErrorBody{Code: http.StatusUnauthorized, Message: "Invalid Credentials",
		Errors: []errorDetail{{Message: "Invalid Credentials", Domain: "global", Reason: "authError", LocationType: "header", Location: "Authorization"}}}}
}

// isPublic reports whether Public(bucket) was called.
func (s *Server) isPublic(bucket string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.public[bucket]
}

// isGranted reports whether Grant(bucket, principal) was called.
func (s *Server) isGranted(bucket, principal string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.grants[bucket][principal]
}

// applyFault applies the fault hook's Fault for r, if any. handled says
// the request is done (status is what it was answered, 0 for none);
// otherwise it goes on to the auth check (after a Stall alone).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request) (status int, handled bool) {
	s.mu.Lock()
	hook := s.fault
	s.mu.Unlock()
	if hook == nil {
		return 0, false
	}
	f := hook(r)
	if f.Stall > 0 && !s.stall(r, f.Stall) {
		return 0, true
	}
	if f.Reset {
		resetConnection(w)
		return 0, true
	}
	if f.Status != 0 {
		writeJSON(w, f.Status, gcsError(f.Status, faultReason(f.Status), fmt.Sprintf("Injected fault: %d %s.", f.Status, http.StatusText(f.Status))))
		return f.Status, true
	}
	return 0, false
}

// stall waits d, and reports false if the client gave up or the Server
// stopped first.
func (s *Server) stall(r *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.Context().Done():
		return false
	case <-s.done:
		return false
	}
}

// resetConnection closes the request's connection without an answer: with
// a TCP RST where it can, else by aborting the handler.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // the server closes the connection, unanswered
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

// faultReason is the GCS error reason for an injected status.
func faultReason(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return "rateLimitExceeded"
	case status == http.StatusUnauthorized:
		return "authError"
	case status == http.StatusForbidden:
		return "forbidden"
	case status == http.StatusNotFound:
		return "notFound"
	case status >= 500:
		return "backendError"
	}
	return "invalid"
}

// statusRecorder remembers the status the wrapped handler answered.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

// WriteHeader records the first final (non-1xx) status.
func (r *statusRecorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200.
func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer (Flush, ...).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
