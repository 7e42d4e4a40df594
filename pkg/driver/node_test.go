package driver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter/fake"
)

type checkFunc func(ctx context.Context, bucket, dir string, c *auth.Credentials) error

func (f checkFunc) Check(ctx context.Context, bucket, dir string, c *auth.Credentials) error {
	return f(ctx, bucket, dir, c)
}

type env struct {
	d      *Driver
	fm     *mount.FakeMounter
	daemon *fake.Daemon
	dir    string
	check  error     // returned by the bucket check
	now    time.Time // the crash-loop backoff's clock
}

// newEnv returns a driver on a fresh FakeMounter and fake daemon.
func newEnv(t *testing.T) *env {
	t.Helper()
	e := newEnvAt(t, &env{fm: mount.NewFakeMounter(nil), daemon: fake.NewDaemon(), dir: t.TempDir(), now: time.Now()})
	e.daemon.Now = func() time.Time { return e.now }
	return e
}

// newEnvAt returns a new driver on prev's mount table, daemon and state
// dir: the driver process restarted.
func newEnvAt(t *testing.T, prev *env) *env {
	t.Helper()
	e := &env{fm: prev.fm, daemon: prev.daemon, dir: prev.dir, now: prev.now}
	opts := Options{
		Endpoint: "unix:///unused.sock", DriverName: DefaultDriverName, NodeID: "node-1",
		StateDir: filepath.Join(e.dir, "state"), KubeletDir: e.dir, GCSFuseBinary: "gcsfuse", MaxRetryAttempts: 3, MountTimeout: 2 * time.Second,
	}
	d, err := New(opts, Deps{
		Mount:  e.fm,
		FUSE:   &fake.FUSE{Mounter: e.fm},
		Daemon: e.daemon,
		Check:  checkFunc(func(context.Context, string, string, *auth.Credentials) error { return e.check }),
		Ready:  func() error { return nil },
		Clock:  func() time.Time { return e.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	return e
}

func (e *env) path(name string) string { return filepath.Join(e.dir, name) }

func capability(flags ...string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{MountFlags: flags}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
	}
}

func (e *env) stage(vol, path string, flags ...string) error {
	_, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: path, VolumeCapability: capability(flags...)})
	return err
}

func (e *env) publish(vol, staging, target string, ro bool, flags ...string) error {
	_, err := e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: vol, StagingTargetPath: staging, TargetPath: target, Readonly: ro, VolumeCapability: capability(flags...)})
	return err
}

func (e *env) publishInline(target, bucket string, attrs ...string) error {
	ctx := map[string]string{"csi.storage.k8s.io/ephemeral": "true", "bucketName": bucket}
	for i := 0; i+1 < len(attrs); i += 2 {
		ctx[attrs[i]] = attrs[i+1]
	}
	_, err := e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: "csi-" + filepath.Base(target), TargetPath: target, VolumeContext: ctx, VolumeCapability: capability()})
	return err
}

func (e *env) unpublish(target string) error {
	_, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{VolumeId: "v", TargetPath: target})
	return err
}

func (e *env) unstage(vol, path string) error {
	_, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: path})
	return err
}

// mounts returns "source path" for every mount in the fake table.
func (e *env) mounts() []string {
	var out []string
	for _, mp := range e.fm.MountPoints {
		out = append(out, mp.Device+" "+mp.Path)
	}
	return out
}

func wantCode(t *testing.T, err error, code codes.Code, substr string) {
	t.Helper()
	st := status.Convert(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), substr) {
		t.Fatalf("got %v, want %s containing %q", err, code, substr)
	}
}

