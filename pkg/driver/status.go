package driver

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// toStatus turns an error from the mounter into a gRPC status whose code
// says who must act and whose message says what failed.
func toStatus(what string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code := codes.Internal
	switch {
	case errors.Is(err, mounter.ErrConflict):
		code = codes.AlreadyExists
	case errors.Is(err, mounter.ErrNotOurs), errors.Is(err, mounter.ErrNotMounted):
		code = codes.FailedPrecondition
	case errors.Is(err, mounter.ErrDaemonUnavailable), errors.Is(err, mounter.ErrBackoff):
		code = codes.Unavailable
	case errors.Is(err, gcs.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, gcs.ErrPermissionDenied):
		code = codes.PermissionDenied
	case errors.Is(err, gcs.ErrUnauthenticated):
		code = codes.Unauthenticated
	case errors.Is(err, gcs.ErrExhausted):
		// GCS's 429 (rate limit or quota), as google.rpc.Code maps it.
		// kubelet retries it like Unavailable: neither is a final error.
		code = codes.ResourceExhausted
	case errors.Is(err, gcs.ErrUnavailable):
		// 5xx or an unreachable GCS: transient, kubelet retries.
		code = codes.Unavailable
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, mounter.ErrTimeout):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Errorf(code, "%s: %v", what, err)
}
