package controller

import (
	"maps"
	"regexp"
	"slices"
	"strings"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// StorageClass parameters of the controller.
const (
	ParamBucketName   = "bucketName"
	ParamProjectID    = "projectID"
	ParamLocation     = "location"
	ParamStorageClass = "storageClass"
	ParamLabels       = "labels"
	ParamDeletePolicy = "deletePolicy"
)

// Parameters lists the controller's own StorageClass parameters.
var Parameters = []string{ParamBucketName, ParamDeletePolicy, ParamLabels, ParamLocation, ParamProjectID, ParamStorageClass}

// bucketOnly are the parameters of the bucket-per-volume layout.
var bucketOnly = []string{ParamProjectID, ParamLocation, ParamStorageClass, ParamLabels}

// notPassedThrough are volume attributes a StorageClass may not set: the
// controller decides the bucket and directory of the volume.
var notPassedThrough = map[string]string{
	mounter.AttrBucketName: "", // the controller's own parameter, with another meaning
	"onlyDir":              "the volume is its own bucket, or its own directory of bucketName; mount a subdirectory with a static PersistentVolume",
}

// internalPrefix marks parameters the external-provisioner adds itself
// (csi.storage.k8s.io/pv/name with --extra-create-metadata, ...); they are
// ignored, as the node ignores kubelet's.
const internalPrefix = "csi.storage.k8s.io/"

// Layout is how a StorageClass maps volumes onto GCS.
type Layout int

const (
	// LayoutBucket: each volume is a new bucket (volume id "bucket").
	LayoutBucket Layout = iota
	// LayoutPrefix: each volume is a directory of an existing bucket
	// (volume id "bucket/prefix"), mounted with --only-dir.
	LayoutPrefix
)

func (l Layout) String() string {
	if l == LayoutPrefix {
		return "prefix-per-volume"
	}
	return "bucket-per-volume"
}

// Params are validated StorageClass parameters.
type Params struct {
	Layout       Layout
	Bucket       string // LayoutPrefix: the existing bucket
	ProjectID    string // LayoutBucket: "" means the controller's --project-id
	Location     string
	StorageClass string
	Labels       map[string]string // LayoutBucket: the bucket's own labels
	DeletePolicy string
	// Attributes are node volume attributes (implicitDirs, uid, auth, ...)
	// for the volume_context of every volume of the class.
	Attributes map[string]string
}

var (
	projectRE      = regexp.MustCompile(`^([a-z][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	locationRE     = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{1,39}$`)
	labelKeyRE     = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,62}$`)
	labelValueRE   = regexp.MustCompile(`^[a-z0-9_-]{0,63}$`)
	storageClasses = []string{"STANDARD", "NEARLINE", "COLDLINE", "ARCHIVE"}
	// maxUserLabels leaves room for the driver's own among GCS's 64.
	maxUserLabels = 64 - len(record{}.labels())
)

// AllowedParameters lists every parameter a StorageClass may set: the
// controller's own and the node volume attributes it passes on.
func AllowedParameters() []string {
	names := slices.Clone(Parameters)
	for _, a := range mounter.AttributeNames() {
		if _, no := notPassedThrough[a]; !no {
			names = append(names, a)
		}
	}
	return names
}

// ParseParameters validates CreateVolumeRequest.parameters (the
// StorageClass parameters). Parameters are checked in sorted order and
// the first error names its parameter; an unknown one lists the allowed
// ones. Every error wraps ErrInvalid.
func ParseParameters(params map[string]string) (*Params, error) {
	p := &Params{DeletePolicy: DeletePolicyRetain, Attributes: map[string]string{}}
	if b, ok := params[ParamBucketName]; ok {
		p.Layout, p.Bucket = LayoutPrefix, b
		if _, err := mounter.NewVolume(b, "parameters."+ParamBucketName); err != nil {
			return nil, invalidf("%v", err)
		}
	}
	// Node attributes are checked against the volume's bucket, as the node
	// will check them.
	bucket := p.Bucket
	if bucket == "" {
		bucket = "new-bucket"
	}
	v, err := mounter.NewVolume(bucket, "bucket")
	if err != nil {
		return nil, invalidf("%v", err)
	}
	for _, k := range slices.Sorted(maps.Keys(params)) {
		val := params[k]
		field := "parameters." + k
		switch {
		case strings.HasPrefix(k, internalPrefix):
			continue
		case k == ParamBucketName:
			continue
		case p.Layout == LayoutPrefix && slices.Contains(bucketOnly, k):
			return nil, invalidf("%s: only for the bucket-per-volume layout; this StorageClass sets %s, so its volumes are directories of that existing bucket", field, ParamBucketName)
		case k == ParamProjectID:
			if !projectRE.MatchString(val) {
				return nil, invalidf("%s=%q: want a Google Cloud project ID (6-30 lower-case letters, digits and '-', starting with a letter)", field, val)
			}
			p.ProjectID = val
		case k == ParamLocation:
			if !locationRE.MatchString(val) {
				return nil, invalidf("%s=%q: want a GCS location such as US, EU, us-central1 or nam4", field, val)
			}
			p.Location = strings.ToUpper(val)
		case k == ParamStorageClass:
			sc := strings.ToUpper(val)
			if !slices.Contains(storageClasses, sc) {
				return nil, invalidf("%s=%q: want one of %s", field, val, strings.Join(storageClasses, ", "))
			}
			p.StorageClass = sc
		case k == ParamLabels:
			labels, err := parseLabels(field, val)
			if err != nil {
				return nil, err
			}
			p.Labels = labels
		case k == ParamDeletePolicy:
			switch strings.ToLower(val) {
			case DeletePolicyRetain, DeletePolicyDelete:
				p.DeletePolicy = strings.ToLower(val)
			default:
				return nil, invalidf("%s=%q: want %s (the default: the data stays when the volume is deleted) or %s (empty and remove the bucket or prefix)", field, val, DeletePolicyRetain, DeletePolicyDelete)
			}
		default:
			if reason, no := notPassedThrough[k]; no && reason != "" {
				return nil, invalidf("%s: not a StorageClass parameter: %s", field, reason)
			}
			if !slices.Contains(mounter.AttributeNames(), k) {
				return nil, invalidf("%s: unknown StorageClass parameter; allowed: %s", field, strings.Join(AllowedParameters(), ", "))
			}
			if err := v.SetAttribute(k, val); err != nil {
				// The node reads them from volume_context; here they are
				// the StorageClass's parameters.
				return nil, invalidf("%s", strings.ReplaceAll(err.Error(), "volume_context.", "parameters."))
			}
			p.Attributes[k] = val
		}
	}
	return p, nil
}

// parseLabels reads "key=value,key2=value2" with GCS's label rules.
func parseLabels(field, s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, kv := range strings.Split(s, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, _ := strings.Cut(kv, "=")
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case !labelKeyRE.MatchString(k):
			return nil, invalidf("%s: label key %q: want 1-63 lower-case letters, digits, '_' and '-', starting with a letter (format: key=value,key2=value2)", field, k)
		case strings.HasPrefix(k, reservedPrefix):
			return nil, invalidf("%s: label key %q: the prefix %q is reserved for the driver's own labels", field, k, reservedPrefix)
		case !labelValueRE.MatchString(v):
			return nil, invalidf("%s: label %s=%q: want at most 63 lower-case letters, digits, '_' and '-'", field, k, v)
		}
		if old, dup := labels[k]; dup && old != v {
			return nil, invalidf("%s: label key %q given twice", field, k)
		}
		labels[k] = v
	}
	if len(labels) > maxUserLabels {
		return nil, invalidf("%s: %d labels; at most %d (GCS allows 64 and the driver sets %d)", field, len(labels), maxUserLabels, 64-maxUserLabels)
	}
	return labels, nil
}

func invalidf(format string, args ...any) error { return failf(ErrInvalid, format, args...) }
