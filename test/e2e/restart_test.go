package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// Two small buckets for the recovery tests, each with one file.
const (
	volOne = "vol-one"
	volTwo = "vol-two"
	file   = "f.txt"
)

var volContent = map[string]string{volOne: "one\n", volTwo: "two\n"}

func volObjects() []fakestorage.Object {
	return []fakestorage.Object{harness.Object(volOne, file, volContent[volOne]), harness.Object(volTwo, file, volContent[volTwo])}
}

// TestRecovery kills each of the three processes a mount depends on (node
// driver, gcsfuse, mounter) with SIGKILL, and checks what survives, what is
// reported, and that the CSI calls kubelet makes repair the rest. The
// mounter runs as nobody without capabilities in all of them (newEnv).
func TestRecovery(t *testing.T) {
	t.Run("a_mounter_unprivileged", testMounterUnprivileged)
	t.Run("b_driver_killed_mid_flight", testDriverKilledMidFlight)
	t.Run("c_gcsfuse_killed", testGCSFuseKilled)
	t.Run("d_mounter_killed", testMounterKilled)
	t.Run("e_failed_remount_is_retried", testFailedRemount)
}

// a. The mounter and its gcsfuse run as uid/gid 65534 with no capability
// at all, and still serve a staged volume; the node driver has no gcsfuse.
func testMounterUnprivileged(t *testing.T) {
	e := newEnv(t, volObjects()...)
	assertUnprivileged(t, "mounter", e.mnt.Pid())
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, volOne, stage, rwx, nil)
	e.mustPublish(t, persistent(volOne, stage, target, rwx, false))
	if got, err := readWithin(filepath.Join(target, file), 5*time.Second); err != nil || got != volContent[volOne] {
		t.Errorf("read through the target = %q, %v; want %q", got, err, volContent[volOne])
	}
	// A write goes through gcsfuse's temp file under the mounter's work dir.
	if err := os.WriteFile(filepath.Join(target, "w.txt"), []byte("written"), 0o644); err != nil {
		t.Errorf("write through the target: %v", err)
	} else if got := e.objectIn(t, volOne, "w.txt"); got != "written" {
		t.Errorf("object w.txt = %q, want %q", got, "written")
	}
	pids := e.gcsfuse(t)
	if len(pids) != 1 {
		t.Fatalf("gcsfuse children of the mounter = %v, want one", pids)
	}
	assertUnprivileged(t, "gcsfuse", pids[0])
	if drv, _, _ := harness.Children(e.drv.Pid(), "gcsfuse"); len(drv) != 0 {
		t.Errorf("gcsfuse children of the node driver = %v, want none", drv)
	}
}

// assertUnprivileged fails unless pid runs as nobody:nobody (real, effective,
// saved and filesystem ids), without supplementary groups, with empty
// effective, permitted and ambient capability sets, and no_new_privs set.
func assertUnprivileged(t *testing.T, what string, pid int) {
	t.Helper()
	st, err := harness.ProcStatus(pid)
	if err != nil {
		t.Fatalf("%s pid %d: %v", what, pid, err)
	}
	ids := fmt.Sprintf("%d %d %d %d", nobody, nobody, nobody, nobody)
	const none = "0000000000000000"
	for key, want := range map[string]string{"Uid": ids, "Gid": ids, "Groups": "", "CapEff": none, "CapPrm": none, "CapAmb": none, "NoNewPrivs": "1"} {
		if got := st[key]; got != want {
			t.Errorf("%s pid %d: %s = %q, want %q", what, pid, key, got, want)
		}
	}
	t.Logf("%s pid %d: Uid %s, CapEff %s, CapPrm %s, CapBnd %s", what, pid, st["Uid"], st["CapEff"], st["CapPrm"], st["CapBnd"])
}

// pubTarget is one target of the driver-kill test.
type pubTarget struct {
	name string
	req  *csi.NodePublishVolumeRequest
	want string // the content of f.txt through it
}

