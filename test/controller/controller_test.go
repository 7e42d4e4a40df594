// Package controller tests the CSI Controller service (CreateVolume,
// DeleteVolume, ControllerExpandVolume, ValidateVolumeCapabilities) against
// fake-gcs-server on 127.0.0.1, through the controller's own unix socket:
// both layouts, retried creates, a delete cut off half-way and retried,
// and buckets and prefixes the driver did not create, which it must never
// delete. fake-gcs-server drops bucket labels; the tests run both with
// --bucket-label-marker (the fake as it is) and with a front that keeps
// labels as GCS does, without the marker.
//
// It needs no root and no FUSE: nothing is mounted.
package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	provisioner "github.com/gcsfuse-csi/gcsfuse-csi/pkg/controller"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/fakegcp"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

const (
	pv1 = "pvc-0b6f3a4e-2f0d-4a44-9d1e-6a7b8c9d0e1f"
	pv2 = "pvc-6a7b8c9d-0e1f-4a44-9d1e-0b6f3a4e2f0d"
	gi  = int64(1) << 30
	// managedBy is the driver name as a label value.
	managedBy = "gcsfuse-csi_github_io"
	shared    = "shared-bucket"
)

var rwx = harness.MountCapability(harness.RWX, "")

func createReq(name string, size int64, params map[string]string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{
		Name:               name,
		CapacityRange:      &csi.CapacityRange{RequiredBytes: size},
		VolumeCapabilities: []*csi.VolumeCapability{rwx},
		Parameters:         params,
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func wantCode(t *testing.T, err error, code codes.Code, msg ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code %s (%v), want %s", st.Code(), err, code)
	}
	for _, m := range msg {
		if !strings.Contains(st.Message(), m) {
			t.Errorf("message %q lacks %q", st.Message(), m)
		}
	}
}

func record(volume, policy string, capacity int64) map[string]string {
	return map[string]string{
		provisioner.LabelManagedBy:    managedBy,
		provisioner.LabelVolume:       volume,
		provisioner.LabelDeletePolicy: policy,
		provisioner.LabelCapacity:     strconv.FormatInt(capacity, 10),
	}
}

// TestBucketLayout: create (and retry), validate, expand, delete (and
// retry) a bucket-per-volume volume, on the fake as it is (no bucket
// labels: the record is on the marker object).
func TestBucketLayout(t *testing.T) {
	e := newEnv(t, envOptions{marker: true})
	params := map[string]string{
		"projectID": "my-project", "location": "us-east1", "storageClass": "standard",
		"labels": "team=storage", "deletePolicy": "delete", "implicitDirs": "true",
		"csi.storage.k8s.io/pv/name": pv1, // added by the provisioner: ignored
	}
	resp, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, 5*gi, params))
	if err != nil {
		t.Fatal(err)
	}
	want := &csi.Volume{VolumeId: pv1, CapacityBytes: 5 * gi, VolumeContext: map[string]string{"implicitDirs": "true"}}
	if got := resp.GetVolume(); got.GetVolumeId() != want.VolumeId || got.GetCapacityBytes() != want.CapacityBytes || !reflect.DeepEqual(got.GetVolumeContext(), want.VolumeContext) {
		t.Fatalf("volume %v, want %v", got, want)
	}
	if md := e.metadata(t, pv1, provisioner.MarkerObject); !reflect.DeepEqual(md, record(pv1, "delete", 5*gi)) {
		t.Errorf("marker metadata %v, want %v", md, record(pv1, "delete", 5*gi))
	}

	t.Run("a retried CreateVolume returns the same volume", func(t *testing.T) {
		again, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, 5*gi, params))
		if err != nil {
			t.Fatal(err)
		}
		if again.GetVolume().GetVolumeId() != pv1 || again.GetVolume().GetCapacityBytes() != 5*gi {
			t.Errorf("retry gave %v", again.GetVolume())
		}
	})
	t.Run("the same name with another capacity or delete policy is AlreadyExists", func(t *testing.T) {
		_, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, 6*gi, params))
		wantCode(t, err, codes.AlreadyExists, "capacity of 5368709120 bytes")
		retain := map[string]string{"projectID": "my-project", "implicitDirs": "true"}
		_, err = e.ctrl.CreateVolume(ctx(t), createReq(pv1, 5*gi, retain))
		wantCode(t, err, codes.AlreadyExists, "deletePolicy=delete")
	})
	t.Run("ValidateVolumeCapabilities confirms", func(t *testing.T) {
		v, err := e.ctrl.ValidateVolumeCapabilities(ctx(t), &csi.ValidateVolumeCapabilitiesRequest{
			VolumeId: pv1, VolumeCapabilities: []*csi.VolumeCapability{rwx}, VolumeContext: resp.GetVolume().GetVolumeContext(),
		})
		if err != nil || v.GetConfirmed() == nil {
			t.Fatalf("%v %v", v, err)
		}
	})
	t.Run("expanding records the capacity", func(t *testing.T) {
		x, err := e.ctrl.ControllerExpandVolume(ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: pv1, CapacityRange: &csi.CapacityRange{RequiredBytes: 10 * gi}})
		if err != nil {
			t.Fatal(err)
		}
		if x.GetCapacityBytes() != 10*gi || x.GetNodeExpansionRequired() {
			t.Errorf("expand: %v", x)
		}
		if md := e.metadata(t, pv1, provisioner.MarkerObject); md[provisioner.LabelCapacity] != strconv.FormatInt(10*gi, 10) {
			t.Errorf("marker after expand: %v", md)
		}
		// A smaller request keeps it: volumes never shrink.
		if x, err := e.ctrl.ControllerExpandVolume(ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: pv1, CapacityRange: &csi.CapacityRange{RequiredBytes: gi}}); err != nil || x.GetCapacityBytes() != 10*gi {
			t.Errorf("smaller expand: %v %v", x, err)
		}
		// A retried CreateVolume now reports the recorded capacity.
		again, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, 5*gi, params))
		if err != nil || again.GetVolume().GetCapacityBytes() != 10*gi {
			t.Errorf("create after expand: %v %v", again, err)
		}
	})
	t.Run("DeleteVolume empties and removes the bucket, and again is success", func(t *testing.T) {
		for i := range 30 {
			e.put(t, pv1, fmt.Sprintf("dir/%02d.txt", i), "data", nil)
		}
		if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: pv1}); err != nil {
			t.Fatal(err)
		}
		if e.bucketExists(t, pv1) {
			t.Errorf("bucket %s still exists, with %v", pv1, e.objects(t, pv1, ""))
		}
		if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: pv1}); err != nil {
			t.Errorf("second DeleteVolume: %v", err)
		}
		_, err := e.ctrl.ValidateVolumeCapabilities(ctx(t), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: pv1, VolumeCapabilities: []*csi.VolumeCapability{rwx}})
		wantCode(t, err, codes.NotFound)
		_, err = e.ctrl.ControllerExpandVolume(ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: pv1, CapacityRange: &csi.CapacityRange{RequiredBytes: gi}})
		wantCode(t, err, codes.NotFound)
	})
}

