package driver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/controller"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// Controller serves the CSI Identity and Controller services
// (`gcsfuse-csi controller`): CreateVolume and DeleteVolume make and remove
// the buckets and prefixes of dynamically provisioned volumes (package
// controller does the GCS work). It needs no privilege and keeps no state:
// what it created is recorded on GCS.
type Controller struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer

	opts  ControllerOptions
	prov  *controller.Provisioner
	locks tryLocks // by volume id
}

// NewController builds the controller from validated options. It does no
// network I/O.
func NewController(opts ControllerOptions) (*Controller, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &Controller{opts: opts, prov: controller.New(controller.Config{
		DriverName:        opts.DriverName,
		Endpoint:          opts.GCSEndpoint,
		BucketPrefix:      opts.BucketNamePrefix,
		ProjectID:         opts.ProjectID,
		BucketLabelMarker: opts.BucketLabelMarker,
	})}, nil
}

var controllerCapabilities = []csi.ControllerServiceCapability_RPC_Type{
	csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME,
	// A recorded no-op: GCS has no quota to grow.
	csi.ControllerServiceCapability_RPC_EXPAND_VOLUME,
	// The node serves SINGLE_NODE_SINGLE_WRITER and _MULTI_WRITER too.
	csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

// GetPluginInfo returns the driver name and version.
func (c *Controller) GetPluginInfo(context.Context, *csi.GetPluginInfoRequest) (*csi.GetPluginInfoResponse, error) {
	return &csi.GetPluginInfoResponse{Name: c.opts.DriverName, VendorVersion: Version}, nil
}

// GetPluginCapabilities: a controller service, whose volumes can be
// expanded while in use (expanding only records the new capacity).
func (c *Controller) GetPluginCapabilities(context.Context, *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	return &csi.GetPluginCapabilitiesResponse{Capabilities: []*csi.PluginCapability{
		{Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}}},
		{Type: &csi.PluginCapability_VolumeExpansion_{VolumeExpansion: &csi.PluginCapability_VolumeExpansion{Type: csi.PluginCapability_VolumeExpansion_ONLINE}}},
	}}, nil
}

// Probe is always ready: the controller needs nothing local, and GCS is
// asked per call (a Probe that called GCS would restart the controller
// for an outage it cannot fix).
func (c *Controller) Probe(context.Context, *csi.ProbeRequest) (*csi.ProbeResponse, error) {
	return &csi.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// ControllerGetCapabilities lists what the controller service implements.
func (c *Controller) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	caps := make([]*csi.ControllerServiceCapability, 0, len(controllerCapabilities))
	for _, t := range controllerCapabilities {
		caps = append(caps, &csi.ControllerServiceCapability{Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: t}}})
	}
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: caps}, nil
}

// CreateVolume creates a bucket (or a prefix of an existing bucket) for
// the volume, or returns the one an earlier call with the same name made.
func (c *Controller) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	name := req.GetName()
	if name == "" {
		return nil, invalid("name is required")
	}
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return nil, err
	}
	if src := req.GetVolumeContentSource(); src != nil {
		return nil, invalid("volume_content_source: volumes cannot be made from a snapshot or another volume (this driver has neither snapshots nor cloning)")
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, invalid("mutable_parameters: not supported (no VolumeAttributesClass support)")
	}
	cr := req.GetCapacityRange()
	if err := checkCapacityRange(cr); err != nil {
		return nil, err
	}
	params, err := controller.ParseParameters(req.GetParameters())
	if err != nil {
		return nil, controllerStatus("parameters", err)
	}
	creds, err := c.credentials(req.GetSecrets(), "provisioner")
	if err != nil {
		return nil, err
	}
	id := c.prov.VolumeID(name, params)
	if !c.locks.TryAcquire(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", id)
	}
	defer c.locks.Release(id)
	vol, err := c.prov.Create(ctx, controller.CreateRequest{
		Name:          name,
		RequiredBytes: cr.GetRequiredBytes(),
		LimitBytes:    cr.GetLimitBytes(),
		Params:        params,
		Credentials:   creds,
	})
	if err != nil {
		return nil, controllerStatus(fmt.Sprintf("create volume %q (%s, id %q)", name, params.Layout, id), err)
	}
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId:      vol.ID,
		CapacityBytes: vol.CapacityBytes,
		VolumeContext: vol.Context,
	}}, nil
}

