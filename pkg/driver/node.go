package driver

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// inlineDir (under the state dir) holds the shared mounts of inline volumes.
const inlineDir = "inline"

var nodeCapabilities = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	capVolumeCondition,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
}

// NodeGetCapabilities lists what the node service implements.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	caps := make([]*csi.NodeServiceCapability, 0, len(nodeCapabilities))
	for _, c := range nodeCapabilities {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo returns the node id; buckets are reachable from every node.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.opts.NodeID}, nil
}

// NodeStageVolume mounts a persistent volume once per node at the staging
// path, served by one gcsfuse that every pod of the node shares.
func (d *Driver) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	r, err := parseStage(req)
	if err != nil {
		return nil, err
	}
	if err := d.checkNodePath("staging_target_path", r.stagingPath); err != nil {
		return nil, err
	}
	if !d.volumeLocks.TryAcquire(r.volumeID) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", r.volumeID)
	}
	defer d.volumeLocks.Release(r.volumeID)
	creds, deferred, err := d.resolveCredentials(r.volume, r.secrets, r.attrs, false)
	if err != nil {
		return nil, err
	}
	if deferred {
		// Each publish brings the credentials and mounts a session per
		// identity: nothing to mount at the staging path.
		klog.V(2).InfoS("nothing to stage: the volume's credentials come with each publish", "volume", r.volumeID, "auth", r.volume.Auth.Mode)
		return &csi.NodeStageVolumeResponse{}, nil
	}
	r.volume.Credentials = creds
	if err := d.mounter.EnsureMounted(ctx, r.stagingPath, r.volume); err != nil {
		return nil, toStatus("stage volume "+r.volumeID, err)
	}
	if creds.Mode == auth.ModeSecret {
		if err := d.stageCreds.remember(r.stagingPath, creds); err != nil {
			return nil, toStatus("stage volume "+r.volumeID, err)
		}
	}
	return &csi.NodeStageVolumeResponse{}, nil
}

// NodeUnstageVolume unmounts the staging path and stops its gcsfuse.
func (d *Driver) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	path, err := cleanPath("staging_target_path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	if err := d.checkNodePath("staging_target_path", path); err != nil {
		return nil, err
	}
	if !d.volumeLocks.TryAcquire(req.GetVolumeId()) {
		return nil, status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", req.GetVolumeId())
	}
	defer d.volumeLocks.Release(req.GetVolumeId())
	// Stopping gcsfuse under a pod that still uses it would lose its
	// unflushed writes: refuse until every target is unpublished.
	if binds, err := d.mounter.Binds(path); err != nil {
		return nil, toStatus("unstage volume "+req.GetVolumeId(), err)
	} else if len(binds) > 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q is still published at %d target(s), e.g. %q; unpublish them first", req.GetVolumeId(), len(binds), binds[0])
	}
	if err := d.mounter.Teardown(ctx, path); err != nil {
		return nil, toStatus("unstage volume "+req.GetVolumeId(), err)
	}
	d.stageCreds.forget(path)
	return &csi.NodeUnstageVolumeResponse{}, nil
}

// NodePublishVolume bind-mounts a staged volume, or an inline volume's
// shared mount, into the pod's target path.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	r, err := parsePublish(req)
	if err != nil {
		return nil, err
	}
	if err := d.checkNodePath("target_path", r.targetPath); err != nil {
		return nil, err
	}
	if r.stagingPath != "" {
		if err := d.checkNodePath("staging_target_path", r.stagingPath); err != nil {
			return nil, err
		}
	}
	if !d.targetLocks.TryAcquire(r.targetPath) {
		return nil, status.Errorf(codes.Aborted, "an operation on target %q is already in progress", r.targetPath)
	}
	defer d.targetLocks.Release(r.targetPath)
	creds, deferred, err := d.resolveCredentials(r.volume, r.secrets, r.attrs, true)
	if err != nil {
		return nil, err
	}
	r.volume.Credentials = creds
	switch {
	case r.ephemeral && deferred:
		return nil, invalid("volume_context.auth=%s: an inline volume's key comes from its nodePublishSecretRef, and the request has no secrets", auth.ModeSecret)
	case r.ephemeral, ownSession(creds, len(r.secrets) > 0):
		err = d.publishShared(ctx, r)
	default:
		err = d.publishStaged(ctx, r, deferred)
	}
	if err != nil {
		return nil, toStatus("publish volume "+r.volumeID, err)
	}
	return &csi.NodePublishVolumeResponse{}, nil
}