// TestRetainKeepsTheData: the default delete policy leaves the bucket, its
// data and its record alone.
func TestRetainKeepsTheData(t *testing.T) {
	e := newEnv(t, envOptions{marker: true, prefix: "team-a-"})
	resp, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, gi, map[string]string{"projectID": "my-project"}))
	if err != nil {
		t.Fatal(err)
	}
	bucket := "team-a-" + pv1
	if id := resp.GetVolume().GetVolumeId(); id != bucket {
		t.Fatalf("volume id %q, want %q (--bucket-name-prefix + name)", id, bucket)
	}
	e.put(t, bucket, "keep.txt", "precious", nil)
	if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: bucket}); err != nil {
		t.Fatal(err)
	}
	if got := e.objects(t, bucket, ""); !slices.Equal(got, []string{provisioner.MarkerObject, "keep.txt"}) {
		t.Errorf("after DeleteVolume with deletePolicy retain: %v", got)
	}
}

// TestPrefixLayout: a volume is a directory of an existing bucket, with a
// placeholder object carrying the record; deleting it removes that
// directory only, never the bucket or anything else in it.
func TestPrefixLayout(t *testing.T) {
	e := newEnv(t, envOptions{objects: []fakestorage.Object{
		harness.Object(shared, "other/data.txt", "not a volume"),
		harness.Object(shared, pv1+"-not-this/x", "a longer name that starts the same"),
	}})
	params := map[string]string{"bucketName": shared, "deletePolicy": "delete", "uid": "1000"}
	resp, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, 2*gi, params))
	if err != nil {
		t.Fatal(err)
	}
	id := shared + "/" + pv1
	if v := resp.GetVolume(); v.GetVolumeId() != id || v.GetCapacityBytes() != 2*gi || !reflect.DeepEqual(v.GetVolumeContext(), map[string]string{"uid": "1000"}) {
		t.Fatalf("volume %v, want id %q, 2Gi, context uid=1000", v, id)
	}
	if md := e.metadata(t, shared, pv1+"/"); !reflect.DeepEqual(md, record(pv1, "delete", 2*gi)) {
		t.Errorf("placeholder metadata %v", md)
	}
	again, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, 2*gi, params))
	if err != nil || again.GetVolume().GetVolumeId() != id {
		t.Fatalf("retry: %v %v", again, err)
	}
	_, err = e.ctrl.CreateVolume(ctx(t), createReq(pv1, 3*gi, params))
	wantCode(t, err, codes.AlreadyExists, "capacity")

	x, err := e.ctrl.ControllerExpandVolume(ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 4 * gi}})
	if err != nil || x.GetCapacityBytes() != 4*gi {
		t.Fatalf("expand: %v %v", x, err)
	}
	if md := e.metadata(t, shared, pv1+"/"); md[provisioner.LabelCapacity] != strconv.FormatInt(4*gi, 10) {
		t.Errorf("placeholder after expand: %v", md)
	}

	for _, o := range []string{"a.txt", "d/b.txt", "d/e/c.txt"} {
		e.put(t, shared, pv1+"/"+o, "x", nil)
	}
	if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Fatal(err)
	}
	if got, want := e.objects(t, shared, ""), []string{"other/data.txt", pv1 + "-not-this/x"}; !slices.Equal(got, want) {
		t.Errorf("bucket after DeleteVolume: %v, want only %v", got, want)
	}
	if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		t.Errorf("second DeleteVolume: %v", err)
	}

	t.Run("a missing bucket is InvalidArgument naming bucketName", func(t *testing.T) {
		_, err := e.ctrl.CreateVolume(ctx(t), createReq(pv2, gi, map[string]string{"bucketName": "no-such-bucket"}))
		wantCode(t, err, codes.InvalidArgument, `parameters.bucketName="no-such-bucket": the bucket does not exist`)
	})
	t.Run("retain keeps the prefix", func(t *testing.T) {
		if _, err := e.ctrl.CreateVolume(ctx(t), createReq(pv2, gi, map[string]string{"bucketName": shared})); err != nil {
			t.Fatal(err)
		}
		e.put(t, shared, pv2+"/keep.txt", "x", nil)
		if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: shared + "/" + pv2}); err != nil {
			t.Fatal(err)
		}
		if got := e.objects(t, shared, pv2+"/"); !slices.Equal(got, []string{pv2 + "/", pv2 + "/keep.txt"}) {
			t.Errorf("after DeleteVolume with deletePolicy retain: %v", got)
		}
	})
}

