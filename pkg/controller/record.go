package controller

import (
	"errors"
	"fmt"
	"strconv"
)

// Errors the provisioner ends with, for the CSI layer to map to codes.
// GCS errors keep the sentinels of package gcs (gcs.ErrNotFound, ...).
var (
	// ErrInvalid: a parameter or a request field is wrong (InvalidArgument).
	ErrInvalid = errors.New("invalid argument")
	// ErrAlreadyExists: the name is taken by something this volume cannot
	// be, or the volume exists with other settings (AlreadyExists).
	ErrAlreadyExists = errors.New("already exists")
	// ErrNotOurs: the bucket or prefix was not created by this driver, so
	// it is never deleted (FailedPrecondition).
	ErrNotOurs = errors.New("not created by this driver")
	// ErrOutOfRange: a capacity the volume cannot have (OutOfRange).
	ErrOutOfRange = errors.New("out of range")
	// ErrNoLabels: the GCS endpoint does not keep bucket labels, so the
	// driver could not record that it created the bucket
	// (FailedPrecondition).
	ErrNoLabels = errors.New("bucket labels not stored")
	// ErrVolumeNotFound: no such volume (NotFound).
	ErrVolumeNotFound = errors.New("volume not found")
)

// kindError is an error of a kind (one of the sentinels above) whose
// message does not repeat the kind's name.
type kindError struct {
	kind error
	err  error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// failf formats an error of kind; %w in format keeps a cause (a GCS
// error's sentinel) reachable with errors.Is.
func failf(kind error, format string, args ...any) error {
	return &kindError{kind: kind, err: fmt.Errorf(format, args...)}
}

// Keys of what the driver records on what it creates: the labels of a
// bucket-per-volume bucket, and the metadata of a prefix-per-volume
// placeholder object (and of the marker object, see MarkerObject). Label
// keys allow lower-case letters, digits, '_' and '-'; the "gcsfuse-csi_"
// prefix is reserved for them, so a StorageClass's own labels cannot
// pretend to be the driver's.
const (
	reservedPrefix = "gcsfuse-csi_"
	// LabelManagedBy holds the driver name (as a label value: '.' becomes
	// '_'). Without it, or with another driver's name, a bucket or prefix
	// is not the driver's, and it is never deleted.
	LabelManagedBy = reservedPrefix + "managed-by"
	// LabelVolume holds the volume (PersistentVolume) name the bucket or
	// prefix was created for: a retried CreateVolume of the same name is
	// idempotent, any other name is AlreadyExists.
	LabelVolume = reservedPrefix + "volume"
	// LabelDeletePolicy holds the StorageClass's deletePolicy: DeleteVolume
	// gets only the volume id, so this is where it learns what to do.
	LabelDeletePolicy = reservedPrefix + "delete-policy"
	// LabelCapacity holds the capacity in bytes the volume was created (or
	// last expanded) with. GCS has no quota: it is a record, not a limit.
	LabelCapacity = reservedPrefix + "capacity"
)

// MarkerObject is, with --bucket-label-marker, an empty object at the root
// of a bucket-per-volume bucket whose metadata repeats the bucket's labels.
// It exists only where the GCS endpoint does not keep bucket labels
// (fake-gcs-server), and it is trusted only for buckets with no labels at
// all.
const MarkerObject = ".gcsfuse-csi-volume"

// Delete policies (the StorageClass parameter deletePolicy).
const (
	DeletePolicyRetain = "retain"
	DeletePolicyDelete = "delete"
)

// record is what the driver writes on a volume's bucket or placeholder.
type record struct {
	managedBy    string // label value of the driver name
	volume       string // label value of the volume name
	deletePolicy string
	capacity     int64
}

func (r record) labels() map[string]string {
	return map[string]string{
		LabelManagedBy:    r.managedBy,
		LabelVolume:       r.volume,
		LabelDeletePolicy: r.deletePolicy,
		LabelCapacity:     strconv.FormatInt(r.capacity, 10),
	}
}

// readRecord reads a record from labels or metadata; ok is false without
// LabelManagedBy. A missing or unreadable capacity reads as 0 (unknown),
// and a missing delete policy as retain: what cannot be read is never
// taken as permission to delete.
func readRecord(m map[string]string) (r record, ok bool) {
	r.managedBy, ok = m[LabelManagedBy]
	if !ok || r.managedBy == "" {
		return record{}, false
	}
	r.volume = m[LabelVolume]
	r.deletePolicy = DeletePolicyRetain
	if m[LabelDeletePolicy] == DeletePolicyDelete {
		r.deletePolicy = DeletePolicyDelete
	}
	if n, err := strconv.ParseInt(m[LabelCapacity], 10, 64); err == nil && n >= 0 {
		r.capacity = n
	}
	return r, true
}