// b. kill -9 of the node driver while 20 publishes and unpublishes are in
// flight: reads through every mount published before keep succeeding
// (the FUSE daemons live in the mounter), the restarted driver finishes
// every operation when kubelet repeats it, keeps the healthy sessions
// (same gcsfuse pids) and ends with one gcsfuse per session.
func testDriverKilledMidFlight(t *testing.T) {
	e := newEnv(t, volObjects()...)
	s1, s2 := e.path("stage/one"), e.path("stage/two")
	e.mustStage(t, volOne, s1, rwx, nil)
	e.mustStage(t, volTwo, s2, rwx, nil)

	inlineCap := harness.MountCapability(inlineMode, "")
	opts := map[string]map[string]string{ // inline sessions
		"A": {mounterEphemeral: "true", "bucketName": volOne},
		"B": {mounterEphemeral: "true", "bucketName": volTwo},
		"C": {mounterEphemeral: "true", "bucketName": volTwo, "fileMode": "0640"},
		"D": {mounterEphemeral: "true", "bucketName": volOne, "fileMode": "0640"},
	}
	target := func(name string) string {
		p := e.path("pods/" + name + "/vol")
		mkdir(t, filepath.Dir(p)) // kubelet creates the pod's volume dir
		return p
	}
	staged := func(name, vol string, ro bool) pubTarget {
		stage := map[string]string{volOne: s1, volTwo: s2}[vol]
		return pubTarget{name, persistent(vol, stage, target(name), rwx, ro), volContent[vol]}
	}
	inl := func(name, session string, ro bool) pubTarget {
		req := inline("inline-"+name, target(name), inlineCap, opts[session])
		req.Readonly = ro
		return pubTarget{name, req, volContent[opts[session]["bucketName"]]}
	}
	// Read continuously by the reader; never touched by the operations.
	read := []pubTarget{
		staged("r1", volOne, false), staged("r2", volOne, true), staged("r3", volTwo, false), staged("r4", volTwo, true),
		inl("r5", "A", false), inl("r6", "B", true),
	}
	// Published before, unpublished in flight. u9 and u10 are the only
	// users of inline session C, which must end with them.
	gone := []pubTarget{
		staged("u1", volOne, false), staged("u2", volOne, false), staged("u3", volOne, true),
		staged("u4", volTwo, false), staged("u5", volTwo, false), staged("u6", volTwo, true),
		inl("u7", "A", false), inl("u8", "A", true), inl("u9", "C", false), inl("u10", "C", false),
	}
	// Published in flight; D is a session that does not exist before.
	fresh := []pubTarget{
		staged("n1", volOne, false), staged("n2", volOne, false), staged("n3", volOne, true),
		staged("n4", volTwo, false), staged("n5", volTwo, false), staged("n6", volTwo, true),
		inl("n7", "A", false), inl("n8", "A", true), inl("n9", "D", false), inl("n10", "D", true),
	}

	// Which gcsfuse serves which session: the new child after its first use.
	pids := e.gcsfuse(t)
	if len(pids) != 2 {
		t.Fatalf("gcsfuse children after staging two volumes = %v, want two", pids)
	}
	pidV1, pidV2 := pids[0], pids[1] // which is which does not matter below
	session := map[string]int{}
	for _, p := range slices.Concat(read, gone) {
		before := e.gcsfuse(t)
		e.mustPublish(t, p.req)
		if after := e.gcsfuse(t); len(after) > len(before) {
			session[p.name] = newPid(t, before, after)
		}
	}
	pidA, pidB, pidC := session["r5"], session["r6"], session["u9"]
	if pidA == 0 || pidB == 0 || pidC == 0 || len(session) != 3 {
		t.Fatalf("new gcsfuse per first use = %v, want one each for r5 (A), r6 (B), u9 (C) only", session)
	}
	for _, p := range slices.Concat(read, gone) {
		if got, err := readWithin(filepath.Join(p.req.TargetPath, file), 5*time.Second); err != nil || got != p.want {
			t.Fatalf("read through %s before the kill = %q, %v; want %q", p.name, got, err, p.want)
		}
	}

	rd := startReader(t, e, read)
	rd.waitOK(t, 3, 10*time.Second)
	if fail := rd.timeline(t).fail; len(fail) > 0 {
		t.Fatalf("reader failed before the kill: %v", fail)
	}

	// 20 operations at once; the driver is killed 30 ms in.
	type op struct {
		name     string
		call     func(context.Context, csi.NodeClient) error
		attempts int
		failures []codes.Code
		sent     time.Time // the first attempt
		firstErr error     // of the first attempt
		done     time.Time
		err      error
	}
	var ops []*op
	for _, p := range fresh {
		ops = append(ops, &op{name: "publish " + p.name, call: func(ctx context.Context, n csi.NodeClient) error {
			_, err := n.NodePublishVolume(ctx, p.req)
			return err
		}})
		t.Cleanup(func() {
			e.cleanupCall(t, "unpublish "+p.name, func(ctx context.Context) error { return e.unpublish(ctx, p.req.VolumeId, p.req.TargetPath) })
		})
	}
	for _, p := range gone {
		ops = append(ops, &op{name: "unpublish " + p.name, call: func(ctx context.Context, n csi.NodeClient) error {
			_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: p.req.VolumeId, TargetPath: p.req.TargetPath})
			return err
		}})
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, o := range ops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			o.attempts, o.err = retry(60*time.Second, func(ctx context.Context) error {
				first := o.sent.IsZero()
				if first {
					o.sent = time.Now()
				}
				err := o.call(ctx, e.node())
				if first {
					o.firstErr = err
				}
				if err != nil {
					o.failures = append(o.failures, status.Code(err))
				}
				return err
			})
			o.done = time.Now()
		}()
	}
	opsStart := time.Now()
	close(start)
	time.Sleep(30 * time.Millisecond)
	t0 := time.Now()
	if err := e.drv.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	e.restartDriver(t)
	t1 := time.Now()
	waitGroup(t, &wg, 90*time.Second, "the 20 operations")
	opsDone := time.Now()

	var beforeKill, aborted int
	var cut []string
	for _, o := range ops {
		if o.err != nil {
			t.Errorf("%s: %d attempts (failures %v), last: %v", o.name, o.attempts, o.failures, o.err)
		}
		if o.firstErr == nil && o.done.Before(killed) {
			beforeKill++
		}
		if o.firstErr != nil && o.sent.Before(t0) {
			cut = append(cut, o.name)
		}
		if slices.Contains(o.failures, codes.Aborted) {
			aborted++
		}
	}
	rd.waitOK(t, len(rd.timeline(t).oks)+3, 10*time.Second) // reads go on after the operations
	rd.stop(t)
	tl := rd.timeline(t)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }
	t.Logf("timeline: 20 operations sent at -%s; kill -9 of the node driver at T0 (SIGKILL reaped after %s); "+
		"driver serving again (first Probe ready) at T0+%s; all 20 operations done at T0+%s",
		ms(t0.Sub(opsStart)), ms(killed.Sub(t0)), ms(t1.Sub(t0)), ms(opsDone.Sub(t0)))
	t.Logf("operations: %d done before the kill, %d cut by it mid-call %v, the rest sent while the driver was down; %d saw Aborted on a retry",
		beforeKill, len(cut), cut, aborted)
	t.Logf("restarted driver: %s", lastLine(e.log, "reconciled"))
	gap, gapFrom := tl.longestGap(opsStart, opsDone)
	t.Logf("reads: %d successful read rounds in all, %d failed; %d successful between T0 and T1; longest gap between successful rounds %s (from T0%+.0f ms) over [start of the operations, all done]",
		tl.ok(time.Time{}, time.Now()), len(tl.fail), tl.ok(t0, t1), ms(gap), float64(gapFrom.Sub(t0))/float64(time.Millisecond))
	for _, f := range tl.fail {
		t.Errorf("reader: %s", f)
	}
	if t1.Sub(t0) > 200*time.Millisecond && tl.ok(t0, t1) == 0 {
		t.Errorf("no successful read while the driver was down (T0..T0+%s); want reads to go on without it", ms(t1.Sub(t0)))
	}
	if tl.ok(opsDone, time.Now()) == 0 {
		t.Errorf("no successful read after the operations finished")
	}
	if gap > 5*time.Second {
		t.Errorf("reads stopped for %s around the kill; want them to go on (the mounts do not depend on the driver)", ms(gap))
	}

	for _, p := range fresh {
		if got, err := readWithin(filepath.Join(p.req.TargetPath, file), 5*time.Second); err != nil || got != p.want {
			t.Errorf("read through new target %s = %q, %v; want %q", p.name, got, err, p.want)
		}
		if p.req.Readonly {
			if err := os.WriteFile(filepath.Join(p.req.TargetPath, "ro.txt"), []byte("no"), 0o644); !errors.Is(err, syscall.EROFS) {
				t.Errorf("write through read-only target %s: %v, want EROFS", p.name, err)
			}
		}
	}
	for _, p := range slices.Concat(read, fresh) {
		if n := e.mountsAt(t, p.req.TargetPath); n != 1 {
			t.Errorf("mounts at %s (%s) = %d, want 1", p.name, p.req.TargetPath, n)
		}
	}
	for _, p := range gone {
		if n := e.mountsAt(t, p.req.TargetPath); n != 0 {
			t.Errorf("mounts at unpublished target %s = %d, want 0", p.name, n)
		}
		if _, err := os.Lstat(p.req.TargetPath); !os.IsNotExist(err) {
			t.Errorf("unpublished target %s (%s): %v, want it removed", p.name, p.req.TargetPath, err)
		}
	}
	for _, s := range []string{s1, s2} {
		if n := e.mountsAt(t, s); n != 1 {
			t.Errorf("mounts at staging path %s = %d, want 1", s, n)
		}
	}
	paths := func(ps ...pubTarget) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.req.TargetPath)
		}
		return out
	}
	byName := func(names ...string) []pubTarget {
		var out []pubTarget
		for _, p := range slices.Concat(read, fresh) {
			if slices.Contains(names, p.name) {
				out = append(out, p)
			}
		}
		return out
	}
	e.assertSessions(t, map[string][]string{
		"staged " + volOne: append(paths(byName("r1", "r2", "n1", "n2", "n3")...), s1),
		"staged " + volTwo: append(paths(byName("r3", "r4", "n4", "n5", "n6")...), s2),
		"inline A":         paths(byName("r5", "n7", "n8")...),
		"inline B":         paths(byName("r6")...),
		"inline D":         paths(byName("n9", "n10")...),
	})
	final := e.gcsfuse(t)
	for name, pid := range map[string]int{"staged volume": pidV1, "other staged volume": pidV2, "inline A": pidA, "inline B": pidB} {
		if !slices.Contains(final, pid) {
			t.Errorf("gcsfuse %d (%s, healthy before the kill) is gone: %v; want healthy sessions kept, not re-mounted", pid, name, final)
		}
	}
	if slices.Contains(final, pidC) {
		t.Errorf("gcsfuse %d of inline session C still runs after its last two targets were unpublished", pidC)
	}
	if len(final) != 5 {
		t.Errorf("gcsfuse children = %v, want 5: two staged volumes and inline sessions A, B, D", final)
	}

	for _, p := range slices.Concat(read, fresh) {
		e.mustUnpublish(t, p.req.VolumeId, p.req.TargetPath)
	}
	e.mustUnstage(t, volOne, s1)
	e.mustUnstage(t, volTwo, s2)
	e.assertClean(t)
}

