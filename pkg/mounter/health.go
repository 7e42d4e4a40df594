package mounter

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
)

// Health is the condition of one mount of this driver.
type Health struct {
	Abnormal bool
	// Message says what is wrong in words an operator can act on; for a
	// healthy mount, what was checked.
	Message string
	// Usage is what statfs(2) on the mount returned (Valid false if it did
	// not answer). gcsfuse reports a fixed, very large capacity with nothing
	// used, because a bucket has no size limit: these numbers are what pods
	// see in df, not a measure of the bucket.
	Usage Usage
}

// Usage is a statfs(2) answer in bytes and inodes.
type Usage struct {
	Valid                                 bool
	TotalBytes, AvailableBytes, UsedBytes int64
	TotalInodes, FreeInodes, UsedInodes   int64
}

// Health checks the mount at path: a statfs(2) round trip to its gcsfuse,
// bounded by CheckTimeout, and what the daemon host says about the session.
// A path with no mount of this driver is ErrNotMounted or ErrNotOurs.
func (m *Mounter) Health(ctx context.Context, path string) (Health, error) {
	mp, ok, err := m.lookup(path)
	if err != nil {
		return Health{}, err
	}
	if !ok {
		return Health{}, fmt.Errorf("nothing is mounted at %q: %w", path, ErrNotMounted)
	}
	sid, ours := sessionOf(mp)
	if !ours {
		return Health{}, fmt.Errorf("%q is a %s mount of %q: %w", path, mp.Type, mp.Device, ErrNotOurs)
	}
	var h Health
	// The mount check (statfs then statx on the real mounter) is what
	// Inspect uses; a second statfs gives the usage.
	statErr := m.boundedCheck(path)
	if statErr == nil {
		if st, err := m.boundedStatfs(path); err == nil {
			h.Usage = usageOf(st)
		}
	}
	session, derr := m.daemon.Status(ctx, sid)
	why := ""
	switch {
	case derr == nil && !session.Running:
		why = fmt.Sprintf("; its gcsfuse (pid %d) exited: %v", session.PID, session.Err)
	case errors.Is(derr, ErrUnknownSession):
		why = "; the FUSE daemon host has no gcsfuse for it (it restarted, or gcsfuse was stopped)"
	case derr != nil:
		why = fmt.Sprintf("; the FUSE daemon host did not answer: %v", derr)
	}
	switch {
	case mount.IsCorruptedMnt(statErr) && !errors.Is(statErr, ErrTimeout):
		h.Abnormal = true
		h.Message = "the gcsfuse mount is not connected (Transport endpoint is not connected): reads and writes fail" + why +
			". It is re-mounted by the next NodePublishVolume (or NodeStageVolume); pods that use it need a restart unless their volumeMount has mountPropagation HostToContainer"
	case errors.Is(statErr, ErrTimeout):
		h.Abnormal = true
		h.Message = fmt.Sprintf("gcsfuse did not answer statfs within %s: it is stopped or hung, and reads block", m.cfg.CheckTimeout) + why
	case statErr != nil:
		h.Abnormal = true
		h.Message = fmt.Sprintf("statfs failed: %v", statErr) + why
	case derr == nil && !session.Running:
		h.Abnormal = true
		h.Message = "the mount answers but its gcsfuse is gone" + why
	default:
		h.Message = fmt.Sprintf("gcsfuse session %s answers", sid)
		if derr == nil {
			h.Message += fmt.Sprintf(" (pid %d, up %s)", session.PID, time.Since(session.Started).Round(time.Second))
		}
	}
	// gcsfuse's last words can hold any bytes; the message goes into proto3
	// strings, which must be UTF-8.
	h.Message = strings.ToValidUTF8(h.Message, "\uFFFD")
	return h, nil
}

// boundedCheck is the mount check (statfs, then statx, on the real mounter)
// bounded by CheckTimeout: it never blocks on a hung FUSE daemon.
func (m *Mounter) boundedCheck(path string) error {
	_, err := m.checks.do("check "+path, m.cfg.CheckTimeout, func() (any, error) {
		_, err := m.IsLikelyNotMountPoint(path)
		return nil, err
	})
	return err
}

func (m *Mounter) boundedStatfs(path string) (*unix.Statfs_t, error) {
	v, err := m.checks.do("statfs "+path, m.cfg.CheckTimeout, func() (any, error) {
		var st unix.Statfs_t
		err := m.statfs(path, &st)
		return &st, err
	})
	st, _ := v.(*unix.Statfs_t)
	return st, err
}

// inflight runs the checks that may hang on a FUSE daemon that does not
// answer, one at a time per key. A check that timed out stays blocked in
// its syscall (and holds an OS thread) until gcsfuse answers or its
// connection is aborted; a later check of the same path waits for that one
// instead of blocking another thread, so kubelet's periodic stats of a hung
// volume cost one thread, not one per call.
type inflight struct {
	mu    sync.Mutex
	calls map[string]*flightCall
}

