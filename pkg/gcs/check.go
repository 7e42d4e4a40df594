// Package gcs holds the driver's own calls to Cloud Storage.
package gcs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"
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
	clients map[bool]*storage.Client // by anonymous
}

// Check lists at most one object of bucket under dir.
func (c *Checker) Check(ctx context.Context, bucket, dir string, anonymous bool) error {
	client, err := c.client(ctx, anonymous)
	if err != nil {
		return err
	}
	q := &storage.Query{Prefix: dir}
	if dir != "" {
		q.Prefix = dir + "/"
	}
	it := client.Bucket(bucket).Objects(ctx, q)
	it.PageInfo().MaxSize = 1
	if _, err := it.Next(); err != nil && !errors.Is(err, iterator.Done) {
		return Classify(fmt.Sprintf("list gs://%s/%s", bucket, q.Prefix), err)
	}
	return nil
}

func (c *Checker) client(ctx context.Context, anonymous bool) (*storage.Client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl := c.clients[anonymous]; cl != nil {
		return cl, nil
	}
	var opts []option.ClientOption
	if c.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(c.Endpoint))
	}
	if anonymous {
		opts = append(opts, option.WithoutAuthentication())
	}
	cl, err := storage.NewClient(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, fmt.Errorf("create GCS client: %w", err)
	}
	if c.clients == nil {
		c.clients = map[bool]*storage.Client{}
	}
	c.clients[anonymous] = cl
	return cl, nil
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
			return fmt.Errorf("%s: the credentials in use may not list this bucket (%v): %w", what, gerr.Message, ErrPermissionDenied)
		case http.StatusUnauthorized:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrUnauthenticated)
		case http.StatusTooManyRequests:
			return fmt.Errorf("%s: %v: %w", what, gerr.Message, ErrExhausted)
		}
	}
	return fmt.Errorf("%s: %w", what, err)
}