func TestStagePublishUnpublishUnstage(t *testing.T) {
	e := newEnv(t)
	stage, t1, t2 := e.path("stage"), e.path("t1"), e.path("t2")
	if err := e.stage("bkt/sub", stage, "implicit-dirs"); err != nil {
		t.Fatal(err)
	}
	if err := e.stage("bkt/sub", stage, "implicit-dirs"); err != nil {
		t.Fatalf("second stage: %v", err)
	}
	for _, target := range []string{t1, t2, t1} {
		if err := e.publish("bkt/sub", stage, target, false, "implicit-dirs"); err != nil {
			t.Fatalf("publish %s: %v", target, err)
		}
	}
	if e.daemon.Starts != 1 {
		t.Errorf("gcsfuse started %d times for one staged volume, want 1", e.daemon.Starts)
	}
	s := e.daemon.Running
	for _, sess := range s {
		if got := strings.Join(sess.Args, " "); !strings.Contains(got, "--only-dir=sub") || !strings.Contains(got, "--implicit-dirs=true") {
			t.Errorf("gcsfuse args %q lack the volume's only-dir and flags", got)
		}
	}
	if n := len(e.fm.MountPoints); n != 3 {
		t.Fatalf("mounts %v, want the staging mount and two binds", e.mounts())
	}
	if err := e.unstage("bkt/sub", stage); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("unstage while published: %v, want FailedPrecondition", err)
	}
	for _, target := range []string{t1, t2, t2} {
		if err := e.unpublish(target); err != nil {
			t.Fatalf("unpublish %s: %v", target, err)
		}
	}
	if err := e.unstage("bkt/sub", stage); err != nil {
		t.Fatal(err)
	}
	if err := e.unstage("bkt/sub", stage); err != nil {
		t.Fatalf("second unstage: %v", err)
	}
	if len(e.fm.MountPoints) != 0 || e.daemon.Count() != 0 || e.daemon.Stops != 1 {
		t.Errorf("left behind: mounts %v, %d sessions, %d stops", e.mounts(), e.daemon.Count(), e.daemon.Stops)
	}
}

func TestInlineVolumesShareOneGcsfuse(t *testing.T) {
	e := newEnv(t)
	a, b, c := e.path("a"), e.path("b"), e.path("c")
	if err := e.publishInline(a, "bkt"); err != nil {
		t.Fatal(err)
	}
	if err := e.publishInline(b, "bkt"); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Starts != 1 {
		t.Fatalf("two inline volumes with one bucket and options started %d gcsfuse, want 1", e.daemon.Starts)
	}
	if err := e.publishInline(c, "bkt", "implicitDirs", "true"); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Starts != 2 {
		t.Fatalf("other options should get their own gcsfuse: %d starts", e.daemon.Starts)
	}
	if err := e.unpublish(a); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Stops != 0 {
		t.Fatal("session stopped while b still uses it")
	}
	if err := e.unpublish(b); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Stops != 1 || e.daemon.Count() != 1 {
		t.Fatalf("after the last user left: %d stops, %d running; want 1, 1", e.daemon.Stops, e.daemon.Count())
	}
	if err := e.unpublish(c); err != nil {
		t.Fatal(err)
	}
	if len(e.fm.MountPoints) != 0 || e.daemon.Count() != 0 {
		t.Errorf("left behind: %v, %d sessions", e.mounts(), e.daemon.Count())
	}
}

func TestCorruptedMountsAreReplaced(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	// The bind mount reports ENOTCONN (its gcsfuse died): republish re-binds.
	e.fm.MountCheckErrors = map[string]error{target: syscall.ENOTCONN}
	e.fm.ResetLog()
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	log := e.fm.GetLog()
	if len(log) != 2 || log[0].Action != mount.FakeActionUnmount || log[1].Action != mount.FakeActionMount {
		t.Errorf("actions on a corrupted target: %+v, want unmount then mount", log)
	}
	// A dead staged mount is re-mounted by the next stage, with a new gcsfuse.
	if err := e.unpublish(target); err != nil {
		t.Fatal(err)
	}
	// A dead staged mount is re-mounted by the next publish (kubelet
	// retries NodePublish, not NodeStage, for a running pod), with a new
	// gcsfuse; the next stage then finds it healthy.
	e.fm.MountCheckErrors = map[string]error{stage: syscall.ENOTCONN}
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Errorf("publish on a dead staged mount: %v, want it re-mounted", err)
	}
	e.fm.MountCheckErrors = nil
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Starts != 2 || e.daemon.Stops != 1 || len(e.fm.MountPoints) != 2 {
		t.Errorf("re-mount by publish: %d starts, %d stops, mounts %v; want 2, 1, stage + target", e.daemon.Starts, e.daemon.Stops, e.mounts())
	}
	// A dead staged mount staged with other options is not re-mounted with
	// this publish's: that is a conflict for the CO to sort out.
	e.fm.MountCheckErrors = map[string]error{stage: syscall.ENOTCONN}
	if err := e.publish("bkt", stage, e.path("t3"), false, "uid=7"); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("publish with other options on a dead staged mount: %v, want FailedPrecondition", err)
	}
}