// DeleteVolume removes the volume's data if its recorded delete policy
// says so, and never touches what the driver did not create.
func (c *Controller) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("volume_id is required")
	}
	creds, err := c.credentials(req.GetSecrets(), "provisioner")
	if err != nil {
		return nil, err
	}
	if !c.locks.TryAcquire(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", id)
	}
	defer c.locks.Release(id)
	if err := c.prov.Delete(ctx, id, creds); err != nil {
		return nil, controllerStatus("delete volume "+id, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms the capabilities (and volume
// context and parameters) of an existing volume if the driver serves them.
func (c *Controller) ValidateVolumeCapabilities(ctx context.Context, req *csi.ValidateVolumeCapabilitiesRequest) (*csi.ValidateVolumeCapabilitiesResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("volume_id is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, invalid("volume_capabilities are required")
	}
	creds, err := c.credentials(req.GetSecrets(), "controller-validate")
	if err != nil {
		return nil, err
	}
	if err := c.prov.Exists(ctx, id, creds); err != nil {
		return nil, controllerStatus("validate volume "+id, err)
	}
	// Unsupported is an answer, not an error: no confirmation, and why.
	if err := checkCapabilities(req.GetVolumeCapabilities()); err != nil {
		return &csi.ValidateVolumeCapabilitiesResponse{Message: status.Convert(err).Message()}, nil
	}
	if len(req.GetParameters()) > 0 {
		if _, err := controller.ParseParameters(req.GetParameters()); err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	if vc := req.GetVolumeContext(); len(vc) > 0 {
		bucket, _, _ := controller.ParseVolumeID(id)
		v, err := mounter.NewVolume(bucket, "volume_id")
		if err == nil {
			for _, k := range slices.Sorted(maps.Keys(vc)) {
				if err = v.SetAttribute(k, vc[k]); err != nil {
					break
				}
			}
		}
		if err != nil {
			return &csi.ValidateVolumeCapabilitiesResponse{Message: err.Error()}, nil
		}
	}
	return &csi.ValidateVolumeCapabilitiesResponse{Confirmed: &csi.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeCapabilities: req.GetVolumeCapabilities(),
		VolumeContext:      req.GetVolumeContext(),
		Parameters:         req.GetParameters(),
	}}, nil
}

// ControllerExpandVolume records the new capacity: GCS has no quota, so
// nothing else changes and the node has nothing to do.
func (c *Controller) ControllerExpandVolume(ctx context.Context, req *csi.ControllerExpandVolumeRequest) (*csi.ControllerExpandVolumeResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("volume_id is required")
	}
	cr := req.GetCapacityRange()
	if cr == nil {
		return nil, invalid("capacity_range is required")
	}
	if err := checkCapacityRange(cr); err != nil {
		return nil, err
	}
	if vc := req.GetVolumeCapability(); vc != nil {
		if err := checkCapability(vc); err != nil {
			return nil, err
		}
	}
	creds, err := c.credentials(req.GetSecrets(), "controller-expand")
	if err != nil {
		return nil, err
	}
	if !c.locks.TryAcquire(id) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", id)
	}
	defer c.locks.Release(id)
	capacity, err := c.prov.Expand(ctx, id, cr.GetRequiredBytes(), cr.GetLimitBytes(), creds)
	if err != nil {
		return nil, controllerStatus("expand volume "+id, err)
	}
	return &csi.ControllerExpandVolumeResponse{CapacityBytes: capacity, NodeExpansionRequired: false}, nil
}

// checkCapabilities validates CreateVolume's (or ValidateVolumeCapabilities')
// volume_capabilities with the node's rules: mount access only, a known
// access mode, no other file system type.
func checkCapabilities(caps []*csi.VolumeCapability) error {
	if len(caps) == 0 {
		return invalid("volume_capabilities are required")
	}
	for i, vc := range caps {
		if err := checkCapability(vc); err != nil {
			msg := strings.Replace(status.Convert(err).Message(), "volume_capability", fmt.Sprintf("volume_capabilities[%d]", i), 1)
			return invalid("%s", msg)
		}
	}
	return nil
}

func checkCapacityRange(cr *csi.CapacityRange) error {
	req, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	switch {
	case req < 0:
		return invalid("capacity_range.required_bytes=%d: want 0 or more", req)
	case limit < 0:
		return invalid("capacity_range.limit_bytes=%d: want 0 (no limit) or more", limit)
	case limit > 0 && req > limit:
		return invalid("capacity_range: required_bytes %d is more than limit_bytes %d", req, limit)
	}
	return nil
}

// credentials are what a controller call uses: the key in its secrets
// (the StorageClass's csi.storage.k8s.io/<kind>-secret-name Secret),
// otherwise anonymous with --anonymous, otherwise the node's Application
// Default Credentials (nil).
func (c *Controller) credentials(secrets map[string]string, kind string) (*auth.Credentials, error) {
	if len(secrets) == 0 {
		if c.opts.Anonymous {
			return &auth.Credentials{Mode: auth.ModeAnonymous}, nil
		}
		return nil, nil
	}
	key, ok := secrets[SecretKey]
	if !ok || len(secrets) > 1 {
		return nil, invalid("secrets: want exactly one key, %q, holding a service-account key file (the Secret named by the StorageClass's csi.storage.k8s.io/%s-secret-name); got keys: %s", SecretKey, kind, secretKeys(secrets))
	}
	if err := auth.ValidateKey([]byte(key)); err != nil {
		return nil, invalid("secrets[%q]: %v", SecretKey, err)
	}
	return &auth.Credentials{Mode: auth.ModeSecret, Key: []byte(key)}, nil
}

// controllerStatus maps the provisioner's errors to gRPC codes; GCS errors
// go through toStatus.
func controllerStatus(what string, err error) error {
	code := codes.OK
	switch {
	case errors.Is(err, controller.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, controller.ErrAlreadyExists):
		code = codes.AlreadyExists
	case errors.Is(err, controller.ErrNotOurs), errors.Is(err, controller.ErrNoLabels):
		code = codes.FailedPrecondition
	case errors.Is(err, controller.ErrOutOfRange):
		code = codes.OutOfRange
	case errors.Is(err, controller.ErrVolumeNotFound):
		code = codes.NotFound
	}
	if code == codes.OK {
		return toStatus(what, err)
	}
	return status.Errorf(code, "%s: %v", what, err)
}

// Run serves CSI on the endpoint until ctx ends, then stops gracefully.
func (c *Controller) Run(ctx context.Context) error {
	defer c.prov.Close()
	sock, _ := (&Options{Endpoint: c.opts.Endpoint}).socketPath()
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale socket %q: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", sock, err)
	}
	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	csi.RegisterIdentityServer(srv, c)
	csi.RegisterControllerServer(srv, c)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	klog.InfoS("serving CSI controller", "driver", c.opts.DriverName, "version", Version, "endpoint", c.opts.Endpoint,
		"gcsEndpoint", c.opts.GCSEndpoint, "bucketNamePrefix", c.opts.BucketNamePrefix, "bucketLabelMarker", c.opts.BucketLabelMarker)
	var runErr error
	select {
	case err := <-errc:
		runErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		srv.Stop()
	}
	klog.InfoS("stopped serving CSI controller")
	return runErr
}
