package controller

import (
	"errors"
	"strings"
	"testing"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// FuzzParseParameters: StorageClass parameters are untrusted input. Any of
// them either fails with ErrInvalid naming a parameter, or gives a layout
// whose volume_context the node accepts as it is.
func FuzzParseParameters(f *testing.F) {
	f.Add("projectID", "my-project", "labels", "a=b,c=d", "implicitDirs", "true")
	f.Add("bucketName", "shared-bucket", "deletePolicy", "delete", "mountOptions", "uid=1000,implicit-dirs")
	f.Add("bucketName", "b", "location", "eu", "x", "y")
	f.Add("labels", "gcsfuse-csi_managed-by=x", "storageClass", "archive", "onlyDir", "a")
	f.Add("csi.storage.k8s.io/pv/name", "pvc-1", "auth", "workloadIdentity", "googleServiceAccount", "a@b.iam.gserviceaccount.com")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2, k3, v3 string) {
		params := map[string]string{k1: v1, k2: v2, k3: v3}
		p, err := ParseParameters(params)
		if err != nil {
			if !errors.Is(err, ErrInvalid) || !strings.HasPrefix(err.Error(), "parameters.") {
				t.Fatalf("%v: error %q does not wrap ErrInvalid or name a parameter", params, err)
			}
			return
		}
		bucket := p.Bucket
		if p.Layout == LayoutBucket {
			bucket = BucketName("", "pvc-1")
		}
		v, err := mounter.NewVolume(bucket, "volume_id")
		if err != nil {
			t.Fatalf("%v: bucket %q: %v", params, bucket, err)
		}
		for k, val := range p.Attributes {
			if err := v.SetAttribute(k, val); err != nil {
				t.Fatalf("%v: the node refuses volume_context %s=%q: %v", params, k, val, err)
			}
		}
		for k := range p.Labels {
			if strings.HasPrefix(k, reservedPrefix) {
				t.Fatalf("%v: a StorageClass label %q uses the driver's prefix", params, k)
			}
		}
	})
}

// FuzzNames: any volume name (CreateVolumeRequest.name is the CO's) and
// any valid prefix give a valid, deterministic bucket name and a prefix
// that parses back from a volume id.
func FuzzNames(f *testing.F) {
	f.Add("", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f")
	f.Add("team-", "Sanity-Node-Full-64A2B3C4-"+strings.Repeat("a", 90))
	f.Add("go", "og")
	f.Add("", "..")
	f.Add("x", "a/b c\x00")
	f.Fuzz(func(t *testing.T, prefix, name string) {
		if ValidateBucketPrefix(prefix) != nil {
			return
		}
		b := BucketName(prefix, name)
		if _, err := mounter.NewVolume(b, "b"); err != nil || len(b) > 63 || !bucketAllowed(b) || !strings.HasPrefix(b, prefix) {
			t.Fatalf("BucketName(%q, %q) = %q: invalid (%v)", prefix, name, b, err)
		}
		if BucketName(prefix, name) != b {
			t.Fatalf("BucketName(%q, %q) not deterministic", prefix, name)
		}
		d := PrefixName(name)
		if gotB, gotD, ok := ParseVolumeID(b + "/" + d); !ok || gotB != b || gotD != d {
			t.Fatalf("PrefixName(%q) = %q: volume id %s/%s parses to %q, %q, %v", name, d, b, d, gotB, gotD, ok)
		}
		if v := labelValue(name); len(v) > 63 || !labelValueRE.MatchString(v) {
			t.Fatalf("labelValue(%q) = %q", name, v)
		}
	})
}
