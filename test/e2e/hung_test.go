package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// Bounds on the calls kubelet makes for a volume whose gcsfuse is alive but
// does not answer. The driver's CheckTimeout is 5 s: a stats call waits for
// it once. Unmounting a bind sends gcsfuse nothing; the driver gives up on
// it after CheckTimeout anyway. A teardown gives up on umount(2) after
// CheckTimeout (it returns at once here), then lets gcsfuse exit for 1 s
// before the mounter sends SIGTERM, which a stopped gcsfuse ignores, and
// SIGKILL 5 s later.
const (
	hungStatsBound     = 7 * time.Second
	hungUnpublishBound = 7 * time.Second  // a bind
	hungTeardownBound  = 12 * time.Second // unstage, or the last unpublish of an inline session
	hungReaderRelease  = 10 * time.Second
)

// TestHung stops a volume's gcsfuse with SIGSTOP (alive, never answering,
// as one stuck on its backend) while a reader has a file open in the volume
// and is blocked in it, and checks that the node never hangs: stats report
// the volume abnormal, unpublish and unstage return OK within bounds and
// leave no mount, the gcsfuse is gone and reaped, and the blocked reader
// gets an error instead of staying stuck.
func TestHung(t *testing.T) {
	t.Run("a_staged", testHungStaged)
	t.Run("b_inline", testHungInline)
	t.Run("c_staged_unused", testHungUnused)
}

func testHungStaged(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("plugins/vol/globalmount"), e.path("pods/p1/volumes/vol/mount")
	mkdir(t, filepath.Dir(target))
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	pid, rd := e.stopWithReader(t, filepath.Join(target, "top.txt"))
	stopped := time.Now()

	for _, p := range []string{target, stage} {
		start := time.Now()
		abnormal, msg, err := e.condition(bucket, p)
		took := time.Since(start)
		t.Logf("NodeGetVolumeStats(%s) with gcsfuse stopped: %s, abnormal=%v %q", p, took.Round(time.Millisecond), abnormal, msg)
		if err != nil || !abnormal || took > hungStatsBound {
			t.Errorf("NodeGetVolumeStats(%s) with gcsfuse stopped: abnormal=%v, %v after %s; want abnormal within %s", p, abnormal, err, took, hungStatsBound)
		}
	}

	took := e.timed(t, "NodeUnpublishVolume", hungUnpublishBound, func() error { return e.unpublishNow(bucket, target) })
	t.Logf("NodeUnpublishVolume of the stopped volume (a file open in it): %s", took.Round(time.Millisecond))
	// The bind shares the session's FUSE connection: unpublishing one
	// target must never abort it.
	if line := lastLine(e.log, "aborted the FUSE connection"); !strings.HasPrefix(line, "(no line") {
		t.Errorf("unpublish of one target aborted the session's FUSE connection: %s", line)
	}
	if n := e.mountsAt(t, target); n != 0 {
		t.Errorf("mounts at %s after unpublish = %d, want 0", target, n)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("target %s after unpublish: %v, want it removed", target, err)
	}

	unstaging := time.Now()
	took = e.timed(t, "NodeUnstageVolume", hungTeardownBound, func() error { return e.unstageNow(bucket, stage) })
	t.Logf("NodeUnstageVolume of the stopped volume: %s", took.Round(time.Millisecond))
	e.assertHungGone(t, pid, rd, stopped, unstaging)
}

