package driver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/controller"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
)

func validControllerOptions() ControllerOptions {
	return ControllerOptions{Endpoint: "unix:///run/ctrl.sock", DriverName: DefaultDriverName}
}

func TestControllerValidateNamesTheFlag(t *testing.T) {
	tests := []struct {
		mutate func(*ControllerOptions)
		want   string
	}{
		{func(o *ControllerOptions) { o.Endpoint = "tcp://127.0.0.1:1" }, "--endpoint"},
		{func(o *ControllerOptions) { o.DriverName = "Not_DNS" }, "--driver-name"},
		{func(o *ControllerOptions) { o.GCSEndpoint = "ftp://x" }, "--gcs-endpoint"},
		{func(o *ControllerOptions) { o.BucketNamePrefix = "Upper-" }, "--bucket-name-prefix"},
		{func(o *ControllerOptions) { o.BucketNamePrefix = "goog-" }, "--bucket-name-prefix"},
		{func(o *ControllerOptions) { o.BucketNamePrefix = strings.Repeat("a", 41) }, "--bucket-name-prefix"},
		{func(o *ControllerOptions) { o.ProjectID = "Bad Project" }, "--project-id"},
	}
	o := validControllerOptions()
	if err := o.Validate(); err != nil {
		t.Fatalf("valid options rejected: %v", err)
	}
	for _, tc := range tests {
		o := validControllerOptions()
		tc.mutate(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
}

// TestReadmeListsEveryControllerFlag keeps the README's controller flag
// table (between its markers) equal to the flags.
func TestReadmeListsEveryControllerFlag(t *testing.T) {
	table := ctrlReadmeSection(t, "controller-flags")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var o ControllerOptions
	o.AddFlags(fs)
	n := 0
	fs.VisitAll(func(f *flag.Flag) {
		n++
		if !strings.Contains(table, "| `--"+f.Name+"` |") {
			t.Errorf("README controller flag table lacks --%s", f.Name)
		}
	})
	if rows := strings.Count(table, "| `--"); rows != n {
		t.Errorf("README controller flag table has %d flag rows, the controller %d flags", rows, n)
	}
	if !strings.Contains(table, "| `-v`, `--vmodule` |") {
		t.Error("README controller flag table lacks -v and --vmodule")
	}
}

func ctrlReadmeSection(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	_, rest, ok := strings.Cut(readme, "<!-- "+name+":begin -->")
	section, _, ok2 := strings.Cut(rest, "<!-- "+name+":end -->")
	if !ok || !ok2 {
		t.Fatalf("README.md has no %s section", name)
	}
	return section
}

func newTestController(t *testing.T) *Controller {
	t.Helper()
	o := validControllerOptions()
	o.GCSEndpoint = "http://127.0.0.1:1/storage/v1/" // never reached by these tests
	o.Anonymous = true
	c, err := NewController(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.prov.Close)
	return c
}

var ctrlMountRWX = &csi.VolumeCapability{
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
}

// TestControllerRequestValidation: every malformed request is refused
// before any GCS call (the endpoint above does not exist) with an exact
// code, and the message names the field.
func TestControllerRequestValidation(t *testing.T) {
	block := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: ctrlMountRWX.AccessMode,
	}
	ok := func(r *csi.CreateVolumeRequest) *csi.CreateVolumeRequest {
		if r.Name == "" {
			r.Name = "pvc-1"
		}
		if r.VolumeCapabilities == nil {
			r.VolumeCapabilities = []*csi.VolumeCapability{ctrlMountRWX}
		}
		return r
	}
	createTests := []struct {
		name string
		req  *csi.CreateVolumeRequest
		code codes.Code
		want string
	}{
		{"no name", &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{ctrlMountRWX}}, codes.InvalidArgument, "name is required"},
		{"no capabilities", &csi.CreateVolumeRequest{Name: "pvc-1"}, codes.InvalidArgument, "volume_capabilities are required"},
		{"block", ok(&csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{ctrlMountRWX, block}}), codes.InvalidArgument, "volume_capabilities[1].block"},
		{"no access mode", ok(&csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{{AccessType: ctrlMountRWX.AccessType}}}), codes.InvalidArgument, "volume_capabilities[0].access_mode"},
		{"fs type", ok(&csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}}, AccessMode: ctrlMountRWX.AccessMode}}}), codes.InvalidArgument, "fs_type=\"ext4\""},
		{"negative capacity", ok(&csi.CreateVolumeRequest{CapacityRange: &csi.CapacityRange{RequiredBytes: -1}}), codes.InvalidArgument, "capacity_range.required_bytes"},
		{"required over limit", ok(&csi.CreateVolumeRequest{CapacityRange: &csi.CapacityRange{RequiredBytes: 2, LimitBytes: 1}}), codes.InvalidArgument, "more than limit_bytes"},
		{"snapshot source", ok(&csi.CreateVolumeRequest{VolumeContentSource: &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Snapshot{Snapshot: &csi.VolumeContentSource_SnapshotSource{SnapshotId: "s"}}}}), codes.InvalidArgument, "volume_content_source"},
		{"mutable parameters", ok(&csi.CreateVolumeRequest{MutableParameters: map[string]string{"a": "b"}}), codes.InvalidArgument, "mutable_parameters"},
		{"unknown parameter", ok(&csi.CreateVolumeRequest{Parameters: map[string]string{"fsType": "ext4"}}), codes.InvalidArgument, "parameters.fsType: unknown StorageClass parameter; allowed: bucketName"},
		{"bad parameter", ok(&csi.CreateVolumeRequest{Parameters: map[string]string{"deletePolicy": "soon"}}), codes.InvalidArgument, "parameters.deletePolicy=\"soon\""},
		{"secret without key.json", ok(&csi.CreateVolumeRequest{Parameters: map[string]string{"projectID": "my-project"}, Secrets: map[string]string{"token": "x"}}), codes.InvalidArgument, "want exactly one key, \"key.json\""},
		{"secret not a key", ok(&csi.CreateVolumeRequest{Parameters: map[string]string{"projectID": "my-project"}, Secrets: map[string]string{"key.json": "{}"}}), codes.InvalidArgument, "secrets[\"key.json\"]"},
		{"bucket layout without project", ok(&csi.CreateVolumeRequest{}), codes.InvalidArgument, "parameters.projectID is required"},
	}
	c := newTestController(t)
	for _, tc := range createTests {
		t.Run("CreateVolume/"+tc.name, func(t *testing.T) {
			_, err := c.CreateVolume(context.Background(), tc.req)
			ctrlCheckCode(t, err, tc.code, tc.want)
		})
	}
	t.Run("DeleteVolume/no id", func(t *testing.T) {
		_, err := c.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{})
		ctrlCheckCode(t, err, codes.InvalidArgument, "volume_id is required")
	})
	t.Run("DeleteVolume/an id that cannot be a bucket is already gone", func(t *testing.T) {
		_, err := c.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: "Not A Bucket"})
		ctrlCheckCode(t, err, codes.OK, "")
	})
	t.Run("ValidateVolumeCapabilities/no id", func(t *testing.T) {
		_, err := c.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{VolumeCapabilities: []*csi.VolumeCapability{ctrlMountRWX}})
		ctrlCheckCode(t, err, codes.InvalidArgument, "volume_id is required")
	})
	t.Run("ValidateVolumeCapabilities/no capabilities", func(t *testing.T) {
		_, err := c.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "b-1"})
		ctrlCheckCode(t, err, codes.InvalidArgument, "volume_capabilities are required")
	})
	t.Run("ValidateVolumeCapabilities/an id that cannot be a bucket", func(t *testing.T) {
		_, err := c.ValidateVolumeCapabilities(context.Background(), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "B", VolumeCapabilities: []*csi.VolumeCapability{ctrlMountRWX}})
		ctrlCheckCode(t, err, codes.NotFound, "not a bucket")
	})
	t.Run("ControllerExpandVolume/no id", func(t *testing.T) {
		_, err := c.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{CapacityRange: &csi.CapacityRange{RequiredBytes: 1}})
		ctrlCheckCode(t, err, codes.InvalidArgument, "volume_id is required")
	})
	t.Run("ControllerExpandVolume/no capacity", func(t *testing.T) {
		_, err := c.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{VolumeId: "b-1"})
		ctrlCheckCode(t, err, codes.InvalidArgument, "capacity_range is required")
	})
}

