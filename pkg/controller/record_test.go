package controller

import (
	"errors"
	"fmt"
	"testing"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
)

func TestRecordRoundTrip(t *testing.T) {
	r := record{managedBy: labelValue("gcsfuse-csi.github.io"), volume: "pvc-1", deletePolicy: DeletePolicyDelete, capacity: 1 << 40}
	got, ok := readRecord(r.labels())
	if !ok || got != r {
		t.Errorf("readRecord(labels()) = %+v, %v; want %+v", got, ok, r)
	}
	for k, v := range r.labels() {
		if !labelKeyRE.MatchString(k) || !labelValueRE.MatchString(v) {
			t.Errorf("label %s=%s is not a valid GCS label", k, v)
		}
	}
}

// TestReadRecordNeverGuessesDelete: anything short of an explicit
// "delete" reads as retain, and a missing driver label as no record.
func TestReadRecordNeverGuessesDelete(t *testing.T) {
	tests := []struct {
		m      map[string]string
		ok     bool
		policy string
	}{
		{nil, false, ""},
		{map[string]string{"team": "x"}, false, ""},
		{map[string]string{LabelManagedBy: ""}, false, ""},
		{map[string]string{LabelManagedBy: "d", LabelDeletePolicy: DeletePolicyDelete}, true, DeletePolicyDelete},
		{map[string]string{LabelManagedBy: "d", LabelDeletePolicy: "Delete"}, true, DeletePolicyRetain},
		{map[string]string{LabelManagedBy: "d", LabelDeletePolicy: "yes"}, true, DeletePolicyRetain},
		{map[string]string{LabelManagedBy: "d"}, true, DeletePolicyRetain},
		{map[string]string{LabelDeletePolicy: DeletePolicyDelete}, false, ""},
	}
	for _, tc := range tests {
		r, ok := readRecord(tc.m)
		if ok != tc.ok || r.deletePolicy != tc.policy {
			t.Errorf("readRecord(%v) = %+v, %v; want ok %v, policy %q", tc.m, r, ok, tc.ok, tc.policy)
		}
	}
	if r, _ := readRecord(map[string]string{LabelManagedBy: "d", LabelCapacity: "-5"}); r.capacity != 0 {
		t.Errorf("negative capacity read as %d", r.capacity)
	}
}

// TestOwnership: sameVolume decides idempotent retries from the record.
func TestSameVolume(t *testing.T) {
	p := New(Config{DriverName: "gcsfuse-csi.github.io"})
	want := record{managedBy: p.managed, volume: "pvc-1", deletePolicy: DeletePolicyRetain, capacity: 10}
	req := CreateRequest{Name: "pvc-1", RequiredBytes: 10}
	tests := []struct {
		name    string
		got     record
		req     CreateRequest
		wantErr error
		wantCap int64
	}{
		{"same", want, req, nil, 10},
		{"recorded more, no limit", record{managedBy: p.managed, volume: "pvc-1", deletePolicy: DeletePolicyRetain, capacity: 20}, req, nil, 20},
		{"recorded less", record{managedBy: p.managed, volume: "pvc-1", deletePolicy: DeletePolicyRetain, capacity: 5}, req, ErrAlreadyExists, 0},
		{"recorded over the limit", record{managedBy: p.managed, volume: "pvc-1", deletePolicy: DeletePolicyRetain, capacity: 20}, CreateRequest{Name: "pvc-1", RequiredBytes: 10, LimitBytes: 15}, ErrAlreadyExists, 0},
		{"other volume", record{managedBy: p.managed, volume: "pvc-2", deletePolicy: DeletePolicyRetain, capacity: 10}, req, ErrAlreadyExists, 0},
		{"other driver", record{managedBy: "other_example_com", volume: "pvc-1", deletePolicy: DeletePolicyRetain, capacity: 10}, req, ErrAlreadyExists, 0},
		{"other delete policy", record{managedBy: p.managed, volume: "pvc-1", deletePolicy: DeletePolicyDelete, capacity: 10}, req, ErrAlreadyExists, 0},
	}
	for _, tc := range tests {
		got, err := p.sameVolume("bucket", tc.got, tc.req, want)
		if !errors.Is(err, tc.wantErr) || (err == nil && got != tc.wantCap) {
			t.Errorf("%s: %d, %v; want %d, %v", tc.name, got, err, tc.wantCap, tc.wantErr)
		}
	}
}

func TestKindErrorKeepsCause(t *testing.T) {
	err := failf(ErrNotOurs, "bucket %q: %w", "b", gcs.ErrUnavailable)
	if !errors.Is(err, ErrNotOurs) || !errors.Is(err, gcs.ErrUnavailable) {
		t.Errorf("%v: lost its kind or its cause", err)
	}
	if got := err.Error(); got != fmt.Sprintf("bucket %q: %v", "b", gcs.ErrUnavailable) {
		t.Errorf("message %q", got)
	}
}
