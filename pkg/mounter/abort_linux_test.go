package mounter

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	mount "k8s.io/mount-utils"
)

// mountinfoFixture is a /proc/self/mountinfo with a session mount of this
// driver and two binds of it (same connection, 0:52), other FUSE mounts
// (someone's own gcsfuse, sshfs, a fuseblk), a mount stacked over one of
// ours, one of ours stacked over a tmpfs, and a path with a space.
const mountinfoFixture = `22 27 0:21 / /proc rw,relatime shared:13 - proc proc rw
23 27 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
46 23 0:41 / /sys/fs/fuse/connections rw,nosuid,nodev,noexec,relatime shared:24 - fusectl fusectl rw
27 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
300 27 0:52 / /var/lib/kubelet/plugins/kubernetes.io/csi/gcsfuse.csi/abc/globalmount rw,nosuid,nodev,relatime shared:150 - fuse.gcsfuse bkt:1f2e3d4c5b6a7980 rw,user_id=0,group_id=0,default_permissions,allow_other
301 27 0:52 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/vol/mount rw,nosuid,nodev,relatime shared:150 - fuse.gcsfuse bkt:1f2e3d4c5b6a7980 rw,user_id=0,group_id=0,default_permissions,allow_other
302 27 0:52 / /var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/vol/mount ro,nosuid,nodev,relatime shared:150 master:7 - fuse.gcsfuse bkt:1f2e3d4c5b6a7980 rw,user_id=0,group_id=0,default_permissions,allow_other
310 27 0:60 / /mnt/own-gcsfuse rw,nosuid,nodev,relatime - fuse.gcsfuse my-bucket rw,user_id=1000,group_id=1000
311 27 0:61 / /mnt/sshfs rw,nosuid,nodev,relatime - fuse.sshfs host:/srv rw,user_id=0,group_id=0
312 27 8:17 / /mnt/ntfs rw,relatime - fuseblk /dev/sdb1 rw,user_id=0,group_id=0,allow_other,blksize=4096
313 27 0:62 / /mnt/odd rw,relatime - fuse.gcsfuse bkt:../../etc rw,user_id=0,group_id=0
320 27 0:70 / /var/lib/kubelet/pods/p3/volumes/kubernetes.io~csi/vol/mount rw,relatime shared:160 - fuse.gcsfuse bkt:0011223344556677 rw,user_id=0,group_id=0
321 320 0:71 / /var/lib/kubelet/pods/p3/volumes/kubernetes.io~csi/vol/mount rw,relatime - tmpfs tmpfs rw
330 27 0:72 / /var/lib/gcsfuse-csi/inline/s1 rw,relatime - tmpfs tmpfs rw
331 330 0:73 / /var/lib/gcsfuse-csi/inline/s1 rw,nosuid,nodev,relatime - fuse.gcsfuse other:8899aabbccddeeff rw,user_id=0,group_id=0
340 27 0:74 / /var/lib/kubelet/pods/with\040space/vol\134x rw,relatime - fuse.gcsfuse bkt:aaaaaaaaaaaaaaaa rw,user_id=0,group_id=0
`

func TestParseMountInfo(t *testing.T) {
	entries, err := parseMountInfo(strings.NewReader(mountinfoFixture))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 16 {
		t.Fatalf("%d entries, want 16", len(entries))
	}
	want := map[int]mountEntry{
		46:  {ID: 46, Major: 0, Minor: 41, MountPoint: "/sys/fs/fuse/connections", FsType: "fusectl", Source: "fusectl"},
		302: {ID: 302, Major: 0, Minor: 52, MountPoint: "/var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/vol/mount", FsType: FUSEType, Source: "bkt:1f2e3d4c5b6a7980"},
		312: {ID: 312, Major: 8, Minor: 17, MountPoint: "/mnt/ntfs", FsType: "fuseblk", Source: "/dev/sdb1"},
		340: {ID: 340, Major: 0, Minor: 74, MountPoint: `/var/lib/kubelet/pods/with space/vol\x`, FsType: FUSEType, Source: "bkt:aaaaaaaaaaaaaaaa"},
	}
	for _, e := range entries {
		if w, ok := want[e.ID]; ok && e != w {
			t.Errorf("entry %d = %+v, want %+v", e.ID, e, w)
		}
	}
	for _, bad := range []string{
		"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw\n", // no separator
		"x 35 98:0 / /mnt rw - ext3 /dev/root rw\n",
		"36 35 98 / /mnt rw - ext3 /dev/root rw\n",
		"36 35 0:x / /mnt rw - ext3 /dev/root rw\n",
		"36 35 0:1 / /mnt rw - ext3\n",
	} {
		if _, err := parseMountInfo(strings.NewReader(bad)); err == nil {
			t.Errorf("parseMountInfo(%q) succeeded, want an error", bad)
		}
	}
}