// newPid returns the one pid in after that is not in before.
func newPid(t *testing.T, before, after []int) int {
	t.Helper()
	var added []int
	for _, p := range after {
		if !slices.Contains(before, p) {
			added = append(added, p)
		}
	}
	if len(added) != 1 {
		t.Fatalf("gcsfuse children %v -> %v: want exactly one new", before, after)
	}
	return added[0]
}

// assertSessions checks the mount table under the test directory: one
// source per session, each mounted exactly at want's paths (plus, for an
// inline session, its one mount under the state dir), and nothing else.
func (e *env) assertSessions(t *testing.T, want map[string][]string) {
	t.Helper()
	got := e.mountsBySource(t)
	matched := map[string]bool{}
	for src, ps := range got {
		var state, others []string
		for _, p := range ps {
			if strings.HasPrefix(p, e.state+"/") {
				state = append(state, p)
			} else {
				others = append(others, p)
			}
		}
		slices.Sort(others)
		name := ""
		for n, w := range want {
			w = slices.Sorted(slices.Values(w))
			if slices.Equal(w, others) {
				name = n
			}
		}
		switch {
		case name == "":
			t.Errorf("mounts of %s = %v: not a session this test expects (%v)", src, ps, want)
		case matched[name]:
			t.Errorf("session %s mounted from two sources", name)
		case strings.HasPrefix(name, "inline") && len(state) != 1, !strings.HasPrefix(name, "inline") && len(state) != 0:
			t.Errorf("session %s (%s): mounts under the state dir %v", name, src, state)
		}
		matched[name] = true
	}
	for n, w := range want {
		if !matched[n] {
			t.Errorf("session %s: no source mounted at exactly %v; mount table: %v", n, w, got)
		}
	}
}

