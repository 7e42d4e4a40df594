package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

func TestSmoke(t *testing.T) {
	gcs, err := harness.StartFakeGCS([]fakestorage.Object{harness.Object("bkt", "a/b/deep.txt", "deep"), harness.Object("bkt", "hello.txt", "hello")})
	if err != nil {
		t.Fatal(err)
	}
	defer gcs.Stop()
	bin, _ := harness.Binary("gcsfuse-csi", "X")
	gf, _ := harness.Binary("gcsfuse", "Y")
	dir := t.TempDir()
	d, err := harness.StartDriver(bin, filepath.Join(dir, "csi.sock"), filepath.Join(dir, "driver.log"), "--gcsfuse="+gf, "--gcs-endpoint="+gcs.Endpoint, "--anonymous", "--atomic-rename=false", "--state-dir="+filepath.Join(dir, "state"), "--node-id=n1", "-v=5")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stage, target := filepath.Join(dir, "stage"), filepath.Join(dir, "target")
	os.MkdirAll(stage, 0o750)
	t0 := time.Now()
	_, err = d.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, VolumeCapability: harness.MountCapability(harness.RWX, "", "implicit-dirs")})
	t.Logf("stage %v err %v", time.Since(t0), err)
	t0 = time.Now()
	_, err = d.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, TargetPath: target, VolumeCapability: harness.MountCapability(harness.RWX, "", "implicit-dirs")})
	t.Logf("publish %v err %v", time.Since(t0), err)
	b, err := os.ReadFile(filepath.Join(target, "a/b/deep.txt"))
	t.Logf("read %q %v", b, err)
	m, _ := harness.FUSEMounts(dir)
	t.Logf("mounts %+v", m)
	_, err = d.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: "bkt", TargetPath: target})
	t.Logf("unpublish %v", err)
	_, err = d.Node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage})
	t.Logf("unstage %v", err)
	m, _ = harness.FUSEMounts(dir)
	p, z, _ := harness.Children(d.Pid(), "gcsfuse")
	t.Logf("mounts %+v children %v zombies %d", m, p, z)
	log, _ := os.ReadFile(filepath.Join(dir, "driver.log"))
	t.Logf("%s", log)
}