// TestControllerOperationInFlight: a second operation on a volume whose
// operation is running gets Aborted, for every call that changes it.
func TestControllerOperationInFlight(t *testing.T) {
	c := newTestController(t)
	params := map[string]string{"projectID": "my-project"}
	p, err := controller.ParseParameters(params)
	if err != nil {
		t.Fatal(err)
	}
	id := c.prov.VolumeID("pvc-1", p)
	if !c.locks.TryAcquire(id) {
		t.Fatal("lock taken")
	}
	defer c.locks.Release(id)
	_, err = c.CreateVolume(context.Background(), &csi.CreateVolumeRequest{Name: "pvc-1", VolumeCapabilities: []*csi.VolumeCapability{ctrlMountRWX}, Parameters: params})
	ctrlCheckCode(t, err, codes.Aborted, "already in progress")
	_, err = c.DeleteVolume(context.Background(), &csi.DeleteVolumeRequest{VolumeId: id})
	ctrlCheckCode(t, err, codes.Aborted, "already in progress")
	_, err = c.ControllerExpandVolume(context.Background(), &csi.ControllerExpandVolumeRequest{VolumeId: id, CapacityRange: &csi.CapacityRange{RequiredBytes: 1}})
	ctrlCheckCode(t, err, codes.Aborted, "already in progress")
}