// restartDriver starts the killed driver again on the same socket, state
// dir and mounter, and makes it the one the test talks to.
func (e *env) restartDriver(t *testing.T) {
	t.Helper()
	e.mu.Lock()
	old := e.drv
	e.mu.Unlock()
	d, err := old.Restart()
	if err != nil {
		t.Fatalf("restart the node driver: %v\ndriver log:\n%s", err, tailFile(e.log, 40))
	}
	e.mu.Lock()
	e.dead = append(e.dead, old)
	e.drv = d
	e.mu.Unlock()
}

// restartMounter starts the killed mounter again on the same socket.
func (e *env) restartMounter(t *testing.T) {
	t.Helper()
	m, err := e.mnt.Restart()
	if err != nil {
		t.Fatalf("restart the mounter: %v\nmounter log:\n%s", err, tailFile(e.mounterLog, 40))
	}
	e.mu.Lock()
	e.mnt = m
	e.mu.Unlock()
}

func waitGroup(t *testing.T, wg *sync.WaitGroup, timeout time.Duration, what string) {
	t.Helper()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("%s not finished after %s", what, timeout)
	}
}

// reader is a shell loop in its own process group that reads f.txt through
// every given target, about every 10 ms, and logs "OK <unix time>" or
// "FAIL <unix time> <what it read>" per round.
type reader struct {
	cmd  *exec.Cmd
	log  string
	done chan error
}