// c. A stopped gcsfuse that nothing waits on: no reader, no stats. Both
// unmounts return at once (the kernel ends the connection itself when its
// last mount goes); the unstage waits for the mounter to kill gcsfuse.
func testHungUnused(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("plugins/vol/globalmount"), e.path("pods/p1/volumes/vol/mount")
	mkdir(t, filepath.Dir(target))
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	if got, err := readWithin(filepath.Join(target, "top.txt"), 5*time.Second); err != nil || got != fixture["top.txt"] {
		t.Fatalf("read before stopping gcsfuse = %q, %v", got, err)
	}
	pid := e.stopGCSFuse(t)
	took := e.timed(t, "NodeUnpublishVolume", hungUnpublishBound, func() error { return e.unpublishNow(bucket, target) })
	t.Logf("NodeUnpublishVolume of the stopped, unused volume: %s", took.Round(time.Millisecond))
	took = e.timed(t, "NodeUnstageVolume", hungTeardownBound, func() error { return e.unstageNow(bucket, stage) })
	t.Logf("NodeUnstageVolume of the stopped, unused volume: %s", took.Round(time.Millisecond))
	if mounts, err := harness.FUSEMounts(e.dir + "/"); err != nil || len(mounts) != 0 {
		t.Errorf("fuse.gcsfuse mounts left under %s: %+v (%v)", e.dir, mounts, err)
	}
	if left, zombies, err := harness.WaitNoChildren(e.mnt.Pid(), "gcsfuse", 10*time.Second); err != nil || len(left) != 0 {
		t.Errorf("gcsfuse children of the mounter 10 s after unstage: %v (%d zombies, %v), want none", left, zombies, err)
	}
	assertGone(t, pid)
	t.Logf("driver: %s", lastLine(e.log, "FUSE connection"))
	t.Logf("mounter: %s", lastLine(e.mounterLog, "gcsfuse exited"))
}

func testHungInline(t *testing.T) {
	e := newEnv(t)
	target := e.path("pods/p1/volumes/vol/mount")
	mkdir(t, filepath.Dir(target))
	req := inline("inline-hung", target, harness.MountCapability(inlineMode, ""), map[string]string{mounterEphemeral: "true", "bucketName": bucket})
	e.mustPublish(t, req)
	pid, rd := e.stopWithReader(t, filepath.Join(target, "top.txt"))
	stopped := time.Now()

	start := time.Now()
	abnormal, msg, err := e.condition(req.VolumeId, target)
	took := time.Since(start)
	t.Logf("NodeGetVolumeStats(%s) with gcsfuse stopped: %s, abnormal=%v %q", target, took.Round(time.Millisecond), abnormal, msg)
	if err != nil || !abnormal || took > hungStatsBound {
		t.Errorf("NodeGetVolumeStats(%s) with gcsfuse stopped: abnormal=%v, %v after %s; want abnormal within %s", target, abnormal, err, took, hungStatsBound)
	}

	// The last user of an inline session: unpublish tears the session down.
	unpublishing := time.Now()
	took = e.timed(t, "NodeUnpublishVolume", hungTeardownBound, func() error { return e.unpublishNow(req.VolumeId, target) })
	t.Logf("NodeUnpublishVolume of the stopped inline volume (its last user; a file open in it): %s", took.Round(time.Millisecond))
	e.assertHungGone(t, pid, rd, stopped, unpublishing)
}

// stopWithReader checks the volume answers at path, starts a reader with
// path open that reads it in a loop, stops the one gcsfuse with SIGSTOP,
// and waits until the reader is blocked. A cleanup continues the gcsfuse
// (by pid, if it is still the mounter's child) so that a failed test leaves
// nothing stopped behind.
func (e *env) stopWithReader(t *testing.T, path string) (int, *hungReader) {
	t.Helper()
	if got, err := readWithin(path, 5*time.Second); err != nil || got != fixture["top.txt"] {
		t.Fatalf("read %s before stopping gcsfuse = %q, %v", path, got, err)
	}
	rd := startHungReader(t, path)
	rd.waitRounds(t, 3, 5*time.Second)
	pid := e.stopGCSFuse(t)
	rd.waitBlocked(t, 5*time.Second)
	t.Logf("gcsfuse %d stopped; the reader is blocked after %d rounds", pid, rd.rounds.Load())
	return pid, rd
}

