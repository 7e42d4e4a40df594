package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// TestKubeletRegistration talks to the driver's registration socket the way
// kubelet's plugin watcher does, and runs the exec liveness probe.
func TestKubeletRegistration(t *testing.T) {
	bin, gcsfuse := binaries(t)
	dir, err := os.MkdirTemp("", "reg")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	regDir := filepath.Join(dir, "plugins_registry")
	if err := os.MkdirAll(regDir, 0o750); err != nil {
		t.Fatal(err)
	}
	hostSocket := "/var/lib/kubelet/plugins/gcsfuse-csi.github.io/csi.sock"
	sock := filepath.Join(dir, "csi.sock")
	drv, err := harness.StartDriver(bin, sock, filepath.Join(dir, "driver.log"),
		"--gcsfuse="+gcsfuse, "--state-dir="+filepath.Join(dir, "state"), "--kubelet-dir="+dir, "--node-id=n1",
		"--registration-dir="+regDir, "--kubelet-registration-path="+hostSocket)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			drv.Stop()
		}
	})

	regSock := filepath.Join(regDir, "gcsfuse-csi.github.io-reg.sock")
	conn, err := grpc.NewClient("unix://"+regSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := registerapi.NewRegistrationClient(conn)
	info, err := client.GetInfo(ctx, &registerapi.InfoRequest{})
	if err != nil {
		t.Fatalf("GetInfo on %s: %v", regSock, err)
	}
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "gcsfuse-csi.github.io" || info.GetEndpoint() != hostSocket ||
		len(info.GetSupportedVersions()) != 1 || info.GetSupportedVersions()[0] != "1.0.0" {
		t.Errorf("GetInfo = %+v; want CSIPlugin gcsfuse-csi.github.io at %s, versions [1.0.0]", info, hostSocket)
	}
	if _, err := client.NotifyRegistrationStatus(ctx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Errorf("NotifyRegistrationStatus: %v", err)
	}

	probe := func() error {
		return exec.Command(bin, "probe", "--endpoint=unix://"+sock, "--timeout=2s").Run()
	}
	if err := probe(); err != nil {
		t.Errorf("probe of a ready driver: %v", err)
	}
	if err := drv.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped = true
	if err := probe(); err == nil {
		t.Error("probe of a stopped driver exited 0")
	}
	// Left in place so a restart does not make kubelet deregister the driver.
	if _, err := os.Stat(regSock); err != nil {
		t.Errorf("registration socket removed at stop: %v", err)
	}
}