func startReader(t *testing.T, e *env, targets []pubTarget) *reader {
	t.Helper()
	var files []string
	var want strings.Builder
	for _, p := range targets {
		files = append(files, filepath.Join(p.req.TargetPath, file))
		want.WriteString(p.want)
	}
	const script = `while :; do
  got=$(timeout -s KILL 5 cat "$@" 2>&1)
  if [ "$got" = "$WANT" ]; then echo "OK $(date +%s.%N)"; else echo "FAIL $(date +%s.%N) $(printf '%s' "$got" | tr '\n' ' ')"; fi
  sleep 0.01
done`
	r := &reader{log: e.path("reader.log"), done: make(chan error, 1)}
	out, err := os.Create(r.log)
	if err != nil {
		t.Fatal(err)
	}
	r.cmd = exec.Command("sh", append([]string{"-c", script, "sh"}, files...)...)
	r.cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "WANT=" + strings.TrimRight(want.String(), "\n")}
	r.cmd.Stdout, r.cmd.Stderr = out, out
	r.cmd.Dir = "/"
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		out.Close()
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait(); out.Close() }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop kills the reader's process group (its pgid is its pid) and waits.
// Once the shell has been reaped its pid may be reused: nothing is sent then.
func (r *reader) stop(t *testing.T) {
	select {
	case err := <-r.done:
		r.done <- err
		return
	default:
	}
	_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(10 * time.Second):
		t.Errorf("reader pid %d still running 10 s after SIGKILL", r.cmd.Process.Pid)
	}
}

