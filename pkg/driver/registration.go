package driver

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// registrar serves kubelet's plugin registration API, the job of the
// csi-node-driver-registrar sidecar: kubelet finds <name>-reg.sock in its
// plugins_registry dir, asks GetInfo, and then calls the CSI socket at
// endpoint (a path on the host).
type registrar struct {
	registerapi.UnimplementedRegistrationServer
	name, endpoint string
}

func (r *registrar) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              r.name,
		Endpoint:          r.endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

func (r *registrar) NotifyRegistrationStatus(_ context.Context, st *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	if st.GetPluginRegistered() {
		klog.InfoS("registered with kubelet", "driver", r.name, "endpoint", r.endpoint)
	} else {
		klog.ErrorS(nil, "kubelet refused the registration", "driver", r.name, "error", st.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}

// listenRegistration opens <dir>/<name>-reg.sock. The socket is left in place
// when the driver stops: removing it would make kubelet deregister the
// driver for the length of a restart or upgrade. A restart replaces it.
func listenRegistration(dir, name string) (net.Listener, error) {
	sock := filepath.Join(dir, name+"-reg.sock")
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		return nil, fmt.Errorf("remove stale registration socket %q: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("listen on registration socket %q: %w", sock, err)
	}
	lis.(*net.UnixListener).SetUnlinkOnClose(false)
	return lis, nil
}

func (d *Driver) registrationServer() *grpc.Server {
	srv := grpc.NewServer(grpc.UnaryInterceptor(logCalls))
	registerapi.RegisterRegistrationServer(srv, &registrar{name: d.opts.DriverName, endpoint: d.opts.KubeletRegistrationPath})
	return srv
}