func TestUnescapeMountInfo(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:           "/plain",
		`/a\040b`:          "/a b",
		`/tab\011nl\012`:   "/tab\tnl\n",
		`/back\134slash`:   `/back\slash`,
		`/not\08octal`:     `/not\08octal`,
		`/short\04`:        `/short\04`,
		`/trailing\`:       `/trailing\`,
		`\040\040`:         "  ",
		`/utf8\303\251t√©`: "/utf8\u00e9t√©",
	} {
		if got := unescapeMountInfo(in); got != want {
			t.Errorf("unescapeMountInfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestConnOf(t *testing.T) {
	entries, err := parseMountInfo(strings.NewReader(mountinfoFixture))
	if err != nil {
		t.Fatal(err)
	}
	ours := map[string]fuseConn{
		// The session mount and its binds: one connection.
		"/var/lib/kubelet/plugins/kubernetes.io/csi/gcsfuse.csi/abc/globalmount": {Source: "bkt:1f2e3d4c5b6a7980", MountID: 300, ID: 52},
		"/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/vol/mount":           {Source: "bkt:1f2e3d4c5b6a7980", MountID: 301, ID: 52},
		"/var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/vol/mount/":          {Source: "bkt:1f2e3d4c5b6a7980", MountID: 302, ID: 52},
		// Ours, stacked over someone's tmpfs: the topmost counts.
		"/var/lib/gcsfuse-csi/inline/s1":          {Source: "other:8899aabbccddeeff", MountID: 331, ID: 73},
		"/var/lib/kubelet/pods/with space/vol\\x": {Source: "bkt:aaaaaaaaaaaaaaaa", MountID: 340, ID: 74},
	}
	for path, want := range ours {
		want.MountPoint = filepath.Clean(path)
		got, err := connOf(entries, path)
		if err != nil || got != want {
			t.Errorf("connOf(%s) = %+v, %v; want %+v", path, got, err, want)
		}
	}
	notOurs := []string{
		"/mnt/own-gcsfuse", // a gcsfuse someone runs: source is the bare bucket
		"/mnt/sshfs",
		"/mnt/ntfs", // fuseblk: a block device, not an anonymous one
		"/mnt/odd",  // source looks like ours, but no valid session id
		"/sys/fs/fuse/connections",
		"/proc",
		// Someone's tmpfs stacked over one of ours: the topmost counts.
		"/var/lib/kubelet/pods/p3/volumes/kubernetes.io~csi/vol/mount",
	}
	for _, path := range notOurs {
		if got, err := connOf(entries, path); !errors.Is(err, ErrNotOurs) {
			t.Errorf("connOf(%s) = %+v, %v; want ErrNotOurs", path, got, err)
		}
	}
	for _, path := range []string{"/var/lib/kubelet/pods/p9/volumes/kubernetes.io~csi/vol/mount", "/var/lib/kubelet"} {
		if got, err := connOf(entries, path); !errors.Is(err, ErrNotMounted) {
			t.Errorf("connOf(%s) = %+v, %v; want ErrNotMounted", path, got, err)
		}
	}
}

// fakeCtl is a fusectl over a fixture mount table and a directory of
// connection files; mounts records the mounts of fusectl it was asked for.
type fakeCtl struct {
	*fusectl
	ctl    string // the fake fusectl mount point
	mounts []string
}

func newFakeCtl(t *testing.T, mountinfo string) *fakeCtl {
	t.Helper()
	dir := t.TempDir()
	f := &fakeCtl{ctl: filepath.Join(dir, "connections")}
	f.fusectl = &fusectl{mountinfo: filepath.Join(dir, "mountinfo"), dir: f.ctl, mountCtl: func(d string) error {
		f.mounts = append(f.mounts, d)
		return errors.New("operation not permitted")
	}}
	f.setMountInfo(t, mountinfo)
	for _, id := range []string{"41", "52", "60", "61", "62", "70", "73", "74"} {
		if err := os.MkdirAll(filepath.Join(f.ctl, id), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range map[string]string{"abort": "", "waiting": "0\n"} {
			if err := os.WriteFile(filepath.Join(f.ctl, id, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return f
}

// setMountInfo writes the mount table, with fusectl shown at f.ctl.
func (f *fakeCtl) setMountInfo(t *testing.T, mountinfo string) {
	t.Helper()
	mountinfo = strings.ReplaceAll(mountinfo, " /sys/fs/fuse/connections ", " "+f.ctl+" ")
	if err := os.WriteFile(f.mountinfo, []byte(mountinfo), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeCtl) aborted(t *testing.T) []string {
	t.Helper()
	var out []string
	entries, err := os.ReadDir(f.ctl)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if b, _ := os.ReadFile(filepath.Join(f.ctl, e.Name(), "abort")); len(b) > 0 {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestAbortOnlyOurs(t *testing.T) {
	f := newFakeCtl(t, mountinfoFixture)
	for _, path := range []string{"/mnt/own-gcsfuse", "/mnt/sshfs", "/mnt/ntfs", "/mnt/odd", "/var/lib/kubelet/pods/p3/volumes/kubernetes.io~csi/vol/mount", "/nowhere"} {
		if conn, err := f.lookup(path); err == nil {
			t.Errorf("lookup(%s) = %+v: want it refused", path, conn)
		}
		// Even a connection that names such a mount is not aborted.
		forged := fuseConn{MountPoint: path, Source: "bkt:1f2e3d4c5b6a7980", MountID: 310, ID: 60}
		if err := f.abort(forged); err == nil {
			t.Errorf("abort of %+v succeeded: it is not a mount of this driver", forged)
		}
	}
	if got := f.aborted(t); len(got) != 0 {
		t.Fatalf("connections aborted: %v, want none", got)
	}

	target := "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/vol/mount"
	conn, err := f.lookup(target)
	if err != nil {
		t.Fatal(err)
	}
	// The mount changed between lookup and abort (unmounted, and another
	// mount of ours took its place with another connection): no abort.
	f.setMountInfo(t, strings.Replace(mountinfoFixture, "301 27 0:52 /", "399 27 0:62 /", 1))
	if err := f.abort(conn); err == nil || !strings.Contains(err.Error(), "not aborting") {
		t.Errorf("abort after the mount changed: %v, want a refusal", err)
	}
	f.setMountInfo(t, strings.Replace(mountinfoFixture, "301 27 0:52 / /var/lib/kubelet/pods/p1/", "301 27 0:52 / /elsewhere/", 1))
	if err := f.abort(conn); !errors.Is(err, ErrNotMounted) {
		t.Errorf("abort after the mount went away: %v, want ErrNotMounted", err)
	}
	if got := f.aborted(t); len(got) != 0 {
		t.Fatalf("connections aborted: %v, want none", got)
	}

	f.setMountInfo(t, mountinfoFixture)
	if err := f.abort(conn); err != nil {
		t.Fatal(err)
	}
	if got := f.aborted(t); !slices.Equal(got, []string{"52"}) {
		t.Errorf("connections aborted = %v, want [52] (the session of %s)", got, target)
	}
	if len(f.mounts) != 0 {
		t.Errorf("fusectl mounted at %v although the mount table shows it", f.mounts)
	}
}

func TestWaiting(t *testing.T) {
	f := newFakeCtl(t, mountinfoFixture)
	if err := os.WriteFile(filepath.Join(f.ctl, "52", "waiting"), []byte("3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	conn, err := f.lookup("/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/vol/mount")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := f.waiting(conn); n != 3 || err != nil {
		t.Errorf("waiting = %d, %v; want 3", n, err)
	}
	conn.ID = 99
	if _, err := f.waiting(conn); err == nil {
		t.Error("waiting of a connection fusectl does not list succeeded")
	}
}

func TestFusectlMountedWhenMissing(t *testing.T) {
	without := strings.Replace(mountinfoFixture, "46 23 0:41 / /sys/fs/fuse/connections rw,nosuid,nodev,noexec,relatime shared:24 - fusectl fusectl rw\n", "", 1)
	f := newFakeCtl(t, without)
	conn, err := f.lookup("/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/vol/mount")
	if err != nil {
		t.Fatal(err)
	}
	// Mounting fails: the error says what is missing and how to fix it.
	err = f.abort(conn)
	if !errors.Is(err, errNoFusectl) || !strings.Contains(err.Error(), "operation not permitted") || !strings.Contains(err.Error(), "mount -t fusectl none /sys/fs/fuse/connections") {
		t.Errorf("abort without fusectl: %v; want an error naming fusectl and how to mount it", err)
	}
	if !slices.Equal(f.mounts, []string{f.ctl}) {
		t.Errorf("fusectl mounts = %v, want one at %s", f.mounts, f.ctl)
	}
	// Mounting works: the mount shows in the table, and the abort goes on.
	f.mountCtl = func(d string) error {
		f.mounts = append(f.mounts, d)
		f.setMountInfo(t, mountinfoFixture)
		return nil
	}
	if err := f.abort(conn); err != nil {
		t.Fatal(err)
	}
	if got := f.aborted(t); !slices.Equal(got, []string{"52"}) {
		t.Errorf("connections aborted = %v, want [52]", got)
	}
	// fusectl mounted elsewhere is used where it is.
	g := newFakeCtl(t, without+"47 23 0:41 / /run/fusectl rw - fusectl fusectl rw\n")
	if dir, err := g.ctlDir(); err != nil || dir != "/run/fusectl" || len(g.mounts) != 0 {
		t.Errorf("ctlDir with fusectl at /run/fusectl = %q, %v (mounts %v); want it used as is", dir, err, g.mounts)
	}
}

// ---- the unmount path, with a fake mount table and fake connections ----

// recordingConns is a connAborter over a FakeMounter: every mount of ours
// in it has connection 7. Its abort releases unmounts blocked on it.
type recordingConns struct {
	fm      *mount.FakeMounter
	waits   int
	err     error // returned by abort when set
	mu      sync.Mutex
	aborts  []string
	release chan struct{}
	once    sync.Once
}

func (r *recordingConns) lookup(mountpoint string) (fuseConn, error) {
	mps, _ := r.fm.List()
	for i := len(mps) - 1; i >= 0; i-- {
		if mps[i].Path == mountpoint {
			if mps[i].Type != FUSEType {
				return fuseConn{}, ErrNotOurs
			}
			return fuseConn{MountPoint: mountpoint, Source: mps[i].Device, ID: 7}, nil
		}
	}
	return fuseConn{}, ErrNotMounted
}

func (r *recordingConns) waiting(fuseConn) (int, error) { return r.waits, nil }

func (r *recordingConns) abort(c fuseConn) error {
	if r.err != nil {
		return r.err
	}
	r.mu.Lock()
	r.aborts = append(r.aborts, c.MountPoint)
	r.mu.Unlock()
	r.once.Do(func() { close(r.release) })
	return nil
}

func (r *recordingConns) aborted() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.aborts)
}

// hangingUnmount is a FakeMounter whose unmounts of hang block until the
// connection is aborted, as umount(2) of a hung FUSE mount could.
type hangingUnmount struct {
	*mount.FakeMounter
	hang  map[string]bool
	conns *recordingConns
}

func (h hangingUnmount) Unmount(target string) error {
	if h.hang[target] {
		<-h.conns.release
	}
	return h.FakeMounter.Unmount(target)
}

type stopDaemon struct {
	mu    sync.Mutex
	stops []string
}

func (d *stopDaemon) Start(_ context.Context, _ Session, dev *os.File) error { return dev.Close() }
func (d *stopDaemon) Status(context.Context, string) (SessionStatus, error) {
	return SessionStatus{}, ErrUnknownSession
}
func (d *stopDaemon) List(context.Context) ([]SessionStatus, error)            { return nil, nil }
func (d *stopDaemon) Refresh(context.Context, string, *auth.Credentials) error { return nil }
func (d *stopDaemon) Stop(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stops = append(d.stops, id)
	return nil
}

type unmountEnv struct {
	m           *Mounter
	fm          *mount.FakeMounter
	conns       *recordingConns
	daemon      *stopDaemon
	stage, bind string
	source      string
}

func newUnmountEnv(t *testing.T) *unmountEnv {
	t.Helper()
	dir := t.TempDir()
	e := &unmountEnv{fm: mount.NewFakeMounter(nil), daemon: &stopDaemon{},
		stage: filepath.Join(dir, "stage"), bind: filepath.Join(dir, "target"), source: Source("bkt", "0123456789abcdef")}
	for _, p := range []string{e.stage, e.bind} {
		if err := os.Mkdir(p, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.fm.Mount(e.source, e.stage, FUSEType, nil); err != nil {
		t.Fatal(err)
	}
	// FakeMounter lists binds with the type it was given (the kernel shows
	// the FUSE type); the empty type is what Bind uses.
	if err := e.fm.Mount(e.stage, e.bind, "", []string{"bind"}); err != nil {
		t.Fatal(err)
	}
	e.fm.MountPoints[1].Device = e.source
	e.conns = &recordingConns{fm: e.fm, release: make(chan struct{})}
	e.m = New(Config{StateDir: dir, CheckTimeout: 100 * time.Millisecond}, hangingUnmount{e.fm, map[string]bool{}, e.conns}, nil, e.daemon, nil)
	e.m.conns = e.conns
	return e
}

func (e *unmountEnv) hangUnmountOf(path string) {
	e.m.Interface.(hangingUnmount).hang[path] = true
}

func (e *unmountEnv) mounted(path string) bool {
	for _, mp := range e.fm.MountPoints {
		if mp.Path == path {
			return true
		}
	}
	return false
}

func TestTeardownOfHealthySessionDoesNotAbort(t *testing.T) {
	e := newUnmountEnv(t)
	if _, err := e.m.Unbind(e.bind); err != nil {
		t.Fatal(err)
	}
	if err := e.m.Teardown(context.Background(), e.stage); err != nil {
		t.Fatal(err)
	}
	if got := e.conns.aborted(); len(got) != 0 {
		t.Errorf("aborted %v: a healthy session without users is unmounted, not aborted", got)
	}
	if e.mounted(e.stage) || len(e.daemon.stops) != 1 {
		t.Errorf("after teardown: mounted %v, stops %v; want unmounted and its gcsfuse stopped", e.fm.MountPoints, e.daemon.stops)
	}
}

func TestTeardownAbortsWhenRequestsWait(t *testing.T) {
	e := newUnmountEnv(t)
	e.conns.waits = 2
	// An unbind never aborts: the connection is the session's, shared.
	if _, err := e.m.Unbind(e.bind); err != nil {
		t.Fatal(err)
	}
	if got := e.conns.aborted(); len(got) != 0 {
		t.Fatalf("unbind aborted %v: it must never abort the session's connection", got)
	}
	if err := e.m.Teardown(context.Background(), e.stage); err != nil {
		t.Fatal(err)
	}
	if got := e.conns.aborted(); !slices.Equal(got, []string{e.stage}) {
		t.Errorf("aborted %v, want the session mount %s (requests waited on it)", got, e.stage)
	}
	if e.mounted(e.stage) {
		t.Errorf("still mounted: %v", e.fm.MountPoints)
	}
}

func TestTeardownOfHungSessionAbortsFirst(t *testing.T) {
	e := newUnmountEnv(t)
	// The caller found it hung: the unmount would block, but the abort
	// comes first and unblocks it.
	e.hangUnmountOf(e.stage)
	start := time.Now()
	if err := e.m.teardown(context.Background(), e.stage, true); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took >= e.m.cfg.CheckTimeout {
		t.Errorf("teardown of a session known hung took %s; want no wait for the unmount timeout", took)
	}
	if got := e.conns.aborted(); !slices.Equal(got, []string{e.stage}) {
		t.Errorf("aborted %v, want %s", got, e.stage)
	}
}

func TestTeardownAbortsAnUnmountThatHangs(t *testing.T) {
	e := newUnmountEnv(t)
	e.hangUnmountOf(e.stage)
	start := time.Now()
	if err := e.m.Teardown(context.Background(), e.stage); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if got := e.conns.aborted(); !slices.Equal(got, []string{e.stage}) {
		t.Errorf("aborted %v, want %s", got, e.stage)
	}
	if took < e.m.cfg.CheckTimeout || took > e.m.cfg.CheckTimeout+time.Second {
		t.Errorf("teardown took %s; want the unmount timeout (%s), then the abort, then done", took, e.m.cfg.CheckTimeout)
	}
	if e.mounted(e.stage) {
		t.Errorf("still mounted: %v (the unmount blocked on the connection returns once it is aborted)", e.fm.MountPoints)
	}
	if len(e.daemon.stops) != 1 {
		t.Errorf("stops %v, want the session's gcsfuse stopped", e.daemon.stops)
	}
}

func TestTeardownNeverAbortsWhatIsNotOurs(t *testing.T) {
	e := newUnmountEnv(t)
	other := filepath.Join(filepath.Dir(e.stage), "other")
	if err := os.Mkdir(other, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := e.fm.Mount("tmpfs", other, "tmpfs", nil); err != nil {
		t.Fatal(err)
	}
	e.conns.waits = 5
	if err := e.m.teardown(context.Background(), other, true); !errors.Is(err, ErrNotOurs) {
		t.Errorf("teardown of a tmpfs: %v, want ErrNotOurs", err)
	}
	if got := e.conns.aborted(); len(got) != 0 {
		t.Errorf("aborted %v, want nothing", got)
	}
}

// blockingCheck is a mount table whose mount check blocks until released,
// as statfs(2) on a stopped gcsfuse does, and counts the checks started.
type blockingCheck struct {
	*mount.FakeMounter
	mu      sync.Mutex
	started int
	release chan struct{}
}

func (b *blockingCheck) IsLikelyNotMountPoint(string) (bool, error) {
	b.mu.Lock()
	b.started++
	b.mu.Unlock()
	<-b.release
	return false, nil
}

func (b *blockingCheck) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.started
}

// Kubelet asks for the stats of a hung volume again and again: each check
// times out, but only one blocks a thread at a time.
func TestHungChecksDoNotPileUp(t *testing.T) {
	b := &blockingCheck{FakeMounter: mount.NewFakeMounter(nil), release: make(chan struct{})}
	m := New(Config{CheckTimeout: 20 * time.Millisecond}, b, nil, &stopDaemon{}, nil)
	for i := 0; i < 5; i++ {
		if err := m.boundedCheck("/hung"); !errors.Is(err, ErrTimeout) {
			t.Fatalf("check %d of a hung mount: %v, want ErrTimeout", i, err)
		}
	}
	if n := b.count(); n != 1 {
		t.Errorf("%d checks started for 5 calls on a mount that does not answer, want 1", n)
	}
	if err := m.boundedCheck("/other"); !errors.Is(err, ErrTimeout) || b.count() != 2 {
		t.Errorf("check of another path: %v, %d started; want its own check", err, b.count())
	}
	close(b.release) // gcsfuse answers again, or its connection is aborted
	deadline := time.Now().Add(5 * time.Second)
	for {
		if err := m.boundedCheck("/hung"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("check still failing after the mount answered")
		}
	}
}