// waitOK waits until the reader has logged n successful rounds; it stops
// early when the reader reports a failure (the caller reports it).
func (r *reader) waitOK(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		tl := r.timeline(t)
		if len(tl.fail) > 0 {
			return
		}
		if len(tl.oks) >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("reader logged %d successful rounds in %s, want %d; log:\n%s", len(tl.oks), timeout, n, tailFile(r.log, 10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type timeline struct {
	oks  []time.Time
	fail []string
}

func (r *reader) timeline(t *testing.T) timeline {
	t.Helper()
	f, err := os.Open(r.log)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var tl timeline
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue // a line still being written
		}
		sec, err := strconv.ParseFloat(fields[1], 64)
		if err != nil {
			continue
		}
		at := time.Unix(0, int64(sec*1e9))
		switch fields[0] {
		case "OK":
			tl.oks = append(tl.oks, at)
		case "FAIL":
			tl.fail = append(tl.fail, line)
		}
	}
	return tl
}

// ok counts the successful rounds in [from, to].
func (tl timeline) ok(from, to time.Time) int {
	n := 0
	for _, at := range tl.oks {
		if !at.Before(from) && !at.After(to) {
			n++
		}
	}
	return n
}

// longestGap is the longest time without a successful round within
// [from, to] (its edges count as rounds), and when it began.
func (tl timeline) longestGap(from, to time.Time) (time.Duration, time.Time) {
	prev, gap, at := from, time.Duration(0), from
	for _, ok := range append(slices.Clone(tl.oks), to) {
		if ok.Before(from) || ok.After(to) {
			continue
		}
		if d := ok.Sub(prev); d > gap {
			gap, at = d, prev
		}
		prev = ok
	}
	return gap, at
}

// c. kill -9 of one gcsfuse: NodeGetVolumeStats reports the volume
// abnormal within 10 s and NodeGetVolumeHealth INACCESSIBLE; republishing
// the target mounts a new gcsfuse; a second target of the dead volume that
// is not republished unpublishes cleanly.
func testGCSFuseKilled(t *testing.T) {
	e := newEnv(t, volObjects()...)
	assertCapabilities(t, e)
	stage, t1, t2 := e.path("stage"), e.path("pods/p1/vol"), e.path("pods/p2/vol")
	e.mustStage(t, volOne, stage, rwx, nil)
	e.mustPublish(t, persistent(volOne, stage, t1, rwx, false))
	e.mustPublish(t, persistent(volOne, stage, t2, rwx, true))
	for _, p := range []string{t1, t2, stage} {
		e.assertCondition(t, volOne, p, false)
	}
	e.assertHealth(t, volOne, t1, "", false)
	e.assertHealth(t, volOne, t2, stage, false)
	e.assertHealth(t, volOne, "", stage, false)
	e.assertStatsNotFound(t, volOne, e.path("pods/p3/vol"))

	killedAt := time.Now()
	old := e.killGCSFuse(t)
	reaped := time.Since(killedAt)
	_, msg := e.waitAbnormal(t, volOne, t1, 10*time.Second)
	t.Logf("kill -9 of gcsfuse %d: reaped by the mounter after %s; NodeGetVolumeStats(%s) abnormal %s after the kill: %q",
		old, reaped.Round(time.Millisecond), t1, time.Since(killedAt).Round(time.Millisecond), msg)
	for _, p := range []string{t1, t2, stage} {
		e.assertCondition(t, volOne, p, true)
	}
	e.assertHealth(t, volOne, t1, "", true)
	e.assertHealth(t, volOne, t2, stage, true)
	e.assertHealth(t, volOne, "", stage, true)

	e.mustPublishRetry(t, persistent(volOne, stage, t1, rwx, false))
	if got, err := readWithin(filepath.Join(t1, file), 5*time.Second); err != nil || got != volContent[volOne] {
		t.Errorf("read through the republished target = %q, %v; want %q", got, err, volContent[volOne])
	}
	pids := e.gcsfuse(t)
	if len(pids) != 1 || pids[0] == old {
		t.Errorf("gcsfuse children after the republish = %v, want one new process (the killed one was %d)", pids, old)
	}
	e.assertCondition(t, volOne, t1, false)
	e.assertHealth(t, volOne, t1, stage, false)
	e.assertCondition(t, volOne, stage, false)
	// t2 still shows the dead connection: health is per mount, not per volume.
	e.assertCondition(t, volOne, t2, true)

	e.mustUnpublish(t, volOne, t2)
	if n := e.mountsAt(t, t2); n != 0 {
		t.Errorf("mounts at %s after unpublishing its dead bind = %d, want 0", t2, n)
	}
	if _, err := os.Lstat(t2); !os.IsNotExist(err) {
		t.Errorf("target %s after unpublish: %v, want it removed", t2, err)
	}
	e.assertSessions(t, map[string][]string{"staged " + volOne: {stage, t1}})
	e.mustUnpublish(t, volOne, t1)
	e.mustUnstage(t, volOne, stage)
	e.assertClean(t)
}

// d. kill -9 of the mounter: every gcsfuse dies with it, every mount is
// reported abnormal, a publish that needs a new gcsfuse fails Unavailable
// naming the mounter's socket; once the mounter is back, republishing
// every target makes all of them serve again.
func testMounterKilled(t *testing.T) {
	e := newEnv(t, volObjects()...)
	inlineCap := harness.MountCapability(inlineMode, "")
	optsA := map[string]string{mounterEphemeral: "true", "bucketName": volOne}
	optsB := map[string]string{mounterEphemeral: "true", "bucketName": volTwo}
	stage := e.path("stage")
	e.mustStage(t, volOne, stage, rwx, nil)
	for _, p := range []string{"p1", "p2", "p3", "p4", "p5"} {
		mkdir(t, e.path("pods/"+p))
	}
	reqs := []*csi.NodePublishVolumeRequest{
		persistent(volOne, stage, e.path("pods/p1/vol"), rwx, false),
		persistent(volOne, stage, e.path("pods/p2/vol"), rwx, true),
		inline("inline-3", e.path("pods/p3/vol"), inlineCap, optsA),
		inline("inline-4", e.path("pods/p4/vol"), inlineCap, optsB),
	}
	want := []string{volContent[volOne], volContent[volOne], volContent[volOne], volContent[volTwo]}
	for _, r := range reqs {
		e.mustPublish(t, r)
	}
	for i, r := range reqs {
		if got, err := readWithin(filepath.Join(r.TargetPath, file), 5*time.Second); err != nil || got != want[i] {
			t.Fatalf("read through %s = %q, %v; want %q", r.TargetPath, got, err, want[i])
		}
	}
	old := e.gcsfuse(t)
	if len(old) != 3 {
		t.Fatalf("gcsfuse children = %v, want 3 (one staged volume, two inline sessions)", old)
	}

	killedAt := time.Now()
	if err := e.mnt.Kill(); err != nil {
		t.Fatal(err)
	}
	for _, pid := range old {
		if state := waitDead(pid, 10*time.Second); state != "" {
			t.Errorf("gcsfuse %d 10 s after kill -9 of its mounter: state %s, want it dead", pid, state)
		}
	}
	t.Logf("kill -9 of the mounter: its %d gcsfuse children dead after %s", len(old), time.Since(killedAt).Round(time.Millisecond))
	for _, r := range reqs {
		took, msg := e.waitAbnormal(t, r.VolumeId, r.TargetPath, 10*time.Second)
		t.Logf("NodeGetVolumeStats(%s) abnormal after %s: %q", r.TargetPath, took.Round(time.Millisecond), msg)
		e.assertHealth(t, r.VolumeId, r.TargetPath, "", true)
	}
	if _, err := readWithin(filepath.Join(reqs[0].TargetPath, file), 5*time.Second); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read through %s with the mounter dead: %v, want ENOTCONN", reqs[0].TargetPath, err)
	}

	// Publishes that need a new gcsfuse fail while the mounter is down.
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	newInline := inline("inline-5", e.path("pods/p5/vol"), inlineCap, map[string]string{mounterEphemeral: "true", "bucketName": volTwo, "fileMode": "0640"})
	t.Cleanup(func() {
		e.cleanupCall(t, "unpublish "+newInline.TargetPath, func(ctx context.Context) error { return e.unpublish(ctx, newInline.VolumeId, newInline.TargetPath) })
	})
	stage2 := e.path("stage2")
	mkdir(t, stage2)
	t.Cleanup(func() {
		e.cleanupCall(t, "unstage "+stage2, func(ctx context.Context) error { return e.unstage(ctx, volTwo, stage2) })
	})
	for _, c := range []struct {
		what string
		call func() error
	}{
		{"republish of a staged target", func() error { _, err := e.node().NodePublishVolume(ctx, reqs[0]); return err }},
		{"publish of a new inline session", func() error { _, err := e.node().NodePublishVolume(ctx, newInline); return err }},
		{"stage of another volume", func() error {
			_, err := e.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: volTwo, StagingTargetPath: stage2, VolumeCapability: rwx})
			return err
		}},
	} {
		err := c.call()
		if st := status.Convert(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), e.socket) {
			t.Errorf("%s with the mounter down: %v; want Unavailable naming the mounter socket %s", c.what, err, e.socket)
		} else {
			t.Logf("%s with the mounter down: %v", c.what, err)
		}
	}
	for _, p := range []string{newInline.TargetPath, stage2} {
		if n := e.mountsAt(t, p); n != 0 {
			t.Errorf("a failed call left %d mount(s) at %s", n, p)
		}
	}

	e.restartMounter(t)
	restarted := time.Now()
	for _, r := range reqs {
		e.mustPublishRetry(t, r)
	}
	t.Logf("mounter restarted; all %d targets republished in %s", len(reqs), time.Since(restarted).Round(time.Millisecond))
	for i, r := range reqs {
		if got, err := readWithin(filepath.Join(r.TargetPath, file), 5*time.Second); err != nil || got != want[i] {
			t.Errorf("read through %s after the republish = %q, %v; want %q", r.TargetPath, got, err, want[i])
		}
		e.assertCondition(t, r.VolumeId, r.TargetPath, false)
		e.assertHealth(t, r.VolumeId, r.TargetPath, "", false)
		if n := e.mountsAt(t, r.TargetPath); n != 1 {
			t.Errorf("mounts at %s after the republish = %d, want 1", r.TargetPath, n)
		}
	}
	if n := e.mountsAt(t, stage); n != 1 {
		t.Errorf("mounts at the staging path after the republish = %d, want 1", n)
	}
	pids := e.gcsfuse(t)
	if len(pids) != 3 {
		t.Errorf("gcsfuse children of the restarted mounter = %v, want 3", pids)
	}
	for _, p := range pids {
		if slices.Contains(old, p) {
			t.Errorf("gcsfuse %d of the killed mounter is a child of the new one", p)
		}
	}
	e.assertSessions(t, map[string][]string{
		"staged " + volOne: {stage, reqs[0].TargetPath, reqs[1].TargetPath},
		"inline A":         {reqs[2].TargetPath},
		"inline B":         {reqs[3].TargetPath},
	})
	for _, r := range reqs {
		e.mustUnpublish(t, r.VolumeId, r.TargetPath)
	}
	e.mustUnstage(t, volOne, stage)
	e.assertClean(t)
}