type flightCall struct {
	done chan struct{} // closed when f returned
	v    any
	err  error
}

// do runs f for key unless a run for key is still going, and waits up to d
// for the result; ErrTimeout if there is none by then.
func (fl *inflight) do(key string, d time.Duration, f func() (any, error)) (any, error) {
	fl.mu.Lock()
	c, ok := fl.calls[key]
	if !ok {
		if fl.calls == nil {
			fl.calls = map[string]*flightCall{}
		}
		c = &flightCall{done: make(chan struct{})}
		fl.calls[key] = c
		go func() {
			c.v, c.err = f()
			fl.mu.Lock()
			delete(fl.calls, key)
			fl.mu.Unlock()
			close(c.done)
		}()
	}
	fl.mu.Unlock()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-c.done:
		return c.v, c.err
	case <-timer.C:
		return nil, ErrTimeout
	}
}

func usageOf(st *unix.Statfs_t) Usage {
	bs := int64(st.Bsize)
	return Usage{
		Valid:      true,
		TotalBytes: int64(st.Blocks) * bs, AvailableBytes: int64(st.Bavail) * bs, UsedBytes: int64(st.Blocks-st.Bfree) * bs,
		TotalInodes: int64(st.Files), FreeInodes: int64(st.Ffree), UsedInodes: int64(st.Files - st.Ffree),
	}
}

// BucketMounts lists the paths of every mount of this driver serving bucket
// (session mounts and their binds).
func (m *Mounter) BucketMounts(bucket string) ([]string, error) {
	mps, err := m.List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, mp := range mps {
		if isOurs(mp) && strings.HasPrefix(mp.Device, bucket+":") {
			out = append(out, mp.Path)
		}
	}
	return out, nil
}

// ReconcileReport says what Reconcile found and did.
type ReconcileReport struct {
	Healthy, Dead     int      // session mounts and binds found
	Released          []string // inline session mounts without a user, unmounted
	StoppedSessions   []string // daemon sessions without a mount, stopped
	DaemonUnreachable bool
}

// Reconcile rebuilds a consistent node after a restart of the driver, from
// the mount table, the inline dir and the daemon host's sessions. Healthy
// mounts are never touched. Leaks are removed: inline session mounts no
// target uses (a publish or unpublish cut short), daemon sessions with no
// mount, and empty inline mount points. Dead mounts stay for the CO to
// republish (which re-mounts) or unpublish (which removes them).
func (m *Mounter) Reconcile(ctx context.Context, inlineDir string) (ReconcileReport, error) {
	var rep ReconcileReport
	mps, err := m.List()
	if err != nil {
		return rep, fmt.Errorf("read mount table: %w", err)
	}
	live := map[string]bool{}
	inlineMounts := map[string]bool{}
	for _, mp := range mps {
		sid, ours := sessionOf(mp)
		if !ours || mp.Type != FUSEType {
			continue
		}
		live[sid] = true
		if filepath.Dir(mp.Path) == filepath.Clean(inlineDir) {
			inlineMounts[mp.Path] = true
		}
		if state, _, _ := m.Inspect(mp.Path); state == Mounted {
			rep.Healthy++
		} else {
			rep.Dead++
		}
	}
	for mp := range inlineMounts {
		binds, err := m.Binds(mp)
		if err != nil || len(binds) > 0 {
			continue
		}
		klog.InfoS("reconcile: inline session has no user left; unmounting", "path", mp)
		if err := m.Teardown(ctx, mp); err != nil {
			klog.ErrorS(err, "reconcile: unmount unused inline session", "path", mp)
			continue
		}
		rep.Released = append(rep.Released, mp)
		if sid, ok := sessionOfPath(mps, mp); ok {
			delete(live, sid)
		}
	}
	sessions, err := m.daemon.List(ctx)
	if err != nil {
		rep.DaemonUnreachable = true
		klog.InfoS("reconcile: the FUSE daemon host did not list its sessions; skipping that part", "err", err)
	}
	for _, s := range sessions {
		if live[s.ID] {
			continue
		}
		// No mount shows this session: a stage cut short after gcsfuse
		// started, or a session that exited and was never stopped.
		stopCtx, cancel := context.WithTimeout(ctx, m.cfg.CheckTimeout)
		err := m.daemon.Stop(stopCtx, s.ID)
		cancel()
		if err != nil {
			klog.ErrorS(err, "reconcile: stop session without a mount", "session", s.ID)
			continue
		}
		rep.StoppedSessions = append(rep.StoppedSessions, s.ID)
	}
	entries, _ := os.ReadDir(inlineDir)
	for _, e := range entries {
		p := filepath.Join(inlineDir, e.Name())
		if _, mounted, _ := m.lookup(p); !mounted {
			_ = os.Remove(p) // only if empty: never a recursive delete
		}
	}
	return rep, nil
}

func sessionOfPath(mps []mount.MountPoint, path string) (string, bool) {
	for _, mp := range mps {
		if mp.Path == path {
			return sessionOf(mp)
		}
	}
	return "", false
}
