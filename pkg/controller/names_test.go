package controller

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// validGCSBucket is GCS's rule for bucket names without dots, plus its
// reserved words.
var validGCSBucket = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{1,61}[a-z0-9]$`)

func checkBucketName(t *testing.T, prefix, name, b string) {
	t.Helper()
	if !validGCSBucket.MatchString(b) || strings.HasPrefix(b, "goog") || strings.Contains(b, "google") || strings.Contains(b, "g00gle") {
		t.Errorf("BucketName(%q, %q) = %q: not a valid GCS bucket name", prefix, name, b)
	}
	if _, err := mounter.NewVolume(b, "b"); err != nil {
		t.Errorf("BucketName(%q, %q) = %q: the node would refuse it: %v", prefix, name, b, err)
	}
	if !strings.HasPrefix(b, prefix) {
		t.Errorf("BucketName(%q, %q) = %q: lost the prefix", prefix, name, b)
	}
}

func TestBucketName(t *testing.T) {
	tests := []struct{ prefix, name, want string }{
		// The external-provisioner's names are kept as they are.
		{"", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"},
		{"team-a-", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f", "team-a-pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"},
		// Anything else gets cleaned, cut and a hash of the original.
		{"", "Sanity-Node-Full-64A2B3C4", "sanity-node-full-64a2b3c4-" + hashOf("Sanity-Node-Full-64A2B3C4")},
		{"p-", "a_b.c", "p-a-b-c-" + hashOf("a_b.c")},
		{"", "google-drive", "gxogle-drive-" + hashOf("google-drive")},
		{"", "x", "x-" + hashOf("x")}, // too short alone
		{"", "---", hashOf("---")},
		// prefix and name would start with "goog" together.
		{"go", "og", "go" + hashOf("og")},
	}
	for _, tc := range tests {
		got := BucketName(tc.prefix, tc.name)
		if got != tc.want {
			t.Errorf("BucketName(%q, %q) = %q, want %q", tc.prefix, tc.name, got, tc.want)
		}
		checkBucketName(t, tc.prefix, tc.name, got)
	}
}

// TestBucketNameProperties: for any name and any valid prefix, the bucket
// name is valid, deterministic and differs for names that differ.
func TestBucketNameProperties(t *testing.T) {
	names := []string{
		"pvc-1", "PVC-1", "pvc_1", "pvc.1", "pvc 1", strings.Repeat("a", 63), strings.Repeat("a", 64),
		strings.Repeat("A", 128), "sanity-controller-create-maxlen-0123ABCD-4567EF89" + strings.Repeat("a", 79),
		"Ünïcödé", "goog", "g00gle", "-lead", "trail-", "", "a", "日本",
	}
	for _, prefix := range []string{"", "a", "k8s-", "cluster-1-", strings.Repeat("p", MaxBucketPrefix)} {
		seen := map[string]string{}
		for _, n := range names {
			b := BucketName(prefix, n)
			checkBucketName(t, prefix, n, b)
			if again := BucketName(prefix, n); again != b {
				t.Errorf("BucketName(%q, %q) not deterministic: %q then %q", prefix, n, b, again)
			}
			if other, dup := seen[b]; dup {
				t.Errorf("BucketName(%q, ...) gives %q for both %q and %q", prefix, b, other, n)
			}
			seen[b] = n
		}
	}
}

func TestValidateBucketPrefix(t *testing.T) {
	for _, ok := range []string{"", "a", "k8s-", "cluster-1-", strings.Repeat("p", MaxBucketPrefix)} {
		if err := ValidateBucketPrefix(ok); err != nil {
			t.Errorf("ValidateBucketPrefix(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"-a", "A", "a_b", "a.b", "goog-", "my-google-", "x-g00gle", strings.Repeat("p", MaxBucketPrefix+1), "a b"} {
		if err := ValidateBucketPrefix(bad); err == nil {
			t.Errorf("ValidateBucketPrefix(%q): accepted", bad)
		}
	}
}

func TestPrefixName(t *testing.T) {
	tests := []struct{ name, want string }{
		{"pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"},
		{"Sanity-Volume_1.x", "Sanity-Volume_1.x"},
		{"a/b", "a-b-" + hashOf("a/b")},
		{"..", "vol-" + hashOf("..")},
		{".hidden", "hidden-" + hashOf(".hidden")},
		{strings.Repeat("a", 201), strings.Repeat("a", 189) + "-" + hashOf(strings.Repeat("a", 201))},
	}
	for _, tc := range tests {
		got := PrefixName(tc.name)
		if got != tc.want {
			t.Errorf("PrefixName(%q) = %q, want %q", tc.name, got, tc.want)
		}
		// The node must accept bucket/prefix as a volume handle.
		if _, dir, ok := ParseVolumeID("bucket/" + got); !ok || dir != got {
			t.Errorf("PrefixName(%q) = %q: volume id bucket/%s does not parse back (%q, %v)", tc.name, got, got, dir, ok)
		}
	}
}

func TestLabelValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"gcsfuse-csi.github.io", "gcsfuse-csi_github_io"},
		{"pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"},
		{"Sanity-1", "sanity-1"},
		{strings.Repeat("a", 64), strings.Repeat("a", 52) + "-" + hashOf(strings.Repeat("a", 64))},
	}
	label := regexp.MustCompile(`^[a-z0-9_-]{0,63}$`)
	for _, tc := range tests {
		got := labelValue(tc.in)
		if got != tc.want {
			t.Errorf("labelValue(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !label.MatchString(got) {
			t.Errorf("labelValue(%q) = %q: not a GCS label value", tc.in, got)
		}
	}
}

func TestParseVolumeID(t *testing.T) {
	tests := []struct {
		id, bucket, dir string
		ok              bool
	}{
		{"b-1", "b-1", "", true},
		{"b-1/pvc-1", "b-1", "pvc-1", true},
		{"b-1/a/b/", "b-1", "a/b", true},
		{"fake-vol-id", "fake-vol-id", "", true},
		{"B", "", "", false},
		{"b-1/../x", "", "", false},
		{"", "", "", false},
	}
	for _, tc := range tests {
		b, d, ok := ParseVolumeID(tc.id)
		if b != tc.bucket || d != tc.dir || ok != tc.ok {
			t.Errorf("ParseVolumeID(%q) = %q, %q, %v; want %q, %q, %v", tc.id, b, d, ok, tc.bucket, tc.dir, tc.ok)
		}
	}
}

func ExampleBucketName() {
	fmt.Println(BucketName("", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"))
	fmt.Println(BucketName("prod-", "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"))
	// Output:
	// pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f
	// prod-pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f
}