// e. A re-mount of a dead staged volume that fails (here: its bucket is
// gone for a while) fails the publish with the cause, and leaves the volume
// staged: once the bucket is back, the publish kubelet repeats succeeds.
// (Kubelet never repeats NodeStageVolume for a pod that is running.)
func testFailedRemount(t *testing.T) {
	e := newEnv(t, volObjects()...)
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, volTwo, stage, rwx, nil)
	e.mustPublish(t, persistent(volTwo, stage, target, rwx, false))
	e.killGCSFuse(t)

	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := e.gcs.Client.Bucket(volTwo).Object(file).Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.gcs.Client.Bucket(volTwo).Delete(ctx); err != nil {
		t.Fatal(err)
	}
	// A gcsfuse killed soon after its start counts as a crash: the driver
	// may back off (Unavailable) before it tries, and finds the bucket gone.
	n, err := retry(retryFor, func(ctx context.Context) error {
		_, err := e.node().NodePublishVolume(ctx, persistent(volTwo, stage, target, rwx, false))
		return err
	})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), volTwo) {
		t.Errorf("republish of the dead volume while its bucket is gone (%d attempts): %v; want NotFound naming %s", n, err, volTwo)
	}

	e.gcs.Server.CreateObject(harness.Object(volTwo, file, volContent[volTwo]))
	e.mustPublishRetry(t, persistent(volTwo, stage, target, rwx, false))
	if got, err := readWithin(filepath.Join(target, file), 5*time.Second); err != nil || got != volContent[volTwo] {
		t.Errorf("read after the bucket came back and the publish was repeated = %q, %v; want %q", got, err, volContent[volTwo])
	}
	e.mustUnpublish(t, volTwo, target)
	e.mustUnstage(t, volTwo, stage)
	e.assertClean(t)
}