func TestControllerStatus(t *testing.T) {
	tests := []struct {
		err  error
		code codes.Code
	}{
		{fmt.Errorf("x: %w", controller.ErrInvalid), codes.InvalidArgument},
		{fmt.Errorf("x: %w", controller.ErrAlreadyExists), codes.AlreadyExists},
		{fmt.Errorf("x: %w", controller.ErrNotOurs), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", controller.ErrNoLabels), codes.FailedPrecondition},
		{fmt.Errorf("x: %w", controller.ErrOutOfRange), codes.OutOfRange},
		{fmt.Errorf("x: %w", controller.ErrVolumeNotFound), codes.NotFound},
		{fmt.Errorf("x: %w", gcs.ErrPermissionDenied), codes.PermissionDenied},
		{fmt.Errorf("x: %w", gcs.ErrUnavailable), codes.Unavailable},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
		{errors.New("x"), codes.Internal},
	}
	for _, tc := range tests {
		if got := status.Code(controllerStatus("op", tc.err)); got != tc.code {
			t.Errorf("%v: %s, want %s", tc.err, got, tc.code)
		}
	}
}

func TestControllerCapabilities(t *testing.T) {
	c := newTestController(t)
	pc, err := c.GetPluginCapabilities(context.Background(), &csi.GetPluginCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var service, expansion bool
	for _, cp := range pc.GetCapabilities() {
		service = service || cp.GetService().GetType() == csi.PluginCapability_Service_CONTROLLER_SERVICE
		expansion = expansion || cp.GetVolumeExpansion().GetType() == csi.PluginCapability_VolumeExpansion_ONLINE
	}
	if !service || !expansion {
		t.Errorf("plugin capabilities %v: want CONTROLLER_SERVICE and online VolumeExpansion", pc.GetCapabilities())
	}
	cc, err := c.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, cp := range cc.GetCapabilities() {
		got = append(got, cp.GetRpc().GetType().String())
	}
	if want := "CREATE_DELETE_VOLUME EXPAND_VOLUME SINGLE_NODE_MULTI_WRITER"; strings.Join(got, " ") != want {
		t.Errorf("controller capabilities %v, want %s", got, want)
	}
}

func ctrlCheckCode(t *testing.T, err error, code codes.Code, want string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Fatalf("code %s (%v), want %s", st.Code(), err, code)
	}
	if !strings.Contains(st.Message(), want) {
		t.Errorf("message %q lacks %q", st.Message(), want)
	}
}
