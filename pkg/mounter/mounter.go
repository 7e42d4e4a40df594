// Package mounter does everything the node driver does to the OS: FUSE
// mounts served by gcsfuse, bind mounts into pods, and reading the mount
// table. Session membership is read from the mount table, never kept only in
// memory: every FUSE mount has the source "bucket:sid", and bind mounts of it
// show the same source.
package mounter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// Errors the driver maps to gRPC codes.
var (
	// ErrConflict: the path already serves something else.
	ErrConflict = errors.New("conflict")
	// ErrNotOurs: the path has a mount this driver did not make.
	ErrNotOurs = errors.New("not a mount of this driver")
	// ErrNotMounted: a source that should be mounted is not.
	ErrNotMounted = errors.New("not mounted")
	// ErrTimeout: gcsfuse did not answer in time.
	ErrTimeout = errors.New("timed out")
)

// BucketChecker verifies a bucket (and directory) can be listed with the
// volume's credentials before a mount is made for it (nil: the node's).
type BucketChecker interface {
	Check(ctx context.Context, bucket, dir string, c *auth.Credentials) error
}

// Config holds the driver-wide gcsfuse settings no volume may change.
type Config struct {
	StateDir         string           // driver-owned: inline mounts, caches, temp files
	Endpoint         string           // custom GCS JSON API endpoint; "" is Google's
	MaxRetryAttempts int              // default bound on GCS retries
	AtomicRename     bool             // false for emulators without the moveObject API
	MountTimeout     time.Duration    // gcsfuse start-up budget
	CheckTimeout     time.Duration    // budget for a stat or unmount that may hang
	Clock            func() time.Time // crash-loop backoff clock; nil: time.Now
	// GCSFuseMetrics asks the daemon host to collect each gcsfuse's own
	// metrics (Session.Metrics); Observer, if set, times every mount that
	// starts gcsfuse. Both are for the driver's metrics (observe.go).
	GCSFuseMetrics bool
	Observer       Observer
}

// Mounter makes and removes gcsfuse mounts and bind mounts.
type Mounter struct {
	mount.Interface // bind mounts, unmounts and the mount table
	fuse            FUSE
	daemon          Daemon
	check           BucketChecker
	cfg             Config
	loops           crashLoops
	statfs          func(path string, st *unix.Statfs_t) error // unix.Statfs
	conns           connAborter                                // fusectl: aborts hung sessions
	tuner           *kernelTuner                               // per-mount kernel settings (kernel_linux.go)
	checks          inflight                                   // mount checks still running, one per path
}

