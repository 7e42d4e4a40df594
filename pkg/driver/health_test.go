package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	mount "k8s.io/mount-utils"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

func (e *env) stats(vol, path string) (*csi.NodeGetVolumeStatsResponse, error) {
	return e.d.NodeGetVolumeStats(context.Background(), &csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: path})
}

// condition decodes the volume_condition after a wire round trip, as kubelet
// receives it.
func condition(t *testing.T, resp *csi.NodeGetVolumeStatsResponse) (bool, string) {
	t.Helper()
	b, err := proto.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	var got csi.NodeGetVolumeStatsResponse
	if err := proto.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	abnormal, msg, ok := VolumeConditionOf(&got)
	if !ok {
		t.Fatalf("no volume_condition in %x", b)
	}
	return abnormal, msg
}

func TestVolumeStatsAndCondition(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	resp, err := e.stats("bkt", target)
	if err != nil {
		t.Fatal(err)
	}
	if abnormal, msg := condition(t, resp); abnormal || !strings.Contains(msg, "answers") {
		t.Errorf("healthy volume: abnormal=%t %q", abnormal, msg)
	}
	if len(resp.GetUsage()) != 2 || resp.GetUsage()[0].GetUnit() != csi.VolumeUsage_BYTES || resp.GetUsage()[0].GetTotal() <= 0 {
		t.Errorf("usage %v: want bytes and inodes from statfs", resp.GetUsage())
	}

	// gcsfuse died: the mount answers ENOTCONN, the daemon knows why.
	e.daemon.Kill(e.sessionOf(t, stage), errors.New("signal: killed"))
	e.fm.MountCheckErrors = map[string]error{target: syscall.ENOTCONN, stage: syscall.ENOTCONN}
	resp, err = e.stats("bkt", target)
	if err != nil {
		t.Fatal(err)
	}
	abnormal, msg := condition(t, resp)
	if !abnormal || !strings.Contains(msg, "not connected") || !strings.Contains(msg, "signal: killed") {
		t.Errorf("dead volume: abnormal=%t %q; want abnormal, saying the mount is not connected and why gcsfuse exited", abnormal, msg)
	}
	if len(resp.GetUsage()) == 0 {
		t.Error("a dead volume's stats have no usage: kubelet rejects that")
	}
	health, err := e.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{VolumeId: "bkt"})
	if err != nil {
		t.Fatal(err)
	}
	hs := health.GetVolumeHealth().GetHealthStatuses()
	if len(hs) != 1 || hs[0].GetStatus() != csi.VolumeHealthErrorType_INACCESSIBLE || !strings.Contains(hs[0].GetMessage(), target) {
		t.Errorf("volume health %v: want one INACCESSIBLE entry naming %s", hs, target)
	}

	// The mounter is down but the mount answers: gcsfuse is alive.
	e.fm.MountCheckErrors = nil
	e.daemon.Unreachable = errors.New("mounter down: " + mounter.ErrDaemonUnavailable.Error())
	if resp, err = e.stats("bkt", target); err != nil {
		t.Fatal(err)
	}
	if abnormal, msg := condition(t, resp); abnormal {
		t.Errorf("mount answers, mounter unreachable: abnormal %q; want normal", msg)
	}
	e.daemon.Unreachable = nil

	// A hung gcsfuse: the check does not return.
	block := make(chan struct{})
	defer close(block)
	e.d.mounter = mounter.New(mounter.Config{StateDir: e.path("state"), CheckTimeout: 50 * time.Millisecond}, hungCheck{e.fm, target, block}, nil, e.daemon, nil)
	start := time.Now()
	if resp, err = e.stats("bkt", target); err != nil {
		t.Fatal(err)
	}
	if abnormal, msg := condition(t, resp); !abnormal || !strings.Contains(msg, "did not answer") || time.Since(start) > 5*time.Second {
		t.Errorf("hung volume: abnormal=%t %q after %s", abnormal, msg, time.Since(start))
	}
}

// hungCheck is a mounter whose check of one path never returns.
type hungCheck struct {
	mounterInterface
	path  string
	block chan struct{}
}

func (h hungCheck) IsLikelyNotMountPoint(p string) (bool, error) {
	if p == h.path {
		<-h.block
	}
	return h.mounterInterface.IsLikelyNotMountPoint(p)
}

func TestVolumeStatsErrors(t *testing.T) {
	e := newEnv(t)
	_, err := e.stats("", "/x")
	wantCode(t, err, codes.InvalidArgument, "volume_id")
	_, err = e.stats("bkt", "")
	wantCode(t, err, codes.InvalidArgument, "volume_path")
	_, err = e.stats("bkt", "some/path")
	wantCode(t, err, codes.NotFound, "volume_path")
	_, err = e.stats("bkt", e.path("nothing-here"))
	wantCode(t, err, codes.NotFound, "no volume of this driver")
	// A mount that is not ours is not reported on.
	if err := e.fm.Mount("tmpfs", e.path("tmp"), "tmpfs", nil); err != nil {
		t.Fatal(err)
	}
	_, err = e.stats("bkt", e.path("tmp"))
	wantCode(t, err, codes.NotFound, "tmpfs")
	_, err = e.d.NodeGetVolumeHealth(context.Background(), &csi.NodeGetVolumeHealthRequest{})
	wantCode(t, err, codes.InvalidArgument, "volume_id")
}