// TestInterruptedDelete: a DeleteVolume whose deadline passes half-way
// through a bucket (or prefix) fails with DeadlineExceeded and leaves the
// record, so that the retry finishes the job.
func TestInterruptedDelete(t *testing.T) {
	const objects, letThrough = 400, 150
	for _, layout := range []string{"bucket", "prefix"} {
		t.Run(layout, func(t *testing.T) {
			e := newEnv(t, envOptions{marker: true, objects: []fakestorage.Object{harness.Object(shared, "other.txt", "stays")}})
			params := map[string]string{"projectID": "my-project", "deletePolicy": "delete"}
			if layout == "prefix" {
				params = map[string]string{"bucketName": shared, "deletePolicy": "delete"}
			}
			resp, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, gi, params))
			if err != nil {
				t.Fatal(err)
			}
			id := resp.GetVolume().GetVolumeId()
			bucket, prefix := interruptAndResume(t, e, id, objects, letThrough, func(c context.Context) error {
				_, err := e.ctrl.DeleteVolume(c, &csi.DeleteVolumeRequest{VolumeId: id})
				return err
			})
			if layout == "bucket" && e.bucketExists(t, bucket) {
				t.Errorf("bucket still there after the retry, with %d objects", len(e.objects(t, bucket, "")))
			}
			if got := e.objects(t, bucket, prefix); layout == "prefix" && len(got) != 0 {
				t.Errorf("%d objects under %s after the retry", len(got), prefix)
			}
			if got := e.objects(t, shared, ""); !slices.Equal(got, []string{"other.txt"}) {
				t.Errorf("bucket %s after the retry holds %d objects, want only other.txt", shared, len(got))
			}
		})
	}
}