// New returns a Mounter. check may be nil (no bucket check).
func New(cfg Config, mi mount.Interface, fuse FUSE, daemon Daemon, check BucketChecker) *Mounter {
	if cfg.MountTimeout == 0 {
		cfg.MountTimeout = 30 * time.Second
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	fc := newFusectl()
	return &Mounter{Interface: mi, fuse: fuse, daemon: daemon, check: check, cfg: cfg,
		loops: crashLoops{m: map[string]*failure{}, now: cfg.Clock}, statfs: unix.Statfs, conns: fc,
		tuner: &kernelTuner{bdiDir: "/sys/class/bdi", ctlDir: fc.ctlDir}}
}

// State is what the mount table and a bounded stat say about a path.
type State int

// States of a path.
const (
	NotMounted State = iota
	Mounted
	Corrupted // listed in the mount table but ENOTCONN, EIO, or hung
)

func (s State) String() string { return [...]string{"not mounted", "mounted", "corrupted"}[s] }

// Inspect reads the mount table for path, then checks a listed mount with a
// stat bounded by CheckTimeout. It never blocks on a hung FUSE daemon.
func (m *Mounter) Inspect(path string) (State, mount.MountPoint, error) {
	mp, ok, err := m.lookup(path)
	if err != nil || !ok {
		return NotMounted, mp, err
	}
	switch err := m.boundedCheck(path); {
	case err == nil:
		return Mounted, mp, nil
	case errors.Is(err, ErrTimeout):
		klog.InfoS("mount check timed out; treating the mount as corrupted", "path", path, "timeout", m.cfg.CheckTimeout)
		return Corrupted, mp, nil
	case mount.IsCorruptedMnt(err):
		return Corrupted, mp, nil
	default:
		return NotMounted, mp, fmt.Errorf("check mount %q: %w", path, err)
	}
}

// lookup finds path in the mount table (the topmost mount if stacked).
func (m *Mounter) lookup(path string) (mount.MountPoint, bool, error) {
	mps, err := m.List()
	if err != nil {
		return mount.MountPoint{}, false, fmt.Errorf("read mount table: %w", err)
	}
	path = filepath.Clean(path)
	for i := len(mps) - 1; i >= 0; i-- {
		if mps[i].Path == path {
			return mps[i], true, nil
		}
	}
	return mount.MountPoint{}, false, nil
}

// Source is the mount source of a session's FUSE mount and of its binds.
func Source(bucket, sid string) string { return bucket + ":" + sid }

// sessionOf returns the session id in a mount source made by Source.
func sessionOf(mp mount.MountPoint) (string, bool) {
	// The kernel lists bind mounts of a FUSE mount with its type; FakeMounter
	// lists binds with the empty type it was given.
	if mp.Type != FUSEType && mp.Type != "" {
		return "", false
	}
	i := strings.LastIndexByte(mp.Device, ':')
	if i < 0 {
		return "", false
	}
	return mp.Device[i+1:], true
}

func isOurs(mp mount.MountPoint) bool { _, ok := sessionOf(mp); return ok }

// EnsureMounted makes mountpoint serve v through its own gcsfuse. It is
// idempotent: an existing healthy mount of the same session is kept, a
// corrupted one is replaced, and a mount of something else is a conflict.
func (m *Mounter) EnsureMounted(ctx context.Context, mountpoint string, v *Volume) error {
	sid := SessionID(mountpoint, v)
	source := Source(v.Bucket, sid)
	state, mp, err := m.Inspect(mountpoint)
	if err != nil {
		return err
	}
	switch {
	case state == Mounted && mp.Device == source:
		return nil
	case state != NotMounted && !isOurs(mp):
		return fmt.Errorf("%q already has a %s mount of %q: %w", mountpoint, mp.Type, mp.Device, ErrNotOurs)
	case state == Mounted:
		return fmt.Errorf("%q already serves %q with other options: %w", mountpoint, mp.Device, ErrConflict)
	}
	if state == Corrupted {
		m.noteDeath(ctx, mp)
	}
	// Everything that can refuse goes before a dead mount is torn down, so
	// a refusal leaves it for the next retry rather than a missing mount.
	if err := m.loops.admit(sid); err != nil {
		return err
	}
	if state == Corrupted {
		if _, err := m.daemon.List(ctx); errors.Is(err, ErrDaemonUnavailable) {
			return err
		}
	}
	if m.check != nil && !v.SkipAccessCheck {
		dir, _ := v.Flag("only-dir")
		if err := m.check.Check(ctx, v.Bucket, dir, v.Credentials); err != nil {
			return err
		}
	}
	if state == Corrupted {
		klog.InfoS("replacing corrupted mount", "path", mountpoint, "source", mp.Device)
		if err := m.teardown(ctx, mountpoint, true); err != nil {
			return err
		}
	}
	mountStart := time.Now()
	err = m.mount(ctx, mountpoint, source, sid, v)
	m.observe(mountStart, state == Corrupted, err)
	if err != nil {
		if !errors.Is(err, ErrDaemonUnavailable) && ctx.Err() == nil {
			m.loops.failed(sid, err)
		}
		return err
	}
	return nil
}

// noteDeath counts a session found dead as a crash-loop failure if it died
// soon after it started; a session that ran for a while starts afresh.
func (m *Mounter) noteDeath(ctx context.Context, mp mount.MountPoint) {
	sid, _ := sessionOf(mp)
	st, err := m.daemon.Status(ctx, sid)
	switch {
	case err != nil || st.Running:
		// Unknown to the daemon (it restarted) or hung rather than dead.
		m.loops.forget(sid)
	case !st.Exited.IsZero() && st.Exited.Sub(st.Started) < stableAfter:
		m.loops.died(sid, st.Started, st.Err)
	default:
		m.loops.forget(sid)
	}
}

// Refresh hands the session mounted at mountpoint the volume's current
// credentials: kubelet renews a pod's token and republishes.
func (m *Mounter) Refresh(ctx context.Context, mountpoint string, v *Volume) error {
	sid := SessionID(mountpoint, v)
	if err := m.daemon.Refresh(ctx, sid, v.Credentials); err != nil {
		return fmt.Errorf("refresh the credentials of session %s: %w", sid, err)
	}
	klog.V(4).InfoS("refreshed session credentials", "session", sid, "identity", v.Credentials)
	return nil
}

func (m *Mounter) mount(ctx context.Context, mountpoint, source, sid string, v *Volume) error {
	start := time.Now()
	if err := os.MkdirAll(mountpoint, 0o750); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	dev, err := m.fuse.Mount(source, mountpoint, v.KernelOptions())
	if err != nil {
		return err
	}
	t := v.Tuning()
	s := Session{ID: sid, Bucket: v.Bucket, Args: m.sessionArgs(v, t), FileCache: t.FileCache(), Credentials: v.Credentials, KernelParams: t.KernelReader, Metrics: m.cfg.GCSFuseMetrics}
	if err := m.daemon.Start(ctx, s, dev); err != nil {
		m.abandon(mountpoint, source, sid)
		return err
	}
	if err := m.waitReady(ctx, mountpoint, sid); err != nil {
		m.abandon(mountpoint, source, sid)
		return err
	}
	m.tune(ctx, mountpoint, sid, t)
	klog.V(2).InfoS("mounted", "bucket", v.Bucket, "path", mountpoint, "session", sid, "identity", v.Credentials, "duration", time.Since(start))
	return nil
}

// abandon undoes a mount whose gcsfuse never became ready. Its connection
// is aborted: a gcsfuse that did not answer in time is not waited for.
func (m *Mounter) abandon(mountpoint, source, sid string) {
	if err := m.unmountSession(mountpoint, source, true); err != nil {
		klog.ErrorS(err, "cleaning up a failed mount", "path", mountpoint)
	}
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.CheckTimeout)
	defer cancel()
	_ = m.daemon.Stop(ctx, sid)
}

