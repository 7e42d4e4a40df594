// Package gcs holds the driver's own calls to Cloud Storage.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/storage"
	"golang.org/x/oauth2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// Errors a check can end with, for the driver to map to gRPC codes.
var (
	ErrNotFound         = errors.New("not found")
	ErrPermissionDenied = errors.New("permission denied")
	ErrUnauthenticated  = errors.New("unauthenticated")
	ErrExhausted        = errors.New("rate limited")
	// ErrUnavailable: GCS answered 5xx or 408, or could not be reached
	// (connection refused or reset, DNS, EOF): transient, worth a retry.
	ErrUnavailable = errors.New("unavailable")
)

// Bounds of one Check. The storage client retries 408, 429, 5xx and
// connection errors by itself, with backoff (random pauses of up to 1 s,
// 2 s, 4 s ... 30 s) and no limit but the context: unbounded, a flapping GCS
// would hold the CSI call (and its volume lock) for as long as kubelet
// waits. A check is a single list of one object, and kubelet retries a
// failed stage or publish with its own backoff, so a few attempts in a
// short time are enough.
const (
	// DefaultTimeout bounds one Check, token fetch included, unless the
	// request's own deadline is nearer.
	DefaultTimeout = 15 * time.Second
	// DefaultAttempts bounds the GCS requests of one Check (the storage
	// client's backoff waits up to 1 s, then up to 2 s, between them).
	DefaultAttempts = 3
)

// Checker verifies that a bucket can be listed before a mount is made for
// it: gcsfuse itself mounts a missing or forbidden bucket "successfully" and
// only fails on the first read.
type Checker struct {
	Endpoint string        // custom JSON API endpoint, "" for Google's
	Timeout  time.Duration // bound on one Check; 0: DefaultTimeout
	Attempts int           // GCS requests per Check at most; 0: DefaultAttempts

	mu      sync.Mutex
	clients map[auth.Mode]*storage.Client // node and anonymous clients, kept
}

// Check lists at most one object of bucket under dir with the credentials
// c (nil: the node's). It returns within Timeout, and before ctx's deadline:
// with 10% of the time left to the deadline to spare, so that the caller
// gets this error, which says what happened, rather than its own bare
// "deadline exceeded".
func (c *Checker) Check(ctx context.Context, bucket, dir string, creds *auth.Credentials) error {
	parent := ctx
	ctx, cancel, budget := c.bound(ctx)
	defer cancel()
	start := time.Now()
	client, done, err := c.client(ctx, creds)
	if err != nil {
		return err
	}
	defer done()
	q := &storage.Query{Prefix: dir}
	if dir != "" {
		q.Prefix = dir + "/"
	}
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	it := client.Bucket(bucket).Retryer(storage.WithMaxAttempts(attempts)).Objects(ctx, q)
	it.PageInfo().MaxSize = 1
	_, err = it.Next()
	if err == nil || errors.Is(err, iterator.Done) {
		return nil
	}
	err = Classify(fmt.Sprintf("list gs://%s/%s as %s", bucket, q.Prefix, creds), err)
	took := time.Since(start).Round(10 * time.Millisecond)
	switch {
	case errors.Is(err, context.DeadlineExceeded) && parent.Err() == nil:
		return fmt.Errorf("%w (the driver gives a bucket check %s; it took %s)", err, budget.Round(100*time.Millisecond), took)
	case errors.Is(err, ErrUnavailable), errors.Is(err, ErrExhausted):
		return fmt.Errorf("%w (a bucket check makes at most %d attempts in %s; this one gave up after %s)", err, attempts, budget.Round(100*time.Millisecond), took)
	}
	return err
}

// bound returns ctx limited to the Checker's timeout, or to 90% of the time
// left to ctx's deadline if that is less, and the limit.
func (c *Checker) bound(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	limit := c.Timeout
	if limit <= 0 {
		limit = DefaultTimeout
	}
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left-left/10 < limit {
			limit = max(left-left/10, 0)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, limit)
	return ctx, cancel, limit
}