func TestUnmountFailure(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	e.fm.UnmountFunc = func(string) error { return errors.New("umount: target is busy") }
	err := e.unpublish(target)
	wantCode(t, err, codes.Internal, "target is busy")
	if !strings.Contains(status.Convert(err).Message(), target) {
		t.Errorf("message %q does not name the target", status.Convert(err).Message())
	}
	if len(e.fm.MountPoints) != 2 {
		t.Errorf("a failed unmount changed the table: %v", e.mounts())
	}
	wantCode(t, e.unstage("bkt", stage), codes.FailedPrecondition, "still published")
}

func TestOperationInFlight(t *testing.T) {
	e := newEnv(t)
	target, stage := e.path("t"), e.path("s")
	e.d.targetLocks.TryAcquire(target)
	wantCode(t, e.publish("bkt", stage, target, false), codes.Aborted, "already in progress")
	wantCode(t, e.unpublish(target), codes.Aborted, "already in progress")
	e.d.targetLocks.Release(target)
	e.d.volumeLocks.TryAcquire("bkt")
	wantCode(t, e.stage("bkt", stage), codes.Aborted, `volume "bkt"`)
	wantCode(t, e.unstage("bkt", stage), codes.Aborted, `volume "bkt"`)
	e.d.volumeLocks.Release("bkt")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatalf("after release: %v", err)
	}
}

func TestNeverTouchesForeignMounts(t *testing.T) {
	e := newEnv(t)
	target := e.path("t")
	if err := os.MkdirAll(target, 0o750); err != nil {
		t.Fatal(err)
	}
	_ = e.fm.Mount("tmpfs", target, "tmpfs", nil)
	wantCode(t, e.unpublish(target), codes.FailedPrecondition, "tmpfs mount")
	wantCode(t, e.unstage("bkt", target), codes.FailedPrecondition, "tmpfs mount")
	wantCode(t, e.publishInline(target, "bkt"), codes.FailedPrecondition, "tmpfs mount")
	// The inline session mounted for the failed publish is torn down again.
	if len(e.fm.MountPoints) != 1 || e.fm.MountPoints[0].Type != "tmpfs" || e.daemon.Count() != 0 {
		t.Errorf("foreign mount touched or session leaked: %v, %d sessions", e.mounts(), e.daemon.Count())
	}
}

func TestConflicts(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("s"), e.path("t")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.stage("bkt", stage, "uid=5"), codes.AlreadyExists, "other options")
	wantCode(t, e.publish("bkt", stage, target, false, "uid=5"), codes.FailedPrecondition, "other options")
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.publish("bkt", stage, target, true), codes.AlreadyExists, "readOnly=false")
}

func TestMountFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		check error
		exit  error
		code  codes.Code
		msg   string
	}{
		{"bucket missing", fmt.Errorf("list gs://nope/: %w", gcs.ErrNotFound), nil, codes.NotFound, "gs://nope"},
		{"no permission", fmt.Errorf("list: %w", gcs.ErrPermissionDenied), nil, codes.PermissionDenied, "permission denied"},
		{"rate limited", fmt.Errorf("list: %w", gcs.ErrExhausted), nil, codes.ResourceExhausted, "rate limited"},
		{"gcsfuse exits", nil, errors.New("gcsfuse exited (exit status 1): bad flag"), codes.Internal, "bad flag"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.check, e.daemon.ExitOnStart = tc.check, tc.exit
			wantCode(t, e.stage("nope", e.path("s")), tc.code, tc.msg)
			if len(e.fm.MountPoints) != 0 || e.daemon.Count() != 0 {
				t.Errorf("failed mount left %v, %d sessions", e.mounts(), e.daemon.Count())
			}
		})
	}
}

