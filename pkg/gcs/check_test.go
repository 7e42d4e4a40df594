package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

var sentinels = []error{ErrNotFound, ErrPermissionDenied, ErrUnauthenticated, ErrExhausted, ErrUnavailable}

func TestClassify(t *testing.T) {
	reset := &url.Error{Op: "Get", URL: "http://gcs/storage/v1/b/b/o", Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	refused := &url.Error{Op: "Get", URL: "http://gcs/storage/v1/b/b/o", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	deadline := &url.Error{Op: "Get", URL: "http://gcs/storage/v1/b/b/o", Err: context.DeadlineExceeded}
	tests := []struct {
		name string
		in   error
		want error // a sentinel, or context.DeadlineExceeded / context.Canceled
	}{
		{"bucket not exist", storage.ErrBucketNotExist, ErrNotFound},
		{"404", &googleapi.Error{Code: 404, Message: "no such bucket"}, ErrNotFound},
		{"403", &googleapi.Error{Code: 403, Message: "forbidden"}, ErrPermissionDenied},
		{"401 wrapped", fmt.Errorf("wrapped: %w", &googleapi.Error{Code: 401}), ErrUnauthenticated},
		{"429", &googleapi.Error{Code: 429}, ErrExhausted},
		{"429 after retries", fmt.Errorf("storage: retry failed after 3 attempts; last error: %w", &googleapi.Error{Code: 429}), ErrExhausted},
		{"408", &googleapi.Error{Code: 408}, ErrUnavailable},
		{"500", &googleapi.Error{Code: 500, Message: "backendError"}, ErrUnavailable},
		{"502", &googleapi.Error{Code: 502}, ErrUnavailable},
		{"503 after retries", fmt.Errorf("storage: retry failed after 3 attempts; last error: %w", &googleapi.Error{Code: 503}), ErrUnavailable},
		{"504", &googleapi.Error{Code: 504}, ErrUnavailable},
		// A 503 storm that outlasted the deadline: GCS's answer says more
		// than the deadline does.
		{"503 then deadline", ctxAndErr{context.DeadlineExceeded, &googleapi.Error{Code: 503}}, ErrUnavailable},
		{"connection reset", reset, ErrUnavailable},
		{"connection reset after retries", fmt.Errorf("storage: retry failed after 3 attempts; last error: %w", reset), ErrUnavailable},
		{"reset then deadline", ctxAndErr{context.DeadlineExceeded, reset}, ErrUnavailable},
		{"connection refused", refused, ErrUnavailable},
		{"EOF", &url.Error{Op: "Get", URL: "http://gcs/", Err: io.EOF}, ErrUnavailable},
		{"unexpected EOF", fmt.Errorf("read body: %w", io.ErrUnexpectedEOF), ErrUnavailable},
		{"dns", &url.Error{Op: "Get", URL: "http://gcs/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "gcs", IsNotFound: true}}}, ErrUnavailable},
		{"deadline", deadline, context.DeadlineExceeded},
		{"deadline after retries", fmt.Errorf("storage: retry failed after 2 attempts; last error: %w", deadline), context.DeadlineExceeded},
		{"dial cut by deadline", &url.Error{Op: "Get", URL: "http://gcs/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}}, context.DeadlineExceeded},
		{"canceled", &url.Error{Op: "Get", URL: "http://gcs/", Err: context.Canceled}, context.Canceled},
	}
	for _, tc := range tests {
		got := Classify("list gs://b/", tc.in)
		if !errors.Is(got, tc.want) {
			t.Errorf("%s: Classify(%v) = %v, want %v", tc.name, tc.in, got, tc.want)
		}
		for _, s := range sentinels {
			if s != tc.want && errors.Is(got, s) {
				t.Errorf("%s: Classify(%v) = %v, also %v", tc.name, tc.in, got, s)
			}
		}
		if !strings.HasPrefix(got.Error(), "list gs://b/: ") {
			t.Errorf("%s: %q does not start with what failed", tc.name, got)
		}
	}
	// 501 is not transient; neither is an error nobody knows.
	for _, other := range []error{&googleapi.Error{Code: 501}, errors.New("unexpected response")} {
		got := Classify("list gs://b/", other)
		for _, s := range append(sentinels, context.DeadlineExceeded) {
			if errors.Is(got, s) {
				t.Errorf("Classify(%v) = %v: classified as %v", other, got, s)
			}
		}
		if !errors.Is(got, other) {
			t.Errorf("the cause was lost: %v", got)
		}
	}
}

// ctxAndErr is what the storage client returns when its context ends while
// it waits to retry: both the context's error and the last one.
type ctxAndErr struct{ ctx, last error }

func (e ctxAndErr) Error() string {
	return fmt.Sprintf("retry failed with %v; last error: %v", e.ctx, e.last)
}
func (e ctxAndErr) Unwrap() error        { return e.last }
func (e ctxAndErr) Is(target error) bool { return e.ctx == target || e.last == target }

// timeoutErr is how package net reports a dial its context cut short.
type timeoutErr struct{}

func (timeoutErr) Error() string        { return "i/o timeout" }
func (timeoutErr) Timeout() bool        { return true }
func (timeoutErr) Is(target error) bool { return target == context.DeadlineExceeded }

// fault is what faultServer does to a request.
type fault int

const (
	faultNone fault = iota
	faultStatus
	faultReset
	faultStall
)

// faultServer is a GCS JSON API that lists an empty bucket, or fails every
// request as told.
type faultServer struct {
	*httptest.Server
	mu       sync.Mutex
	kind     fault
	status   int
	requests int
}

func newFaultServer(t *testing.T) *faultServer {
	f := &faultServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

func (f *faultServer) set(kind fault, status int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kind, f.status, f.requests = kind, status, 0
}

func (f *faultServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

func (f *faultServer) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	kind, status := f.kind, f.status
	f.requests++
	f.mu.Unlock()
	switch kind {
	case faultStatus:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":"Injected fault: %d.","errors":[{"message":"Injected fault.","domain":"global","reason":"backendError"}]}}`, status, status)
	case faultReset:
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	case faultStall:
		<-r.Context().Done()
	default:
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"kind":"storage#objects"}`)
	}
}

var anonymous = &auth.Credentials{Mode: auth.ModeAnonymous}

// TestCheckFaults runs the real storage client against a GCS that fails
// every request: each fault is classified, retried only as far as the
// Checker allows, and forgotten once cleared.
func TestCheckFaults(t *testing.T) {
	tests := []struct {
		name     string
		kind     fault
		status   int
		want     error
		requests int
		msg      string
		deadline time.Duration // the caller's
	}{
		// DefaultAttempts take at most 3 s of backoff: 5 s is enough.
		{"403", faultStatus, 403, ErrPermissionDenied, 1, "may not list", 5 * time.Second},
		{"404", faultStatus, 404, ErrNotFound, 1, "does not exist", 5 * time.Second},
		{"429", faultStatus, 429, ErrExhausted, DefaultAttempts, "rate limiting", 5 * time.Second},
		{"500", faultStatus, 500, ErrUnavailable, DefaultAttempts, "GCS answered 500", 5 * time.Second},
		{"503", faultStatus, 503, ErrUnavailable, DefaultAttempts, "GCS answered 503", 5 * time.Second},
		{"reset", faultReset, 0, ErrUnavailable, DefaultAttempts, "could not be reached", 5 * time.Second},
		{"stall", faultStall, 0, context.DeadlineExceeded, 1, "did not answer", time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFaultServer(t)
			c := &Checker{Endpoint: srv.URL + "/storage/v1/"}
			srv.set(tc.kind, tc.status)
			deadline := tc.deadline // shorter than DefaultTimeout
			ctx, cancel := context.WithTimeout(context.Background(), deadline)
			defer cancel()
			start := time.Now()
			err := c.Check(ctx, "bkt", "", anonymous)
			took := time.Since(start)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Check = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), "gs://bkt/") || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q does not name the bucket and say %q", err, tc.msg)
			}
			if took >= deadline {
				t.Errorf("Check took %s, past the caller's deadline of %s", took, deadline)
			}
			if n := srv.count(); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
			srv.set(faultNone, 0)
			if err := c.Check(context.Background(), "bkt", "", anonymous); err != nil {
				t.Errorf("Check after the fault was cleared: %v", err)
			}
			t.Logf("%s: %v in %s", tc.name, err, took.Round(time.Millisecond))
		})
	}
}

// TestCheckBounds: without a caller's deadline the Checker's own Timeout
// ends a stall; a 503 or reset storm cut short by it is still Unavailable.
func TestCheckBounds(t *testing.T) {
	tests := []struct {
		name   string
		kind   fault
		status int
		want   error
		msg    string
	}{
		{"stall", faultStall, 0, context.DeadlineExceeded, "gives a bucket check 700ms"},
		{"503", faultStatus, 503, ErrUnavailable, "GCS answered 503"},
		{"reset", faultReset, 0, ErrUnavailable, "connection reset"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFaultServer(t)
			c := &Checker{Endpoint: srv.URL + "/storage/v1/", Timeout: 700 * time.Millisecond, Attempts: 100}
			srv.set(tc.kind, tc.status)
			start := time.Now()
			err := c.Check(context.Background(), "bkt", "dir", anonymous)
			took := time.Since(start)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) || !strings.Contains(err.Error(), "gs://bkt/dir/") {
				t.Errorf("Check = %v, want %v saying %q", err, tc.want, tc.msg)
			}
			if took > 700*time.Millisecond+300*time.Millisecond {
				t.Errorf("Check took %s, want about its Timeout of 700ms", took)
			}
		})
	}
}

// A caller that gives up (kubelet's context canceled) ends the check at
// once, with Canceled.
func TestCheckCanceled(t *testing.T) {
	srv := newFaultServer(t)
	srv.set(faultStall, 0)
	c := &Checker{Endpoint: srv.URL + "/storage/v1/"}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	err := c.Check(ctx, "bkt", "", anonymous)
	if !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Errorf("Check = %v after %s, want Canceled after about 200ms", err, time.Since(start))
	}
}

func TestBound(t *testing.T) {
	c := &Checker{}
	_, cancel, limit := c.bound(context.Background())
	cancel()
	if limit != DefaultTimeout {
		t.Errorf("no deadline: limit %s, want %s", limit, DefaultTimeout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, cancel2, limit := c.bound(ctx)
	cancel2()
	if limit > 9*time.Second || limit < 8*time.Second {
		t.Errorf("10s deadline: limit %s, want 9s (10%% kept to answer)", limit)
	}
	ctx, cancel3 := context.WithTimeout(context.Background(), time.Hour)
	defer cancel3()
	_, cancel4, limit := (&Checker{Timeout: time.Second}).bound(ctx)
	cancel4()
	if limit != time.Second {
		t.Errorf("1h deadline, Timeout 1s: limit %s, want 1s", limit)
	}
}