// waitReady returns once gcsfuse answers at mountpoint (a stat of the root is
// a FUSE round trip: it waits for INIT), or with gcsfuse's own last words if
// it exits first.
func (m *Mounter) waitReady(ctx context.Context, mountpoint, sid string) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.MountTimeout)
	defer cancel()
	statDone := make(chan error, 1)
	go func() { _, err := os.Stat(mountpoint); statDone <- err }()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-statDone:
			st, serr := m.daemon.Status(ctx, sid)
			if serr == nil && !st.Running {
				return st.Err
			}
			if err != nil {
				return fmt.Errorf("gcsfuse for %q is not answering: %w", mountpoint, err)
			}
			return nil
		case <-tick.C:
			if st, err := m.daemon.Status(ctx, sid); err == nil && !st.Running {
				return st.Err
			}
		case <-ctx.Done():
			return fmt.Errorf("gcsfuse did not answer at %q within %s: %w", mountpoint, m.cfg.MountTimeout, ErrTimeout)
		}
	}
}

// sessionArgs adds the driver-owned flags to the volume's own, tuned by its
// profile (t). The temp and cache dirs are the daemon host's to choose
// (Session.FileCache).
func (m *Mounter) sessionArgs(v *Volume, t Tuning) []string {
	args := t.Args()
	set := func(flag, value string) {
		if _, ok := t.Flags[flag]; !ok {
			args = append(args, "--"+flag+"="+value)
		}
	}
	set("uid", "0") // explicit: ownership must not depend on who runs gcsfuse
	set("gid", "0")
	set("max-retry-attempts", strconv.Itoa(m.cfg.MaxRetryAttempts))
	if v.Credentials.Anonymous() {
		set("anonymous-access", "true")
	}
	if m.cfg.Endpoint != "" {
		args = append(args, "--custom-endpoint="+m.cfg.Endpoint)
	}
	if !m.cfg.AtomicRename {
		args = append(args, "--enable-atomic-rename-object=false")
	}
	return append(args, "--trace-exporters=") // no telemetry exporters: they look for credentials
}