// client returns a client for creds and a func to call when done with it.
// Node and anonymous clients are shared; a volume's own credentials get a
// client of their own, after one token fetch that says what is wrong with
// them if anything is.
func (c *Checker) client(ctx context.Context, creds *auth.Credentials) (*storage.Client, func(), error) {
	opts := []option.ClientOption{}
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(c.Endpoint))
	}
	mode := auth.ModeNode
	if creds != nil {
		mode = creds.Mode
	}
	switch mode {
	case auth.ModeNode, auth.ModeAnonymous:
		c.mu.Lock()
		defer c.mu.Unlock()
		if cl := c.clients[mode]; cl != nil {
			return cl, func() {}, nil
		}
		if mode == auth.ModeAnonymous {
			opts = append(opts, option.WithoutAuthentication())
		}
		cl, err := storage.NewClient(context.WithoutCancel(ctx), opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("create GCS client: %w", err)
		}
		if c.clients == nil {
			c.clients = map[auth.Mode]*storage.Client{}
		}
		c.clients[mode] = cl
		return cl, func() {}, nil
	}
	ts, err := creds.TokenSource(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("%v: %w", err, ErrPermissionDenied)
	}
	tok, err := auth.Fetch(ctx, creds, ts)
	if err != nil {
		if errors.Is(err, auth.ErrRejected) {
			return nil, nil, fmt.Errorf("%v: %w", err, ErrPermissionDenied)
		}
		return nil, nil, err
	}
	opts = append(opts, option.WithTokenSource(oauth2.ReuseTokenSource(tok, ts)))
	cl, err := storage.NewClient(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, nil, fmt.Errorf("create GCS client: %w", err)
	}
	return cl, func() { cl.Close() }, nil
}

// Classify wraps a GCS error with the sentinel matching its HTTP status,
// or ErrUnavailable for a GCS that could not be reached. A context error
// (and anything unknown) is kept as the cause.
func Classify(what string, err error) error {
	var gerr *googleapi.Error
	if errors.Is(err, storage.ErrBucketNotExist) || errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("%s: the bucket does not exist: %w", what, ErrNotFound)
	}
	if errors.As(err, &gerr) {
		switch code := gerr.Code; {
		case code == http.StatusNotFound:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrNotFound)
		case code == http.StatusForbidden:
			return fmt.Errorf("%s: the credentials may not list this bucket (%v); grant it roles/storage.objectViewer (read-only) or roles/storage.objectUser on the bucket, or give the volume other credentials: %w", what, gerr.Message, ErrPermissionDenied)
		case code == http.StatusUnauthorized:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrUnauthenticated)
		case code == http.StatusTooManyRequests:
			return fmt.Errorf("%s: GCS is rate limiting requests (%d: %v); the request is retried with backoff, and if it keeps failing check the project's quotas and request rate: %w", what, code, statusMessage(gerr), ErrExhausted)
		case code == http.StatusRequestTimeout || code >= 500 && code != http.StatusNotImplemented:
			return fmt.Errorf("%s: GCS answered %d (%v): a server-side error, usually transient, and the request is retried with backoff: %w", what, code, statusMessage(gerr), ErrUnavailable)
		default:
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if connectionError(err) {
		return fmt.Errorf("%s: GCS could not be reached (%v); the request is retried with backoff: %w", what, err, ErrUnavailable)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: GCS did not answer in time: %w", what, err)
	}
	if errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s: canceled: %w", what, err)
	}
	if storage.ShouldRetry(err) {
		// Anything else the storage client itself deems transient.
		return fmt.Errorf("%s: GCS could not be reached (%v); the request is retried with backoff: %w", what, err, ErrUnavailable)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// statusMessage is GCS's message for gerr, or the status text.
func statusMessage(gerr *googleapi.Error) string {
	if gerr.Message != "" {
		return gerr.Message
	}
	return http.StatusText(gerr.Code)
}

// connectionError reports whether err says a request got no HTTP answer at
// all for a reason other than its context: refused, reset or closed
// connections, DNS failures, or a response cut short.
func connectionError(err error) bool {
	var (
		opErr  *net.OpError
		dnsErr *net.DNSError
	)
	switch {
	case errors.As(err, &opErr):
		// A dial or read cut short by the context is the context's doing.
		return !opErr.Timeout() && !errors.Is(opErr, context.DeadlineExceeded) && !errors.Is(opErr, context.Canceled)
	case errors.As(err, &dnsErr):
		return !dnsErr.IsTimeout
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNABORTED), errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return true
	}
	return false
}