// waitDead waits until pid is gone or a zombie (an orphan's zombie waits
// for whoever reaps orphans here), and returns "" or the last state seen.
func waitDead(pid int, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return ""
		}
		s := string(b)
		state := "?"
		if i := strings.LastIndexByte(s, ')'); i >= 0 && len(s) > i+2 {
			state = s[i+2 : i+3]
		}
		if state == "Z" || state == "X" {
			return ""
		}
		if time.Now().After(deadline) {
			return state
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ---- health ----

// assertCapabilities checks the node advertises the stats and health RPCs,
// and the old VOLUME_CONDITION (wire value 4) kubelet still looks for.
func assertCapabilities(t *testing.T, e *env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := e.node().NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []int32
	for _, c := range resp.GetCapabilities() {
		got = append(got, int32(c.GetRpc().GetType()))
	}
	for _, want := range []csi.NodeServiceCapability_RPC_Type{csi.NodeServiceCapability_RPC_GET_VOLUME_STATS, csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH, 4} {
		if !slices.Contains(got, int32(want)) {
			t.Errorf("NodeGetCapabilities = %v, want it to include %d (%v)", got, want, want)
		}
	}
}

// condition calls NodeGetVolumeStats and decodes its volume_condition.
func (e *env) condition(volumeID, path string) (abnormal bool, msg string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := e.node().NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: volumeID, VolumePath: path})
	if err != nil {
		return false, "", err
	}
	abnormal, msg, ok := driver.VolumeConditionOf(resp)
	if !ok {
		return false, "", fmt.Errorf("NodeGetVolumeStats(%s) has no volume_condition: %v", path, resp)
	}
	if !abnormal && len(resp.GetUsage()) == 0 {
		return false, "", fmt.Errorf("NodeGetVolumeStats(%s) of a healthy mount has no usage: %v", path, resp)
	}
	return abnormal, msg, nil
}

func (e *env) assertCondition(t *testing.T, volumeID, path string, wantAbnormal bool) {
	t.Helper()
	abnormal, msg, err := e.condition(volumeID, path)
	if err != nil {
		t.Errorf("NodeGetVolumeStats(%s): %v", path, err)
	} else if abnormal != wantAbnormal {
		t.Errorf("NodeGetVolumeStats(%s): abnormal=%v (%q), want abnormal=%v", path, abnormal, msg, wantAbnormal)
	} else if abnormal && msg == "" {
		t.Errorf("NodeGetVolumeStats(%s): abnormal without a message", path)
	}
}

// waitAbnormal polls NodeGetVolumeStats until it reports path abnormal and
// returns how long that took and the message; it fails after timeout.
func (e *env) waitAbnormal(t *testing.T, volumeID, path string, timeout time.Duration) (time.Duration, string) {
	t.Helper()
	start := time.Now()
	var last string
	for {
		abnormal, msg, err := e.condition(volumeID, path)
		if err == nil && abnormal {
			if msg == "" {
				t.Errorf("NodeGetVolumeStats(%s): abnormal without a message", path)
			}
			return time.Since(start), msg
		}
		last = fmt.Sprintf("abnormal=%v %q %v", abnormal, msg, err)
		if time.Since(start) > timeout {
			t.Fatalf("NodeGetVolumeStats(%s) not abnormal %s after its gcsfuse died; last answer: %s", path, timeout, last)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// assertHealth checks NodeGetVolumeHealth of a target, a staging path, or
// both (either may be empty): an INACCESSIBLE entry with a message when
// dead, no entry when healthy.
func (e *env) assertHealth(t *testing.T, volumeID, target, stage string, wantDead bool) {
	t.Helper()
	req := &csi.NodeGetVolumeHealthRequest{VolumeId: volumeID, VolumePublishPath: target, StagingTargetPath: stage}
	path := strings.Trim(target+" "+stage, " ")
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	resp, err := e.node().NodeGetVolumeHealth(ctx, req)
	if err != nil {
		t.Errorf("NodeGetVolumeHealth(%s): %v", path, err)
		return
	}
	entries := resp.GetVolumeHealth().GetHealthStatuses()
	if !wantDead {
		if len(entries) != 0 {
			t.Errorf("NodeGetVolumeHealth(%s) of a healthy mount = %v, want no entry", path, entries)
		}
		return
	}
	for _, h := range entries {
		if h.GetStatus() == csi.VolumeHealthErrorType_INACCESSIBLE && h.GetMessage() != "" {
			return
		}
	}
	t.Errorf("NodeGetVolumeHealth(%s) of a dead mount = %v, want an INACCESSIBLE entry with a message", path, entries)
}

func (e *env) assertStatsNotFound(t *testing.T, volumeID, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	_, err := e.node().NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: volumeID, VolumePath: path})
	if status.Code(err) != codes.NotFound {
		t.Errorf("NodeGetVolumeStats(%s), not a mount of the driver: %v, want NotFound", path, err)
	}
}

// lastLine returns the last line of the file at path that contains substr.
func lastLine(path, substr string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	last := "(no line with " + strconv.Quote(substr) + ")"
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, substr) {
			last = line
		}
	}
	return last
}
