package mounter

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// FUSEType is the filesystem type of every mount this driver makes.
const FUSEType = "fuse.gcsfuse"

// FUSE performs the one privileged step: it opens /dev/fuse and mounts the new
// connection at target. The returned file is the connection; whoever serves
// it is the FUSE daemon.
type FUSE interface {
	Mount(source, target string, kernelOptions []string) (*os.File, error)
}

// KernelFUSE is the real FUSE implementation: open(2) + mount(2).
type KernelFUSE struct{}

// Mount implements FUSE. The mount is always nosuid and nodev, lets every uid
// in (allow_other: pods run as other users than the driver), and has the
// kernel enforce the modes gcsfuse reports (default_permissions), so uid,
// gid, fileMode and dirMode mean what they say.
func (KernelFUSE) Mount(source, target string, kernelOptions []string) (*os.File, error) {
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	dev := os.NewFile(uintptr(fd), "/dev/fuse")
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	for _, o := range kernelOptions {
		switch o {
		case "ro":
			flags |= unix.MS_RDONLY
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "noatime":
			flags |= unix.MS_NOATIME
		}
	}
	data := fmt.Sprintf("fd=%d,rootmode=40000,user_id=0,group_id=0,allow_other,default_permissions", fd)
	if err := unix.Mount(source, target, FUSEType, flags, data); err != nil {
		dev.Close()
		return nil, fmt.Errorf("mount(2) %s at %q: %w", FUSEType, target, err)
	}
	return dev, nil
}