func TestInvalidRequests(t *testing.T) {
	e := newEnv(t)
	s, tp := e.path("s"), e.path("t")
	block := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	noMode := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}
	ext4 := &csi.VolumeCapability{AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER}}
	inline := func(kv ...string) map[string]string {
		m := map[string]string{"csi.storage.k8s.io/ephemeral": "true"}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	stageTests := []struct {
		req  *csi.NodeStageVolumeRequest
		want string
	}{
		{&csi.NodeStageVolumeRequest{StagingTargetPath: s, VolumeCapability: capability()}, "volume_id is required"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", VolumeCapability: capability()}, "staging_target_path is required"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: "rel/path", VolumeCapability: capability()}, "staging_target_path=\"rel/path\": want an absolute path"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s + "/../x", VolumeCapability: capability()}, "want a clean path"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s}, "volume_capability is required"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s, VolumeCapability: block}, "volume_capability.block"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s, VolumeCapability: noMode}, "volume_capability.access_mode is required"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s, VolumeCapability: ext4}, "volume_capability.mount.fs_type=\"ext4\""},
		{&csi.NodeStageVolumeRequest{VolumeId: "Bad_Bucket!", StagingTargetPath: s, VolumeCapability: capability()}, "volume_id: invalid bucket name"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt/../etc", StagingTargetPath: s, VolumeCapability: capability()}, "volume_id: only-dir=\"../etc\""},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s, VolumeCapability: capability("key-file=/k")}, "volume_capability.mount.mount_flags: mount option \"key-file\" is not allowed"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: s, VolumeCapability: capability(), VolumeContext: map[string]string{"tokenURL": "x"}}, "volume_context.tokenURL: unknown volume attribute"},
		{&csi.NodeStageVolumeRequest{VolumeId: "bkt/a", StagingTargetPath: s, VolumeCapability: capability(), VolumeContext: map[string]string{"onlyDir": "b"}}, "volume_context.onlyDir sets only-dir=b but volume_id already set it to a"},
	}
	for _, tc := range stageTests {
		t.Run("stage "+tc.want, func(t *testing.T) {
			_, err := e.d.NodeStageVolume(context.Background(), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.want)
		})
	}
	publishTests := []struct {
		req  *csi.NodePublishVolumeRequest
		want string
	}{
		{&csi.NodePublishVolumeRequest{TargetPath: tp, StagingTargetPath: s, VolumeCapability: capability()}, "volume_id is required"},
		{&csi.NodePublishVolumeRequest{VolumeId: "bkt", StagingTargetPath: s, VolumeCapability: capability()}, "target_path is required"},
		{&csi.NodePublishVolumeRequest{VolumeId: "bkt", TargetPath: tp, VolumeCapability: capability()}, "staging_target_path is required (persistent volumes are staged first"},
		{&csi.NodePublishVolumeRequest{VolumeId: "bkt", TargetPath: tp, StagingTargetPath: s}, "volume_capability is required"},
		{&csi.NodePublishVolumeRequest{VolumeId: "x", TargetPath: tp, VolumeCapability: capability(), VolumeContext: inline()}, "volume_context.bucketName is required for inline"},
		{&csi.NodePublishVolumeRequest{VolumeId: "x", TargetPath: tp, VolumeCapability: capability(), VolumeContext: inline("bucketName", "bkt", "uid", "1", "mountOptions", "uid=2")}, "volume_context.uid sets uid=1 but volume_context.mountOptions already set it to 2"},
		{&csi.NodePublishVolumeRequest{VolumeId: "x", TargetPath: tp, VolumeCapability: capability(), VolumeContext: inline("bucketName", "bkt", "fileMode", "rwx")}, "volume_context.fileMode: file-mode=\"rwx\""},
		{&csi.NodePublishVolumeRequest{VolumeId: "x", TargetPath: tp, VolumeCapability: capability(), VolumeContext: inline("bucketName", "bkt", "mountOptions", "prometheus-port=1")}, "volume_context.mountOptions: mount option \"prometheus-port\" is not allowed"},
	}
	for _, tc := range publishTests {
		t.Run("publish "+tc.want, func(t *testing.T) {
			_, err := e.d.NodePublishVolume(context.Background(), tc.req)
			wantCode(t, err, codes.InvalidArgument, tc.want)
		})
	}
	wantCode(t, func() error {
		_, err := e.d.NodeUnpublishVolume(context.Background(), &csi.NodeUnpublishVolumeRequest{TargetPath: tp})
		return err
	}(), codes.InvalidArgument, "volume_id is required")
	wantCode(t, func() error {
		_, err := e.d.NodeUnstageVolume(context.Background(), &csi.NodeUnstageVolumeRequest{VolumeId: "bkt"})
		return err
	}(), codes.InvalidArgument, "staging_target_path is required")
	if len(e.fm.MountPoints) != 0 || e.daemon.Starts != 0 {
		t.Errorf("rejected requests mounted something: %v", e.mounts())
	}
}

