package gcs

import (
	"context"
	"errors"
	"fmt"

	"cloud.google.com/go/storage"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// NewClient returns a Cloud Storage client for creds (nil: the node's
// Application Default Credentials) at endpoint ("" for Google's), with at
// most attempts requests per call (0: the storage client's default, which
// retries until the context ends).
//
// One token is fetched first, so that credentials the token endpoint
// rejects fail here, wrapped with ErrPermissionDenied and a message that
// names the identity, rather than later as a bare 401 from GCS; node
// credentials that cannot be found are ErrUnauthenticated.
//
// The caller closes the client.
func NewClient(ctx context.Context, endpoint string, creds *auth.Credentials, attempts int) (*storage.Client, error) {
	opts := []option.ClientOption{}
	if endpoint != "" {
		opts = append(opts, option.WithEndpoint(endpoint))
	}
	mode := auth.ModeNode
	if creds != nil {
		mode = creds.Mode
	}
	switch mode {
	case auth.ModeAnonymous:
		opts = append(opts, option.WithoutAuthentication())
	default:
		ts, err := creds.TokenSource(ctx)
		if err != nil {
			return nil, fmt.Errorf("%v: %w", err, ErrPermissionDenied)
		}
		tok, err := auth.Fetch(ctx, creds, ts)
		switch {
		case errors.Is(err, auth.ErrRejected):
			return nil, fmt.Errorf("%v: %w", err, ErrPermissionDenied)
		case err != nil && mode == auth.ModeNode && ctx.Err() == nil:
			// No Application Default Credentials here, or the metadata
			// server did not answer.
			return nil, fmt.Errorf("%v: %w", err, ErrUnauthenticated)
		case err != nil:
			return nil, err
		}
		opts = append(opts, option.WithTokenSource(oauth2.ReuseTokenSource(tok, ts)))
	}
	// The client outlives this call's context: it is kept for later calls.
	cl, err := storage.NewClient(context.WithoutCancel(ctx), opts...)
	if err != nil {
		return nil, fmt.Errorf("create GCS client: %w", err)
	}
	if attempts > 0 {
		cl.SetRetry(storage.WithMaxAttempts(attempts))
	}
	return cl, nil
}
