package controller

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseParameters(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]string
		want   Params
	}{
		{"none: bucket layout, retain", nil, Params{Layout: LayoutBucket, DeletePolicy: DeletePolicyRetain, Attributes: map[string]string{}}},
		{
			"bucket layout, everything",
			map[string]string{
				"projectID": "my-project-1", "location": "us-central1", "storageClass": "nearline",
				"labels": "team=storage, env=prod", "deletePolicy": "Delete",
				"implicitDirs": "true", "uid": "1000", "auth": "workloadIdentity",
				// added by the external-provisioner: ignored
				"csi.storage.k8s.io/pv/name": "pvc-1", "csi.storage.k8s.io/pvc/namespace": "ns",
			},
			Params{
				Layout: LayoutBucket, ProjectID: "my-project-1", Location: "US-CENTRAL1", StorageClass: "NEARLINE",
				Labels: map[string]string{"team": "storage", "env": "prod"}, DeletePolicy: DeletePolicyDelete,
				Attributes: map[string]string{"implicitDirs": "true", "uid": "1000", "auth": "workloadIdentity"},
			},
		},
		{"domain-scoped project", map[string]string{"projectID": "example.com:my-project"}, Params{Layout: LayoutBucket, ProjectID: "example.com:my-project", DeletePolicy: DeletePolicyRetain, Attributes: map[string]string{}}},
		{
			"prefix layout",
			map[string]string{"bucketName": "shared-bucket", "deletePolicy": "retain", "mountOptions": "implicit-dirs,uid=1000"},
			Params{Layout: LayoutPrefix, Bucket: "shared-bucket", DeletePolicy: DeletePolicyRetain, Attributes: map[string]string{"mountOptions": "implicit-dirs,uid=1000"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseParameters(tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tc.want) {
				t.Errorf("got %+v\nwant %+v", *got, tc.want)
			}
		})
	}
}

// TestParseParametersNamesTheField: every refusal wraps ErrInvalid and
// names the parameter; an unknown one lists what is allowed.
func TestParseParametersNamesTheField(t *testing.T) {
	tests := []struct {
		params map[string]string
		want   []string // substrings of the error
	}{
		{map[string]string{"bucketname": "x"}, []string{"parameters.bucketname: unknown StorageClass parameter; allowed: bucketName, deletePolicy, labels, location, projectID, storageClass,", "implicitDirs"}},
		{map[string]string{"type": "pd-ssd"}, []string{"parameters.type: unknown"}},
		{map[string]string{"bucketName": "Bad_Bucket"}, []string{"parameters.bucketName", "invalid bucket name"}},
		{map[string]string{"bucketName": "b-1", "location": "eu"}, []string{"parameters.location: only for the bucket-per-volume layout"}},
		{map[string]string{"bucketName": "b-1", "labels": "a=b"}, []string{"parameters.labels: only for the bucket-per-volume layout"}},
		{map[string]string{"projectID": "1-starts-with-digit"}, []string{"parameters.projectID=\"1-starts-with-digit\""}},
		{map[string]string{"projectID": "short"}, []string{"parameters.projectID"}},
		{map[string]string{"location": "us central"}, []string{"parameters.location=\"us central\""}},
		{map[string]string{"storageClass": "premium"}, []string{"parameters.storageClass=\"premium\": want one of STANDARD, NEARLINE, COLDLINE, ARCHIVE"}},
		{map[string]string{"deletePolicy": "recycle"}, []string{"parameters.deletePolicy=\"recycle\": want retain", "or delete"}},
		{map[string]string{"labels": "Team=x"}, []string{"parameters.labels: label key \"Team\""}},
		{map[string]string{"labels": "team=X Y"}, []string{"parameters.labels: label team=\"X Y\""}},
		{map[string]string{"labels": "gcsfuse-csi_managed-by=me"}, []string{"parameters.labels: label key \"gcsfuse-csi_managed-by\": the prefix \"gcsfuse-csi_\" is reserved"}},
		{map[string]string{"labels": "a=1,a=2"}, []string{"label key \"a\" given twice"}},
		{map[string]string{"onlyDir": "x"}, []string{"parameters.onlyDir: not a StorageClass parameter"}},
		{map[string]string{"uid": "-1"}, []string{"parameters.uid", "want an integer"}},
		{map[string]string{"auth": "magic"}, []string{"parameters.auth=\"magic\""}},
		{map[string]string{"mountOptions": "key-file=/etc/x"}, []string{"parameters.mountOptions", "key-file", "not allowed"}},
	}
	for _, tc := range tests {
		_, err := ParseParameters(tc.params)
		if err == nil {
			t.Errorf("%v: accepted", tc.params)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%v: error %v does not wrap ErrInvalid", tc.params, err)
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q lacks %q", tc.params, err, w)
			}
		}
		if strings.Contains(err.Error(), "invalid argument") {
			t.Errorf("%v: error %q repeats its kind", tc.params, err)
		}
	}
}

// TestParseParametersFixedOrder: with several bad parameters the first in
// sorted order is reported, every time.
func TestParseParametersFixedOrder(t *testing.T) {
	params := map[string]string{"zzz": "1", "location": "bad location", "deletePolicy": "never"}
	for range 20 {
		_, err := ParseParameters(params)
		if err == nil || !strings.HasPrefix(err.Error(), "parameters.deletePolicy=") {
			t.Fatalf("error %v, want the deletePolicy error first", err)
		}
	}
}

func TestTooManyLabels(t *testing.T) {
	var kv []string
	for i := range maxUserLabels + 1 {
		kv = append(kv, "l"+strings.Repeat("x", i%5)+string(rune('a'+i%26))+string(rune('a'+i/26))+"=v")
	}
	_, err := ParseParameters(map[string]string{"labels": strings.Join(kv, ",")})
	if err == nil || !strings.Contains(err.Error(), "at most 60") {
		t.Errorf("%d labels: %v, want a refusal naming the limit", len(kv), err)
	}
}

func TestAllowedParametersExcludeLayoutAttributes(t *testing.T) {
	allowed := AllowedParameters()
	for _, a := range []string{"onlyDir"} {
		for _, p := range allowed {
			if p == a {
				t.Errorf("AllowedParameters lists %q, which ParseParameters refuses", a)
			}
		}
	}
	if strings.Count(strings.Join(allowed, ","), "bucketName") != 1 {
		t.Errorf("bucketName listed %d times", strings.Count(strings.Join(allowed, ","), "bucketName"))
	}
}