// TestInterruptedDeletePages: the same with small list pages, through
// the provisioner itself: deleting goes on page after page, an
// interruption in the middle of a page loses nothing, and the retry lists
// afresh.
func TestInterruptedDeletePages(t *testing.T) {
	e := newEnv(t, envOptions{marker: true})
	p := provisioner.New(provisioner.Config{DriverName: "gcsfuse-csi.github.io", Endpoint: e.gcs.Endpoint, BucketLabelMarker: true, PageSize: 25, DeleteWorkers: 4})
	t.Cleanup(p.Close)
	params, err := provisioner.ParseParameters(map[string]string{"projectID": "my-project", "deletePolicy": "delete"})
	if err != nil {
		t.Fatal(err)
	}
	anon := &auth.Credentials{Mode: auth.ModeAnonymous}
	v, err := p.Create(ctx(t), provisioner.CreateRequest{Name: pv1, RequiredBytes: gi, Params: params, Credentials: anon})
	if err != nil {
		t.Fatal(err)
	}
	lists := e.gate.lists.Load()
	interruptAndResume(t, e, v.ID, 400, 130, func(c context.Context) error { return p.Delete(c, v.ID, anon) })
	if pages := e.gate.lists.Load() - lists; pages < 400/25 {
		t.Errorf("%d list requests for 400 objects in pages of 25", pages)
	}
	if e.bucketExists(t, v.ID) {
		t.Error("bucket still there after the retry")
	}
}

// interruptAndResume fills the volume id with n objects, runs del with
// the gate letting only letThrough deletions through until a 2 s deadline
// ends it, checks what is left, then opens the gate and runs del again.
func interruptAndResume(t *testing.T, e *env, id string, n, letThrough int, del func(context.Context) error) (bucket, prefix string) {
	t.Helper()
	bucket, dir, _ := strings.Cut(id, "/")
	record := provisioner.MarkerObject
	if dir != "" {
		prefix, record = dir+"/", dir+"/"
	}
	for i := range n {
		e.gcs.Server.CreateObject(fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: fmt.Sprintf("%sd%d/f%04d", prefix, i%7, i)}})
	}
	before := len(e.objects(t, bucket, prefix))

	e.gate.arm(int64(letThrough))
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	err := del(c)
	cancel()
	if code := status.Code(err); code != codes.DeadlineExceeded && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("interrupted delete: %v, want DeadlineExceeded", err)
	}
	if left := len(e.objects(t, bucket, prefix)); left != before-letThrough {
		t.Errorf("%d of %d objects left after %d deletions went through", left, before, letThrough)
	}
	if e.metadata(t, bucket, record) == nil {
		t.Fatalf("the record %s is gone after an interrupted delete: the retry could not know the volume is the driver's", record)
	}
	e.gate.open()
	if err := del(ctx(t)); err != nil {
		t.Fatalf("retried delete: %v", err)
	}
	return bucket, prefix
}