func TestCrashLoopIsBounded(t *testing.T) {
	e := newEnv(t)
	e.daemon.ExitOnStart = errors.New("exit status 1: bad config")
	target := e.path("t")
	if err := e.publishInline(target, "bkt"); err == nil {
		t.Fatal("publish with a gcsfuse that exits at start succeeded")
	}
	// An immediate retry does not start gcsfuse again.
	err := e.publishInline(target, "bkt")
	wantCode(t, err, codes.Unavailable, "next attempt in")
	if e.daemon.Starts != 1 {
		t.Errorf("%d starts after a retry inside the backoff, want 1", e.daemon.Starts)
	}
	// Each failure doubles the wait; after 5 in a row the error says so.
	for i := 0; i < 4; i++ {
		e.now = e.now.Add(10 * time.Minute)
		_ = e.publishInline(target, "bkt")
	}
	if e.daemon.Starts != 5 {
		t.Errorf("%d starts after 5 spaced attempts, want 5", e.daemon.Starts)
	}
	e.now = e.now.Add(10 * time.Second) // the 5th failure's delay is 16 s
	err = e.publishInline(target, "bkt")
	wantCode(t, err, codes.Unavailable, "failed 5 times in a row")
	if !strings.Contains(err.Error(), "bad config") || !strings.Contains(err.Error(), "fix the cause") {
		t.Errorf("give-up error %q: want the last failure and what to do", err)
	}
	// Once fixed, a retry after the delay mounts.
	e.daemon.ExitOnStart = nil
	e.now = e.now.Add(time.Minute)
	if err := e.publishInline(target, "bkt"); err != nil {
		t.Errorf("after the cause is fixed: %v", err)
	}
	if len(e.fm.MountPoints) != 2 {
		t.Errorf("mounts %v, want the session and the target", e.mounts())
	}
}

func TestReconcile(t *testing.T) {
	e := newEnv(t)
	stage, t1 := e.path("stage"), e.path("t1")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	if err := e.publish("bkt", stage, t1, false); err != nil {
		t.Fatal(err)
	}
	if err := e.publishInline(e.path("t2"), "kept"); err != nil {
		t.Fatal(err)
	}
	// An unpublish cut short by a kill: the bind is gone, the inline
	// session is not.
	if err := e.publishInline(e.path("t3"), "orphan"); err != nil {
		t.Fatal(err)
	}
	if err := e.fm.Unmount(e.path("t3")); err != nil {
		t.Fatal(err)
	}
	// A session the daemon runs without any mount (a stage cut short).
	if err := e.daemon.Start(context.Background(), mounter.Session{ID: "lost", Bucket: "b"}, devNull(t)); err != nil {
		t.Fatal(err)
	}
	before := e.daemon.Starts
	e.d.Reconcile(context.Background())
	got := strings.Join(e.mounts(), " ")
	for _, want := range []string{stage, t1, e.path("t2")} {
		if !strings.Contains(got, want) {
			t.Errorf("reconcile removed the healthy mount at %s: %v", want, got)
		}
	}
	if strings.Contains(got, "orphan:") {
		t.Errorf("reconcile kept the inline session nobody uses: %v", got)
	}
	if _, err := e.daemon.Status(context.Background(), "lost"); !errors.Is(err, mounter.ErrUnknownSession) {
		t.Errorf("the session without a mount is still hosted: %v", err)
	}
	if e.daemon.Starts != before || e.daemon.Count() != 2 {
		t.Errorf("reconcile started %d sessions, %d running; want none started and 2 running (stage, kept)", e.daemon.Starts-before, e.daemon.Count())
	}
}

type mounterInterface = mount.Interface

// sessionOf returns the session id of the mount at path.
func (e *env) sessionOf(t *testing.T, path string) string {
	t.Helper()
	for _, mp := range e.fm.MountPoints {
		if mp.Path == path {
			_, sid, _ := strings.Cut(mp.Device, ":")
			return sid
		}
	}
	t.Fatalf("nothing mounted at %s", path)
	return ""
}

func devNull(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A container that bind-mounts a directory above the state dir (a replaced
// driver pod whose /csi holds it, say) shows a copy of each inline session
// mount. The copy is not a user: the last unpublish still releases the
// session.
func TestSessionCopyIsNotAUser(t *testing.T) {
	e := newEnv(t)
	target := e.path("pod/volumes/kubernetes.io~csi/data/mount")
	if err := e.publishInline(target, "bkt"); err != nil {
		t.Fatal(err)
	}
	var session, source string
	for _, mp := range e.fm.MountPoints {
		if strings.Contains(mp.Path, "/inline/") {
			session, source = mp.Path, mp.Device
		}
	}
	copyPath := filepath.Join(e.path("csi"), "state", "inline", filepath.Base(session))
	if err := e.fm.Mount(source, copyPath, mounter.FUSEType, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.unpublish(target); err != nil {
		t.Fatal(err)
	}
	if e.daemon.Count() != 0 {
		t.Errorf("the inline session survived its last unpublish (%d running): a copy of it was counted as a user; mounts %v", e.daemon.Count(), e.mounts())
	}
}