// stopGrace is how long Teardown lets a session's gcsfuse exit by itself
// once its mount is gone, before the daemon host terminates it (SIGTERM,
// then SIGKILL 5 s later). Without its mount, gcsfuse has nothing left to
// serve and exits within milliseconds; one that does not is stopped or
// stuck, and ignores SIGTERM until it is killed.
const stopGrace = 2 * time.Second

// Teardown unmounts a session's FUSE mount at mountpoint, waits for its
// gcsfuse to exit, and removes the mount point and the session's files.
// A path that is not mounted only has its directory removed. A session
// whose gcsfuse does not answer never blocks it: see unmountSession.
func (m *Mounter) Teardown(ctx context.Context, mountpoint string) error {
	return m.teardown(ctx, mountpoint, false)
}

// teardown is Teardown; hung says the caller found the mount not answering.
func (m *Mounter) teardown(ctx context.Context, mountpoint string, hung bool) error {
	mp, ok, err := m.lookup(mountpoint)
	if err != nil {
		return err
	}
	if !ok {
		return removeDir(mountpoint)
	}
	sid, ours := sessionOf(mp)
	if !ours {
		return fmt.Errorf("refusing to unmount %q: it is a %s mount of %q: %w", mountpoint, mp.Type, mp.Device, ErrNotOurs)
	}
	if err := m.unmountSession(mountpoint, mp.Device, hung); err != nil {
		return err
	}
	stopCtx, cancel := context.WithTimeout(ctx, stopGrace)
	defer cancel()
	if err := m.daemon.Stop(stopCtx, sid); err != nil {
		// The mount is gone, so gcsfuse exits by itself; a mounter that is
		// down or restarted has nothing left to stop. Not worth failing for.
		klog.InfoS("could not confirm gcsfuse stopped", "session", sid, "err", err)
	}
	m.loops.forget(sid)
	klog.V(2).InfoS("unmounted", "path", mountpoint, "source", mp.Device)
	return removeDir(mountpoint)
}

// Bind publishes source (a session mount) at target, read-only if asked. An
// existing healthy bind of the same session and mode is kept; a corrupted
// one is replaced.
func (m *Mounter) Bind(source, target string, readOnly bool) error {
	src, ok, err := m.lookup(source)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%q: %w", source, ErrNotMounted)
	}
	state, mp, err := m.Inspect(target)
	if err != nil {
		return err
	}
	switch {
	case state == Mounted && mp.Device == src.Device:
		if slices.Contains(mp.Opts, "ro") != readOnly {
			return fmt.Errorf("%q is already published with readOnly=%t: %w", target, !readOnly, ErrConflict)
		}
		return nil
	case state != NotMounted && !isOurs(mp):
		return fmt.Errorf("%q already has a %s mount of %q: %w", target, mp.Type, mp.Device, ErrNotOurs)
	case state == Mounted:
		return fmt.Errorf("%q already serves %q: %w", target, mp.Device, ErrConflict)
	case state == Corrupted:
		klog.InfoS("replacing corrupted bind mount", "target", target, "source", mp.Device)
		if err := m.unmount(target); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return fmt.Errorf("create target: %w", err)
	}
	// The bind keeps the session mount's flags (nosuid, nodev, and noexec,
	// noatime or ro when the volume asked); a publish may add ro.
	opts := []string{"bind"}
	for _, o := range src.Opts {
		if slices.Contains([]string{"nosuid", "nodev", "noexec", "noatime", "ro"}, o) && !slices.Contains(opts, o) {
			opts = append(opts, o)
		}
	}
	if readOnly && !slices.Contains(opts, "ro") {
		opts = append(opts, "ro")
	}
	if err := m.Mount(source, target, "", opts); err != nil {
		// A bind that failed half-way (bound, but not remounted with its
		// flags) must not stay: it could be writable where ro was asked.
		if mp, ok, _ := m.lookup(target); ok && mp.Device == src.Device {
			_ = m.unmount(target)
		}
		return fmt.Errorf("bind mount %q at %q: %w", source, target, err)
	}
	klog.V(2).InfoS("published", "source", src.Device, "target", target, "readOnly", readOnly)
	return nil
}

