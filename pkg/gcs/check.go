// Package gcs holds the driver's own calls to Cloud Storage.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

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
)

// Checker verifies that a bucket can be listed before a mount is made for
// it: gcsfuse itself mounts a missing or forbidden bucket "successfully" and
// only fails on the first read.
type Checker struct {
	Endpoint string // custom JSON API endpoint, "" for Google's

	mu      sync.Mutex
	clients map[auth.Mode]*storage.Client // node and anonymous clients, kept
}

// Check lists at most one object of bucket under dir with the credentials
// c (nil: the node's).
func (c *Checker) Check(ctx context.Context, bucket, dir string, creds *auth.Credentials) error {
	client, done, err := c.client(ctx, creds)
	if err != nil {
		return err
	}
	defer done()
	q := &storage.Query{Prefix: dir}
	if dir != "" {
		q.Prefix = dir + "/"
	}
	it := client.Bucket(bucket).Objects(ctx, q)
	it.PageInfo().MaxSize = 1
	if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
		return Classify(fmt.Sprintf("list gs://%s/%s as %s", bucket, q.Prefix, creds), err)
	}
	return nil
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

// Classify wraps a GCS error with the sentinel matching its HTTP status.
func Classify(what string, err error) error {
	var gerr *googleapi.Error
	if errors.Is(err, storage.ErrBucketNotExist) || errors.Is(err, storage.ErrObjectNotExist) {
		return fmt.Errorf("%s: the bucket does not exist: %w", what, ErrNotFound)
	}
	if errors.As(err, &gerr) {
		switch gerr.Code {
		case http.StatusNotFound:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrNotFound)
		case http.StatusForbidden:
			return fmt.Errorf("%s: the credentials may not list this bucket (%v); grant it roles/storage.objectViewer (read-only) or roles/storage.objectUser on the bucket, or give the volume other credentials: %w", what, gerr.Message, ErrPermissionDenied)
		case http.StatusUnauthorized:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrUnauthenticated)
		case http.StatusTooManyRequests:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrExhausted)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