func TestSingleWriterPublishesOnce(t *testing.T) {
	e := newEnv(t)
	vc := capability()
	vc.AccessMode.Mode = csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER
	stage := e.path("s")
	if _, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	pub := func(target string) error {
		_, err := e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, TargetPath: target, VolumeCapability: vc})
		return err
	}
	if err := pub(e.path("t1")); err != nil {
		t.Fatal(err)
	}
	if err := pub(e.path("t1")); err != nil {
		t.Fatalf("republish at the same target: %v", err)
	}
	wantCode(t, pub(e.path("t2")), codes.FailedPrecondition, "already published at")
}

func TestReadOnlyAccessModeMountsReadOnly(t *testing.T) {
	e := newEnv(t)
	vc := capability()
	vc.AccessMode.Mode = csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	if _, err := e.d.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: e.path("s"), VolumeCapability: vc}); err != nil {
		t.Fatal(err)
	}
	if opts := e.fm.MountPoints[0].Opts; len(opts) != 1 || opts[0] != "ro" {
		t.Errorf("reader-only volume mounted with %v, want [ro]", opts)
	}
}

func TestCapabilitiesAndInfo(t *testing.T) {
	e := newEnv(t)
	resp, err := e.d.NodeGetCapabilities(context.Background(), &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range resp.GetCapabilities() {
		got = append(got, c.GetRpc().GetType().String())
	}
	// 4 is VOLUME_CONDITION, a name CSI v1.13 dropped from its Go types.
	if want := "STAGE_UNSTAGE_VOLUME VOLUME_MOUNT_GROUP SINGLE_NODE_MULTI_WRITER GET_VOLUME_STATS 4 GET_VOLUME_HEALTH"; strings.Join(got, " ") != want {
		t.Errorf("capabilities %v, want %s", got, want)
	}
	info, _ := e.d.NodeGetInfo(context.Background(), &csi.NodeGetInfoRequest{})
	if info.GetNodeId() != "node-1" {
		t.Errorf("node id %q", info.GetNodeId())
	}
	pi, _ := e.d.GetPluginInfo(context.Background(), &csi.GetPluginInfoRequest{})
	if pi.GetName() != DefaultDriverName || pi.GetVendorVersion() == "" {
		t.Errorf("plugin info %v", pi)
	}
	e.d.ready = func() error { return errors.New("/dev/fuse: no such file") }
	_, err = e.d.Probe(context.Background(), &csi.ProbeRequest{})
	wantCode(t, err, codes.FailedPrecondition, "/dev/fuse")
}

var _ mounter.BucketChecker = checkFunc(nil)