// Unbind removes a bind mount made by Bind and its directory. It returns the
// mount's source so the caller can release the session; "" if nothing was
// mounted.
func (m *Mounter) Unbind(target string) (string, error) {
	mp, ok, err := m.lookup(target)
	if err != nil {
		return "", err
	}
	if !ok {
		return "", removeDir(target)
	}
	if _, ours := sessionOf(mp); !ours {
		return "", fmt.Errorf("refusing to unmount %q: it is a %s mount of %q: %w", target, mp.Type, mp.Device, ErrNotOurs)
	}
	if err := m.unmount(target); err != nil {
		return "", err
	}
	klog.V(2).InfoS("unpublished", "target", target, "source", mp.Device)
	return mp.Device, removeDir(target)
}

// SessionMount returns the path under dir where source's session is mounted,
// if there is one.
func (m *Mounter) SessionMount(source, dir string) (string, bool, error) {
	mps, err := m.List()
	if err != nil {
		return "", false, err
	}
	for _, mp := range mps {
		if mp.Device == source && mp.Type == FUSEType && filepath.Dir(mp.Path) == filepath.Clean(dir) {
			return mp.Path, true, nil
		}
	}
	return "", false, nil
}

// Binds lists the mounts, other than mountpoint itself, that show the same
// source as the session mounted at mountpoint: its bind mounts. Another view
// of the session mount itself (a container that bind-mounted a directory
// above it, seen at .../<same parent name>/<same name>) is not a user: kubelet
// targets end in .../mount and never look like a session mount point.
func (m *Mounter) Binds(mountpoint string) ([]string, error) {
	mps, err := m.List()
	if err != nil {
		return nil, err
	}
	mountpoint = filepath.Clean(mountpoint)
	source := ""
	for _, mp := range mps {
		if mp.Path == mountpoint {
			source = mp.Device
		}
	}
	var out []string
	for _, mp := range mps {
		if source != "" && mp.Device == source && mp.Path != mountpoint && !sameTail(mp.Path, mountpoint) {
			out = append(out, mp.Path)
		}
	}
	return out, nil
}

// sameTail reports whether a and b end in the same two path elements.
func sameTail(a, b string) bool {
	return filepath.Base(a) == filepath.Base(b) && filepath.Base(filepath.Dir(a)) == filepath.Base(filepath.Dir(b))
}

// unmount unmounts target, a bind mount, falling back to a lazy (detach)
// unmount so that a busy or dead mount never blocks the caller for long. It
// never aborts the FUSE connection: a bind shares it with the session mount
// and every other bind of the session. Unmounting a bind sends gcsfuse
// nothing (only the last mount of a FUSE connection ends it, and the kernel
// then aborts the connection itself): with gcsfuse stopped, it returns at
// once, or fails busy at once if a file is open in it, and the lazy unmount
// follows at once.
func (m *Mounter) unmount(target string) error {
	_, err := bounded(m.cfg.CheckTimeout, func() error { return m.Unmount(target) })
	if err == nil {
		return nil
	}
	if lerr := unix.Unmount(target, unix.MNT_DETACH); lerr == nil {
		klog.InfoS("lazily unmounted after a failed unmount", "path", target, "err", err)
		return nil
	}
	return fmt.Errorf("unmount %q: %w", target, err)
}

