package driver

import (
	"context"
	"errors"
	"path/filepath"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// capVolumeCondition is VOLUME_CONDITION, the capability that tells kubelet
// (v1.35, CSIVolumeHealth gate) to read NodeGetVolumeStats.volume_condition.
// CSI v1.13 removed both names from its Go types, not from the wire; we
// serve kubelet what it reads, and NodeGetVolumeHealth for newer COs.
const capVolumeCondition csi.NodeServiceCapability_RPC_Type = 4

// Wire numbers of the removed fields: NodeGetVolumeStatsResponse.
// volume_condition = 2, VolumeCondition{abnormal = 1, message = 2}.
const (
	fieldVolumeCondition = 2
	fieldAbnormal        = 1
	fieldMessage         = 2
)

// NodeGetVolumeStats reports what statfs(2) on the mount says (gcsfuse
// reports a fixed, very large capacity and nothing used: a bucket has no
// size) and the volume's condition: abnormal, with the reason, when its
// gcsfuse is dead, stopped or unreachable.
func (d *Driver) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	if req.GetVolumeId() == "" {
		return nil, invalid("volume_id is required")
	}
	if req.GetVolumePath() == "" {
		return nil, invalid("volume_path is required")
	}
	h, err := d.health(ctx, "volume_path", req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	resp := &csi.NodeGetVolumeStatsResponse{}
	if u := h.Usage; u.Valid {
		resp.Usage = []*csi.VolumeUsage{
			{Unit: csi.VolumeUsage_BYTES, Total: u.TotalBytes, Available: u.AvailableBytes, Used: u.UsedBytes},
			{Unit: csi.VolumeUsage_INODES, Total: u.TotalInodes, Available: u.FreeInodes, Used: u.UsedInodes},
		}
	} else {
		// Kubelet rejects a response without usage; a dead mount has none
		// to give, so say "unknown" with zeros and let the condition speak.
		resp.Usage = []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES}, {Unit: csi.VolumeUsage_INODES}}
	}
	setVolumeCondition(resp, h.Abnormal, h.Message)
	if h.Abnormal {
		klog.InfoS("volume is abnormal", "volume", req.GetVolumeId(), "path", req.GetVolumePath(), "condition", h.Message)
	}
	return resp, nil
}

// NodeGetVolumeHealth reports INACCESSIBLE with the reason for each dead
// mount of the volume: at the paths given, or, when none is given, every
// mount of the volume's bucket on this node.
func (d *Driver) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	id := req.GetVolumeId()
	if id == "" {
		return nil, invalid("volume_id is required")
	}
	type target struct{ field, path string }
	var targets []target
	for _, t := range []target{{"volume_publish_path", req.GetVolumePublishPath()}, {"staging_target_path", req.GetStagingTargetPath()}} {
		if t.path != "" {
			if _, err := cleanPath(t.field, t.path); err != nil {
				return nil, err
			}
			targets = append(targets, t)
		}
	}
	if len(targets) == 0 {
		bucket, _, _ := strings.Cut(id, "/")
		paths, err := d.mounter.BucketMounts(bucket)
		if err != nil {
			return nil, toStatus("volume health "+id, err)
		}
		for _, p := range paths {
			targets = append(targets, target{"", p})
		}
	}
	vh := &csi.VolumeHealth{VolumeId: id}
	var dead []string
	for _, t := range targets {
		h, err := d.health(ctx, t.field, t.path)
		if t.field == "" && status.Code(err) == codes.NotFound {
			continue // unmounted since it was listed
		}
		if err != nil {
			return nil, err
		}
		if h.Abnormal {
			dead = append(dead, t.path+": "+h.Message)
		}
	}
	if len(dead) > 0 {
		// One entry per (status, reason), as the spec asks.
		vh.HealthStatuses = []*csi.VolumeHealth_VolumeHealthEntry{{
			Status:  csi.VolumeHealthErrorType_INACCESSIBLE,
			Reason:  "GCSFuseNotServing",
			Message: strings.Join(dead, "; "),
		}}
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: vh}, nil
}

// health checks the mount at path; a path without a mount of this driver
// (including a relative one, which never is) is NotFound.
func (d *Driver) health(ctx context.Context, field, path string) (mounter.Health, error) {
	if !filepath.IsAbs(path) {
		return mounter.Health{}, status.Errorf(codes.NotFound, "%s=%q: no volume of this driver is mounted there (not an absolute path)", field, path)
	}
	if field != "" {
		if err := d.checkNodePath(field, filepath.Clean(path)); err != nil {
			return mounter.Health{}, status.Errorf(codes.NotFound, "no volume of this driver is mounted there: %s", status.Convert(err).Message())
		}
	}
	h, err := d.mounter.Health(ctx, filepath.Clean(path))
	switch {
	case errors.Is(err, mounter.ErrNotMounted), errors.Is(err, mounter.ErrNotOurs):
		return h, status.Errorf(codes.NotFound, "%s=%q: no volume of this driver is mounted there: %v", field, path, err)
	case err != nil:
		return h, toStatus("volume stats", err)
	}
	return h, nil
}

// setVolumeCondition appends volume_condition to resp as unknown fields.
func setVolumeCondition(resp *csi.NodeGetVolumeStatsResponse, abnormal bool, message string) {
	var cond []byte
	cond = protowire.AppendTag(cond, fieldAbnormal, protowire.VarintType)
	cond = protowire.AppendVarint(cond, protowire.EncodeBool(abnormal))
	cond = protowire.AppendTag(cond, fieldMessage, protowire.BytesType)
	// A proto3 string must be UTF-8, or kubelet cannot decode the answer.
	cond = protowire.AppendString(cond, strings.ToValidUTF8(message, "\uFFFD"))
	var b []byte
	b = protowire.AppendTag(b, fieldVolumeCondition, protowire.BytesType)
	b = protowire.AppendBytes(b, cond)
	resp.ProtoReflect().SetUnknown(b)
}

// VolumeConditionOf decodes the volume_condition of a NodeGetVolumeStats
// response (ok false when there is none), as kubelet reads it.
func VolumeConditionOf(resp *csi.NodeGetVolumeStatsResponse) (abnormal bool, message string, ok bool) {
	b := resp.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, "", false
		}
		b = b[n:]
		if num != fieldVolumeCondition || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false, "", false
			}
			b = b[n:]
			continue
		}
		cond, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false, "", false
		}
		b = b[n:]
		ok = true
		for len(cond) > 0 {
			num, typ, n := protowire.ConsumeTag(cond)
			if n < 0 {
				return false, "", false
			}
			cond = cond[n:]
			switch {
			case num == fieldAbnormal && typ == protowire.VarintType:
				v, n := protowire.ConsumeVarint(cond)
				if n < 0 {
					return false, "", false
				}
				abnormal, cond = protowire.DecodeBool(v), cond[n:]
			case num == fieldMessage && typ == protowire.BytesType:
				v, n := protowire.ConsumeString(cond)
				if n < 0 {
					return false, "", false
				}
				message, cond = v, cond[n:]
			default:
				if n = protowire.ConsumeFieldValue(num, typ, cond); n < 0 {
					return false, "", false
				}
				cond = cond[n:]
			}
		}
	}
	return abnormal, message, ok
}
