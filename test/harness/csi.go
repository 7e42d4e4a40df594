package harness

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
)

// MountCapability is a mount volume capability with an access mode, mount
// flags and an optional volume_mount_group (fsGroup).
func MountCapability(mode csi.VolumeCapability_AccessMode_Mode, group string, flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags, VolumeMountGroup: group}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
	}
}

// RWX is the access mode most tests use.
const RWX = csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