// unmountSession unmounts target, the FUSE mount of a session that is
// ending (source is its mount source), without ever blocking on its
// gcsfuse for much longer than CheckTimeout. It aborts the session's FUSE
// connection (fusectl; see abort_linux.go), so that every request waiting
// on it fails at once and none can block again, when
//
//   - hung: the caller found the mount not answering;
//   - requests wait on the connection: with every bind gone, only a leftover
//     user (a process blocked in a lazily detached bind, a stat of our own
//     that timed out) can be waiting, and gcsfuse is about to be stopped;
//   - umount(2) fails or does not return within CheckTimeout.
//
// A healthy session without users is unmounted as before: the kernel ends
// the connection itself when its last mount goes. Without fusectl,
// umount2(MNT_FORCE) aborts the connection instead (FUSE's umount_begin).
// The last resort is a lazy unmount, if target still shows source.
func (m *Mounter) unmountSession(target, source string, hung bool) error {
	conn, cerr := m.conns.lookup(target)
	if cerr != nil {
		// Not in the kernel's mount table (a fake one in tests), or not
		// this driver's FUSE mount there: nothing that may be aborted.
		klog.V(4).InfoS("no FUSE connection of ours to abort", "path", target, "err", cerr)
	}
	aborted, force := false, false
	abort := func(why string) {
		if cerr != nil || aborted || force {
			return
		}
		err := m.conns.abort(conn)
		switch {
		case errors.Is(err, errNoFusectl):
			klog.ErrorS(err, "could not abort the FUSE connection with fusectl; unmounting with MNT_FORCE, which aborts it too", "path", target, "connection", conn.ID)
			force = true
			return
		case err != nil:
			klog.ErrorS(err, "could not abort the FUSE connection", "path", target, "connection", conn.ID)
			return
		}
		aborted = true
		klog.InfoS("aborted the FUSE connection of a session being torn down: whatever waits on it fails now", "path", target, "connection", conn.ID, "why", why)
	}
	if hung {
		abort("the mount did not answer")
	} else if cerr == nil {
		if n, err := m.conns.waiting(conn); err != nil {
			klog.V(4).InfoS("could not count the requests waiting on the FUSE connection", "path", target, "connection", conn.ID, "err", err)
		} else if n > 0 {
			abort(fmt.Sprintf("%d request(s) still wait for gcsfuse", n))
		}
	}
	pending, err := bounded(m.cfg.CheckTimeout, func() error { return m.umount(target, conn, force) })
	if err == nil {
		return nil
	}
	if !aborted && !force {
		abort(err.Error())
		if force {
			if _, ferr := bounded(time.Second, func() error { return m.umount(target, conn, true) }); ferr == nil {
				return nil
			}
		}
	}
	if pending != nil && (aborted || force) {
		// The connection is aborted: an umount that waited on it returns.
		select {
		case perr := <-pending:
			if perr == nil {
				return nil
			}
		case <-time.After(time.Second):
		}
	}
	// Detach only what is still ours: an umount that returned late may
	// have uncovered another mount at target.
	if mp, ok, lerr := m.lookup(target); lerr == nil && (!ok || mp.Device != source) {
		return nil
	}
	if _, lerr := bounded(time.Second, func() error { return unix.Unmount(target, unix.MNT_DETACH) }); lerr == nil {
		klog.InfoS("lazily unmounted after a failed unmount", "path", target, "err", err, "aborted", aborted || force)
		return nil
	}
	return fmt.Errorf("unmount %q: %w", target, err)
}

// umount is umount(2) of target; with MNT_FORCE if force, and then only
// while target still shows conn (MNT_FORCE aborts the connection of
// whatever is mounted there).
func (m *Mounter) umount(target string, conn fuseConn, force bool) error {
	if !force {
		return m.Unmount(target)
	}
	if now, err := m.conns.lookup(target); err != nil || now != conn {
		return fmt.Errorf("not forcing the unmount of %q: it no longer shows FUSE connection %d of %q (%v)", target, conn.ID, conn.Source, err)
	}
	if err := unix.Unmount(target, unix.MNT_FORCE); err != nil {
		return fmt.Errorf("umount2(2) %q with MNT_FORCE: %w", target, err)
	}
	return nil
}

// bounded runs f and waits up to d for it. If f has not returned by then,
// it returns ErrTimeout and the channel that gets f's result when it does.
func bounded(d time.Duration, f func() error) (<-chan error, error) {
	done := make(chan error, 1)
	go func() { done <- f() }()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-done:
		return nil, err
	case <-timer.C:
		return done, ErrTimeout
	}
}

// removeDir removes an empty directory left by a mount; missing is fine.
func removeDir(path string) error {
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove %q: %w", path, err)
	}
	return nil
}