// stopGCSFuse stops the one gcsfuse with SIGSTOP and returns its pid. A
// cleanup continues it (by pid, only while it is still the mounter's
// gcsfuse child) so that a failed test leaves nothing stopped behind.
func (e *env) stopGCSFuse(t *testing.T) int {
	t.Helper()
	pids := e.gcsfuse(t)
	if len(pids) != 1 {
		t.Fatalf("gcsfuse children of the mounter = %v, want one", pids)
	}
	pid, mounter := pids[0], e.mnt.Pid()
	t.Cleanup(func() {
		if pids, _, _ := harness.Children(mounter, "gcsfuse"); slices.Contains(pids, pid) {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	if state := waitState(pid, "T", 5*time.Second); state != "T" {
		t.Fatalf("gcsfuse %d after SIGSTOP: state %q, want T (stopped)", pid, state)
	}
	return pid
}

// assertHungGone checks what must hold once the stopped volume's last call
// returned: no mount under the test directory, the gcsfuse killed and
// reaped, and the reader released with an error.
func (e *env) assertHungGone(t *testing.T, pid int, rd *hungReader, stopped, lastCall time.Time) {
	t.Helper()
	if mounts, err := harness.FUSEMounts(e.dir + "/"); err != nil || len(mounts) != 0 {
		t.Errorf("fuse.gcsfuse mounts left under %s: %+v (%v)", e.dir, mounts, err)
	}
	if left, zombies, err := harness.WaitNoChildren(e.mnt.Pid(), "gcsfuse", 10*time.Second); err != nil || len(left) != 0 {
		t.Errorf("gcsfuse children of the mounter 10 s after the last call: %v (%d zombies, %v), want none", left, zombies, err)
	}
	assertGone(t, pid)
	t.Logf("driver: %s", lastLine(e.log, "FUSE connection"))
	t.Logf("mounter: %s", lastLine(e.mounterLog, "gcsfuse exited"))
	select {
	case err := <-rd.done:
		ended := time.Unix(0, rd.ended.Load())
		t.Logf("blocked reader released %s after the last call began (%s after SIGSTOP), after %d rounds: %v",
			ended.Sub(lastCall).Round(time.Millisecond), ended.Sub(stopped).Round(time.Millisecond), rd.rounds.Load(), err)
		if err == nil || !(errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)) {
			t.Errorf("blocked reader ended with %v, want ENOTCONN or ECONNABORTED", err)
		}
	case <-time.After(hungReaderRelease):
		t.Errorf("reader still blocked in the volume %s after the last call returned", hungReaderRelease)
	}
}

// timed runs call, fails unless it succeeds within bound, and returns how
// long it took.
func (e *env) timed(t *testing.T, what string, bound time.Duration, call func() error) time.Duration {
	t.Helper()
	start := time.Now()
	err := call()
	took := time.Since(start)
	if err != nil || took > bound {
		t.Errorf("%s with gcsfuse stopped: %v after %s; want OK within %s", what, err, took.Round(time.Millisecond), bound)
	}
	return took
}

func (e *env) unpublishNow(volumeID, target string) error {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	return e.unpublish(ctx, volumeID, target)
}

func (e *env) unstageNow(volumeID, stage string) error {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	return e.unstage(ctx, volumeID, stage)
}

// hungReader holds a file of the volume open (as a pod does) and reads the
// file again and again by path: each round opens it, a FUSE round trip.
type hungReader struct {
	rounds atomic.Int64
	done   chan error
	ended  atomic.Int64 // unix nanoseconds when it returned
}

func startHungReader(t *testing.T, path string) *hungReader {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	r := &hungReader{done: make(chan error, 1)}
	go func() {
		defer f.Close()
		for {
			if _, err := os.ReadFile(path); err != nil {
				r.ended.Store(time.Now().UnixNano())
				r.done <- err
				return
			}
			r.rounds.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return r
}

func (r *hungReader) waitRounds(t *testing.T, n int64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for r.rounds.Load() < n {
		select {
		case err := <-r.done:
			t.Fatalf("reader failed before gcsfuse was stopped: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader did %d rounds in %s, want %d", r.rounds.Load(), timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitBlocked waits until the reader has made no progress for 300 ms.
func (r *hungReader) waitBlocked(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	last, since := r.rounds.Load(), time.Now()
	for time.Since(since) < 300*time.Millisecond {
		select {
		case err := <-r.done:
			t.Fatalf("reader ended instead of blocking on the stopped gcsfuse: %v", err)
		default:
		}
		if n := r.rounds.Load(); n != last {
			last, since = n, time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader still making progress %s after gcsfuse was stopped", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until pid's state (/proc/PID/stat) is want, and returns
// the last state seen ("" once the process is gone).
func waitState(pid int, want string, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return ""
		}
		s := string(b)
		state := "?"
		for i := len(s) - 1; i >= 0; i-- {
			if s[i] == ')' && len(s) > i+2 {
				state = s[i+2 : i+3]
				break
			}
		}
		if state == want || time.Now().After(deadline) {
			return state
		}
		time.Sleep(10 * time.Millisecond)
	}
}
