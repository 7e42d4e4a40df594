package gcs

import (
	"errors"
	"fmt"
	"testing"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		in   error
		want error
	}{
		{storage.ErrBucketNotExist, ErrNotFound},
		{&googleapi.Error{Code: 404, Message: "no such bucket"}, ErrNotFound},
		{&googleapi.Error{Code: 403, Message: "forbidden"}, ErrPermissionDenied},
		{fmt.Errorf("wrapped: %w", &googleapi.Error{Code: 401}), ErrUnauthenticated},
		{&googleapi.Error{Code: 429}, ErrExhausted},
	}
	for _, tc := range tests {
		if got := Classify("list gs://b/", tc.in); !errors.Is(got, tc.want) {
			t.Errorf("Classify(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	other := errors.New("connection refused")
	got := Classify("list gs://b/", other)
	for _, s := range []error{ErrNotFound, ErrPermissionDenied, ErrUnauthenticated, ErrExhausted} {
		if errors.Is(got, s) {
			t.Errorf("a network error was classified as %v", s)
		}
	}
	if !errors.Is(got, other) {
		t.Errorf("the cause was lost: %v", got)
	}
}