func (d *Driver) publishStaged(ctx context.Context, r *publishRequest, deferred bool) error {
	state, mp, err := d.mounter.Inspect(r.stagingPath)
	if err != nil {
		return err
	}
	want := mounter.Source(r.volume.Bucket, mounter.SessionID(r.stagingPath, r.volume))
	switch {
	case state != mounter.NotMounted && mp.Device != want:
		return status.Errorf(codes.FailedPrecondition, "volume %q is staged at %q with other options than this publish asks for (for example another fsGroup or mount options)", r.volumeID, r.stagingPath)
	case state != mounter.Mounted:
		// Its gcsfuse died (or its mounter restarted), or an earlier
		// re-mount failed half-way. The request has everything the stage
		// had, so stage here: for a running pod kubelet retries
		// NodePublish, never NodeStage.
		// A volume staged with nodeStageSecretRef mounts again with the
		// key it was staged with: the publish has none.
		stageCreds, err := d.stageCreds.lookup(r.stagingPath)
		switch {
		case err != nil:
			return err
		case stageCreds != nil:
			r.volume.Credentials = stageCreds
		case deferred:
			return status.Errorf(codes.FailedPrecondition, "volume %q has auth=%s but neither NodeStage nor this publish brought a key: set nodePublishSecretRef (or nodeStageSecretRef) to a Secret with the key %q", r.volumeID, auth.ModeSecret, SecretKey)
		}
		if !d.volumeLocks.TryAcquire(r.volumeID) {
			return status.Errorf(codes.Aborted, "an operation on volume %q is already in progress", r.volumeID)
		}
		klog.InfoS("staged mount is "+state.String()+"; mounting it for this publish", "volume", r.volumeID, "staging", r.stagingPath)
		err = d.mounter.EnsureMounted(ctx, r.stagingPath, r.volume)
		d.volumeLocks.Release(r.volumeID)
		if err != nil {
			return fmt.Errorf("stage %q for this publish: %w", r.stagingPath, err)
		}
	}
	if r.singleWriter {
		// One target only. The staging path's lock makes check-then-bind
		// atomic against a concurrent publish to another target.
		unlock := d.sessionLocks.Lock(r.stagingPath)
		defer unlock()
		binds, err := d.mounter.Binds(r.stagingPath)
		if err != nil {
			return err
		}
		for _, p := range binds {
			if p != r.targetPath {
				return status.Errorf(codes.FailedPrecondition, "volume %q has access mode SINGLE_NODE_SINGLE_WRITER and is already published at %q", r.volumeID, p)
			}
		}
	}
	return d.mounter.Bind(r.stagingPath, r.targetPath, r.readOnly)
}

// publishShared mounts (or reuses) the one gcsfuse serving this bucket with
// these options and this identity, then binds it into the target: inline
// volumes, and volumes whose credentials come with the publish. The session
// lock covers both steps so a concurrent unpublish cannot tear the session
// down in between.
func (d *Driver) publishShared(ctx context.Context, r *publishRequest) error {
	mp := d.sharedMountPoint(r.volume)
	unlock := d.sessionLocks.Lock(mp)
	defer unlock()
	if err := d.mounter.EnsureMounted(ctx, mp, r.volume); err != nil {
		return err
	}
	if r.volume.Credentials.Mode == auth.ModeWorkloadIdentity {
		// kubelet republishes (requiresRepublish) with a renewed token.
		if err := d.mounter.Refresh(ctx, mp, r.volume); err != nil {
			return err
		}
	}
	if err := d.mounter.Bind(mp, r.targetPath, r.readOnly); err != nil {
		d.releaseSession(ctx, mp)
		return err
	}
	return nil
}

// NodeUnpublishVolume removes the target's bind mount; the last target of an
// inline session also stops its gcsfuse.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	target, err := cleanPath("target_path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	if err := d.checkNodePath("target_path", target); err != nil {
		return nil, err
	}
	if !d.targetLocks.TryAcquire(target) {
		return nil, status.Errorf(codes.Aborted, "an operation on target %q is already in progress", target)
	}
	defer d.targetLocks.Release(target)
	source, err := d.mounter.Unbind(target)
	if err != nil {
		return nil, toStatus("unpublish volume "+req.GetVolumeId(), err)
	}
	if source == "" {
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	mp, inline, err := d.mounter.SessionMount(source, filepath.Join(d.opts.StateDir, inlineDir))
	if err != nil {
		return nil, toStatus("unpublish volume "+req.GetVolumeId(), err)
	}
	if inline {
		unlock := d.sessionLocks.Lock(mp)
		defer unlock()
		if err := d.releaseSession(ctx, mp); err != nil {
			return nil, toStatus("unpublish volume "+req.GetVolumeId(), err)
		}
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// releaseSession tears an inline session down once no target uses it.
// The caller holds the session lock.
func (d *Driver) releaseSession(ctx context.Context, mp string) error {
	binds, err := d.mounter.Binds(mp)
	if err != nil || len(binds) > 0 {
		return err
	}
	klog.V(2).InfoS("last user of inline session gone; unmounting", "path", mp)
	return d.mounter.Teardown(ctx, mp)
}
