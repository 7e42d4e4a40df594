package driver

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// stageRequest is a validated NodeStageVolumeRequest.
type stageRequest struct {
	volumeID    string
	stagingPath string
	volume      *mounter.Volume
	attrs       map[string]string
	secrets     map[string]string
}

// publishRequest is a validated NodePublishVolumeRequest.
type publishRequest struct {
	volumeID    string
	targetPath  string
	stagingPath string // "" for inline volumes
	ephemeral   bool
	readOnly    bool
	// singleWriter: SINGLE_NODE_SINGLE_WRITER, published at one target only.
	singleWriter bool
	volume       *mounter.Volume
	attrs        map[string]string
	secrets      map[string]string
}

func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

func parseStage(req *csi.NodeStageVolumeRequest) (*stageRequest, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	path, err := cleanPath("staging_target_path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	v, err := parseVolume(req.GetVolumeId(), req.GetVolumeContext(), req.GetVolumeCapability(), false)
	if err != nil {
		return nil, err
	}
	return &stageRequest{volumeID: req.GetVolumeId(), stagingPath: path, volume: v, attrs: req.GetVolumeContext(), secrets: req.GetSecrets()}, nil
}

func parsePublish(req *csi.NodePublishVolumeRequest) (*publishRequest, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	target, err := cleanPath("target_path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	r := &publishRequest{volumeID: req.GetVolumeId(), targetPath: target, readOnly: req.GetReadonly(), attrs: req.GetVolumeContext(), secrets: req.GetSecrets()}
	r.ephemeral = req.GetVolumeContext()[mounter.AttrEphemeral] == "true"
	r.singleWriter = req.GetVolumeCapability().GetAccessMode().GetMode() == csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	if !r.ephemeral {
		if r.stagingPath, err = cleanPath("staging_target_path", req.GetStagingTargetPath()); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "%s (persistent volumes are staged first: this driver has STAGE_UNSTAGE_VOLUME)", status.Convert(err).Message())
		}
	}
	if r.volume, err = parseVolume(req.GetVolumeId(), req.GetVolumeContext(), req.GetVolumeCapability(), r.ephemeral); err != nil {
		return nil, err
	}
	return r, nil
}

// cleanPath requires an absolute, clean path.
func cleanPath(field, p string) (string, error) {
	if p == "" {
		return "", invalid("%s is required", field)
	}
	if !filepath.IsAbs(p) || strings.Contains(p, "\x00") {
		return "", invalid("%s=%q: want an absolute path", field, p)
	}
	if strings.Trim(p, "/") == "" {
		return "", invalid("%s=%q: want a directory below the root", field, p)
	}
	if filepath.Clean(p) != strings.TrimSuffix(p, "/") || slices.Contains(strings.Split(p, "/"), "..") {
		return "", invalid("%s=%q: want a clean path without '.' or '..' segments", field, p)
	}
	return filepath.Clean(p), nil
}

var readerOnly = []csi.VolumeCapability_AccessMode_Mode{
	csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY,
	csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY,
}

// parseVolume turns the volume identity, volume_context and capability into
// a validated Volume. Fields are checked in a fixed order: capability, then
// identity, then attributes (sorted by name), then mount flags, then the
// mount group.
func parseVolume(volumeID string, attrs map[string]string, vc *csi.VolumeCapability, ephemeral bool) (*mounter.Volume, error) {
	if err := checkCapability(vc); err != nil {
		return nil, err
	}
	var (
		v   *mounter.Volume
		err error
	)
	if ephemeral {
		bucket := attrs[mounter.AttrBucketName]
		if bucket == "" {
			return nil, invalid("volume_context.bucketName is required for inline (ephemeral) volumes")
		}
		v, err = mounter.NewVolume(bucket, "volume_context.bucketName")
	} else {
		bucket, dir, _ := strings.Cut(volumeID, "/")
		if v, err = mounter.NewVolume(bucket, "volume_id"); err == nil && dir != "" {
			err = v.SetOnlyDir(dir, "volume_id")
		}
		if err != nil {
			err = fmt.Errorf("%w (want \"bucket\" or \"bucket/dir\")", err)
		}
	}
	if err != nil {
		return nil, invalid("%v", err)
	}
	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		if err := v.SetAttribute(k, attrs[k]); err != nil {
			return nil, invalid("%v", err)
		}
	}
	mnt := vc.GetMount()
	for _, flags := range mnt.GetMountFlags() {
		for _, opt := range strings.Split(flags, ",") {
			if err := v.SetMountOption(strings.TrimSpace(opt), "volume_capability.mount.mount_flags"); err != nil {
				return nil, invalid("%v", err)
			}
		}
	}
	if g := mnt.GetVolumeMountGroup(); g != "" {
		if err := v.SetMountGroup(g, "volume_capability.mount.volume_mount_group"); err != nil {
			return nil, invalid("%v", err)
		}
	}
	if slices.Contains(readerOnly, vc.GetAccessMode().GetMode()) {
		v.SetReadOnly()
	}
	return v, nil
}

func checkCapability(vc *csi.VolumeCapability) error {
	if vc == nil {
		return invalid("volume_capability is required")
	}
	if vc.GetBlock() != nil {
		return invalid("volume_capability.block: block volumes are not supported; use access_type mount")
	}
	if vc.GetMount() == nil {
		return invalid("volume_capability.mount is required")
	}
	switch fs := vc.GetMount().GetFsType(); fs {
	case "", "fuse", "gcsfuse", mounter.FUSEType:
	default:
		return invalid("volume_capability.mount.fs_type=%q: not supported; leave it empty (the volume is always %s)", fs, mounter.FUSEType)
	}
	mode := vc.GetAccessMode().GetMode()
	if mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return invalid("volume_capability.access_mode is required")
	}
	if _, ok := csi.VolumeCapability_AccessMode_Mode_name[int32(mode)]; !ok {
		return invalid("volume_capability.access_mode=%d: unknown mode", mode)
	}
	return nil
}