// TestNotOurs: a bucket or prefix without the driver's record is never
// deleted, expanded (written to) or taken over.
func TestNotOurs(t *testing.T) {
	foreign := pv2 // a bucket that happens to have the name a volume maps to
	e := newEnv(t, envOptions{marker: true, objects: []fakestorage.Object{
		harness.Object(foreign, "precious.txt", "not yours"),
		harness.Object(shared, "pvc-x/precious.txt", "a prefix without placeholder"),
	}})
	e.put(t, shared, "pvc-y/", "", map[string]string{provisioner.LabelManagedBy: "other_example_com", provisioner.LabelDeletePolicy: "delete"})
	e.put(t, shared, "pvc-y/data.txt", "another driver's", nil)
	otherDriver := "other-drivers-bucket"
	e.put(t, shared, "tmp", "", nil) // shared exists already; make the other bucket:
	if err := e.gcs.Client.Bucket(otherDriver).Create(context.Background(), "p", nil); err != nil {
		t.Fatal(err)
	}
	e.put(t, otherDriver, provisioner.MarkerObject, "", map[string]string{provisioner.LabelManagedBy: "other_example_com", provisioner.LabelDeletePolicy: "delete"})

	for _, tc := range []struct{ id, want string }{
		{foreign, "has no label gcsfuse-csi_managed-by"},
		{otherDriver, `created by the driver "other_example_com"`},
		{shared + "/pvc-x", "no placeholder object"},
		{shared + "/pvc-y", `created by the driver "other_example_com"`},
	} {
		t.Run("DeleteVolume "+tc.id, func(t *testing.T) {
			_, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: tc.id})
			wantCode(t, err, codes.FailedPrecondition, tc.want, "never deleted")
		})
	}
	t.Run("CreateVolume onto them is AlreadyExists", func(t *testing.T) {
		_, err := e.ctrl.CreateVolume(ctx(t), createReq(foreign, gi, map[string]string{"projectID": "my-project", "deletePolicy": "delete"}))
		wantCode(t, err, codes.AlreadyExists, "was not created by this driver")
		_, err = e.ctrl.CreateVolume(ctx(t), createReq("pvc-x", gi, map[string]string{"bucketName": shared}))
		wantCode(t, err, codes.AlreadyExists, "already holds objects that this driver did not create")
		_, err = e.ctrl.CreateVolume(ctx(t), createReq("pvc-y", gi, map[string]string{"bucketName": shared}))
		wantCode(t, err, codes.AlreadyExists, `created by the driver "other_example_com"`)
	})
	t.Run("ControllerExpandVolume records nothing on them", func(t *testing.T) {
		x, err := e.ctrl.ControllerExpandVolume(ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: foreign, CapacityRange: &csi.CapacityRange{RequiredBytes: gi}})
		if err != nil || x.GetCapacityBytes() != gi {
			t.Fatalf("%v %v", x, err)
		}
		if md := e.metadata(t, foreign, provisioner.MarkerObject); md != nil {
			t.Errorf("expand wrote a marker into a foreign bucket: %v", md)
		}
	})
	if got := e.objects(t, foreign, ""); !slices.Equal(got, []string{"precious.txt"}) {
		t.Errorf("foreign bucket now holds %v", got)
	}
	if got := e.objects(t, shared, ""); !slices.Equal(got, []string{"pvc-x/precious.txt", "pvc-y/", "pvc-y/data.txt", "tmp"}) {
		t.Errorf("shared bucket now holds %v", got)
	}
	if got := e.objects(t, otherDriver, ""); !slices.Equal(got, []string{provisioner.MarkerObject}) {
		t.Errorf("the other driver's bucket now holds %v", got)
	}
}

// TestBucketLabels: against a GCS that keeps bucket labels (as the real
// one does) and without --bucket-label-marker, the record is the bucket's
// labels only; a marker object planted in a labelled bucket is not trusted.
func TestBucketLabels(t *testing.T) {
	e := newEnv(t, envOptions{keepLabels: true})
	params := map[string]string{"projectID": "my-project", "labels": "team=storage,env=test", "deletePolicy": "delete"}
	if _, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, gi, params)); err != nil {
		t.Fatal(err)
	}
	want := record(pv1, "delete", gi)
	want["team"], want["env"] = "storage", "test"
	if got := e.labels.get(pv1); !reflect.DeepEqual(got, want) {
		t.Errorf("bucket labels %v, want %v", got, want)
	}
	if got := e.objects(t, pv1, ""); len(got) != 0 {
		t.Errorf("objects %v in a new bucket: no marker where labels are kept", got)
	}
	if _, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, gi, params)); err != nil {
		t.Errorf("retry: %v", err)
	}
	if _, err := e.ctrl.ControllerExpandVolume(ctx(t), &csi.ControllerExpandVolumeRequest{VolumeId: pv1, CapacityRange: &csi.CapacityRange{RequiredBytes: 3 * gi}}); err != nil {
		t.Fatal(err)
	}
	if got := e.labels.get(pv1)[provisioner.LabelCapacity]; got != strconv.FormatInt(3*gi, 10) {
		t.Errorf("capacity label after expand: %q", got)
	}
	e.put(t, pv1, "a.txt", "x", nil)
	if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: pv1}); err != nil {
		t.Fatal(err)
	}
	if e.bucketExists(t, pv1) {
		t.Error("bucket still exists")
	}

	// A labelled bucket with a planted marker that claims to be ours.
	planted := "labelled-bucket"
	if err := e.gcs.Client.Bucket(planted).Create(context.Background(), "p", nil); err != nil {
		t.Fatal(err)
	}
	e.labels.set(planted, map[string]string{"team": "data"})
	e.put(t, planted, provisioner.MarkerObject, "", record(pv2, "delete", gi))
	_, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: planted})
	wantCode(t, err, codes.FailedPrecondition, "never deleted")
	if !e.bucketExists(t, planted) {
		t.Error("a labelled bucket without the driver's label was deleted")
	}
}

// TestLabelsNotKeptWithoutMarker: a GCS endpoint that drops bucket labels
// (the plain fake) and no --bucket-label-marker: the driver could never
// recognize the bucket, so CreateVolume fails, says why, and removes the
// empty bucket it made.
func TestLabelsNotKeptWithoutMarker(t *testing.T) {
	e := newEnv(t, envOptions{})
	_, err := e.ctrl.CreateVolume(ctx(t), createReq(pv1, gi, map[string]string{"projectID": "my-project"}))
	wantCode(t, err, codes.FailedPrecondition, "did not keep the labels", "--bucket-label-marker")
	if e.bucketExists(t, pv1) {
		t.Error("the bucket is left behind")
	}
}

// TestProvisionerSecret: with the provisioner secret's key, every call
// runs as that service account (the fake's auth front checks each
// request); without it, the controller's own identity (here anonymous) is
// refused by the front; a key its token endpoint rejects is
// PermissionDenied naming the account.
func TestProvisionerSecret(t *testing.T) {
	gcp, err := fakegcp.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcp.Stop)
	const email = "provisioner@my-project.iam.gserviceaccount.com"
	key := gcp.ServiceAccountKey(email)
	gcp.Grant(pv1, email)
	e := newEnv(t, envOptions{marker: true, credentialed: true, front: gcp.Wrap})
	logs := captureKlog(t) // -v=5: every request payload
	secrets := map[string]string{"key.json": string(key)}
	req := createReq(pv1, gi, map[string]string{"projectID": "my-project", "deletePolicy": "delete"})

	_, err = e.ctrl.CreateVolume(ctx(t), req)
	wantCode(t, err, codes.Unauthenticated, "node credentials (Application Default Credentials)", "provisioner-secret-name")

	req.Secrets = secrets
	if _, err := e.ctrl.CreateVolume(ctx(t), req); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctrl.DeleteVolume(ctx(t), &csi.DeleteVolumeRequest{VolumeId: pv1, Secrets: secrets}); err != nil {
		t.Fatal(err)
	}
	if e.bucketExists(t, pv1) {
		t.Error("bucket still exists")
	}
	var principals []string
	for _, r := range gcp.Requests() {
		if r.Principal != "" && !slices.Contains(principals, r.Principal) {
			principals = append(principals, r.Principal)
		}
	}
	if !slices.Equal(principals, []string{email}) {
		t.Errorf("GCS saw principals %v, want only %s", principals, email)
	}

	unregistered := gcp.UnregisteredKey(email)
	req.Secrets = map[string]string{"key.json": string(unregistered)}
	_, err = e.ctrl.CreateVolume(ctx(t), req)
	wantCode(t, err, codes.PermissionDenied, email)

	// Secrets never reach a log line, not even at -v=5 with payloads.
	klog.Flush()
	text := logs.String()
	if !strings.Contains(text, "CreateVolume") || !strings.Contains(text, "***stripped***") {
		t.Fatalf("the log has no stripped CreateVolume payloads; the check below would prove nothing:\n%s", text)
	}
	for _, k := range [][]byte{key, unregistered} {
		var f struct {
			PrivateKey string `json:"private_key"`
		}
		if err := json.Unmarshal(k, &f); err != nil || f.PrivateKey == "" {
			t.Fatalf("key: %v", err)
		}
		for _, line := range strings.Split(f.PrivateKey, "\n") {
			if len(line) > 20 && strings.Contains(text, line) {
				t.Fatalf("a line of the private key is in the controller's log")
			}
		}
	}
	for _, tok := range gcp.AccessTokens() {
		if strings.Contains(text, tok) {
			t.Fatal("an access token is in the controller's log")
		}
	}
}

// captureKlog sends klog's output at -v=5 to a buffer for the test's life.
func captureKlog(t *testing.T) *harness.LogBuffer { return harness.CaptureKlog(t, 5) }
