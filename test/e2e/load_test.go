package e2e

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// loadVolumes is how many distinct volumes TestLoad stages and publishes at
// once: LOAD_VOLUMES, default 200 (each is a gcsfuse of about 40 MB).
func loadVolumes(t *testing.T) int {
	n := 200
	if s := os.Getenv("LOAD_VOLUMES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			t.Fatalf("LOAD_VOLUMES=%q: want a positive integer", s)
		}
		n = v
	}
	return n
}

// loadPods is how many targets TestLoad publishes one volume to at once.
const loadPods = 30

// fds counts pid's open file descriptors.
func fds(t *testing.T, pid int) int {
	t.Helper()
	e, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(e)
}

// TestLoad stages and publishes many distinct volumes concurrently, then
// many targets of one volume, as kubelet would (retrying Aborted and
// Unavailable), and checks that every call ends well and nothing leaks:
// no mount, no gcsfuse, no file descriptor of the driver or the mounter.
// The figures are logged (a benchmark, not an assertion).
func TestLoad(t *testing.T) {
	n := loadVolumes(t)
	e := newEnv(t)
	drvFDs, mntFDs := fds(t, e.drv.Pid()), fds(t, e.mnt.Pid())

	type vol struct{ id, stage, target string }
	vols := make([]vol, n)
	for i := range vols {
		vols[i] = vol{fmt.Sprintf("%s/load-%03d", bucket, i), e.path(fmt.Sprintf("load/s%03d", i)), e.path(fmt.Sprintf("load/t%03d", i))}
		mkdir(t, vols[i].stage)
	}
	// Cleanup if the test fails half-way; every call is idempotent.
	t.Cleanup(func() {
		for _, v := range vols {
			_, _ = retry(retryFor, func(ctx context.Context) error { return e.unpublish(ctx, v.id, v.target) })
			_, _ = retry(retryFor, func(ctx context.Context) error { return e.unstage(ctx, v.id, v.stage) })
		}
	})

	// run calls each of calls concurrently, kubelet-style, and returns the
	// wall time, the slowest call, and the errors.
	run := func(calls []func(ctx context.Context) error) (time.Duration, time.Duration, []error) {
		var (
			mu      sync.Mutex
			errs    []error
			slowest time.Duration
			wg      sync.WaitGroup
		)
		start := time.Now()
		for _, call := range calls {
			wg.Add(1)
			go func() {
				defer wg.Done()
				t0 := time.Now()
				_, err := retry(2*time.Minute, call)
				d := time.Since(t0)
				mu.Lock()
				defer mu.Unlock()
				slowest = max(slowest, d)
				if err != nil {
					errs = append(errs, err)
				}
			}()
		}
		wg.Wait()
		return time.Since(start), slowest, errs
	}
	report := func(what string, wall, slowest time.Duration, errs []error) {
		rss, _, _ := harness.Memory(e.drv.Pid())
		t.Logf("%-40s wall %6.2fs  slowest call %6.2fs  errors %d  driver RSS %5.1f MiB  driver fds %d",
			what, wall.Seconds(), slowest.Seconds(), len(errs), float64(rss)/1024, fds(t, e.drv.Pid()))
		for i, err := range errs {
			if i < 5 {
				t.Errorf("%s: %v", what, err)
			}
		}
	}

	// 1. n distinct volumes, staged and published at once.
	var calls []func(ctx context.Context) error
	for _, v := range vols {
		calls = append(calls, func(ctx context.Context) error {
			if _, err := e.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: v.id, StagingTargetPath: v.stage, VolumeCapability: rwx}); err != nil {
				return err
			}
			_, err := e.node().NodePublishVolume(ctx, persistent(v.id, v.stage, v.target, rwx, false))
			return err
		})
	}
	wall, slowest, errs := run(calls)
	report(fmt.Sprintf("stage+publish %d volumes", n), wall, slowest, errs)
	if got := len(e.gcsfuse(t)); got != n {
		t.Errorf("%d gcsfuse for %d volumes, want one each", got, n)
	}
	var mem int64
	for _, pid := range e.gcsfuse(t) {
		rss, _, _ := harness.Memory(pid)
		mem += rss
	}
	t.Logf("%d gcsfuse: %.0f MiB RSS in all, %.1f MiB each", n, float64(mem)/1024, float64(mem)/1024/float64(n))
	// Spot-check that the mounts serve (the listing of a fresh prefix is
	// empty; a stat is a FUSE round trip).
	for _, i := range []int{0, n / 2, n - 1} {
		if _, err := os.Stat(vols[i].target); err != nil {
			t.Errorf("stat %s: %v", vols[i].target, err)
		}
	}

	// 2. and all of them taken down at once.
	calls = calls[:0]
	for _, v := range vols {
		calls = append(calls, func(ctx context.Context) error {
			if err := e.unpublish(ctx, v.id, v.target); err != nil {
				return err
			}
			return e.unstage(ctx, v.id, v.stage)
		})
	}
	wall, slowest, errs = run(calls)
	report(fmt.Sprintf("unpublish+unstage %d volumes", n), wall, slowest, errs)

	// 3. loadPods targets of one volume at once: one gcsfuse.
	stage := e.path("pods/stage")
	e.mustStage(t, bucket, stage, rwx, nil)
	targets := make([]string, loadPods)
	calls = calls[:0]
	for i := range targets {
		targets[i] = e.path(fmt.Sprintf("pods/t%02d", i))
		calls = append(calls, func(ctx context.Context) error {
			_, err := e.node().NodePublishVolume(ctx, persistent(bucket, stage, targets[i], rwx, false))
			return err
		})
	}
	rssBefore := gcsfuseRSS(t, e)
	wall, slowest, errs = run(calls)
	report(fmt.Sprintf("publish %d targets of one volume", loadPods), wall, slowest, errs)
	if got := len(e.gcsfuse(t)); got != 1 {
		t.Errorf("%d gcsfuse for %d targets of one volume, want 1", got, loadPods)
	}
	for _, p := range targets {
		mustRead(t, filepath.Join(p, "top.txt"), fixture["top.txt"])
	}
	t.Logf("gcsfuse RSS %.1f MiB before the %d targets, %.1f MiB after reading through each",
		float64(rssBefore)/1024, loadPods, float64(gcsfuseRSS(t, e))/1024)
	calls = calls[:0]
	for _, p := range targets {
		calls = append(calls, func(ctx context.Context) error { return e.unpublish(ctx, bucket, p) })
	}
	wall, slowest, errs = run(calls)
	report(fmt.Sprintf("unpublish %d targets", loadPods), wall, slowest, errs)
	e.mustUnstage(t, bucket, stage)

	// Nothing leaked: mounts, processes (assertClean at cleanup), fds.
	if m, err := harness.FUSEMounts(e.dir + "/"); err != nil || len(m) != 0 {
		t.Errorf("mounts left: %d (%v)", len(m), err)
	}
	if pids, zombies, err := harness.WaitNoChildren(e.mnt.Pid(), "gcsfuse", 30*time.Second); err != nil || len(pids) != 0 || zombies != 0 {
		t.Errorf("gcsfuse left: %v, %d zombies (%v)", pids, zombies, err)
	}
	// The mounter's fds close as its gcsfuse children are reaped; allow the
	// last few a moment. The driver keeps idle HTTP connections to GCS from
	// its bucket checks (the storage client's pool, bounded and closed
	// after 90 s idle): those are counted apart, not as leaks.
	u, err := url.Parse(e.gcs.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	gcsPort := u.Port()
	leaked := func() (driver, pooled, mounter int) {
		pooled = tcpTo(t, e.drv.Pid(), gcsPort)
		return fds(t, e.drv.Pid()) - pooled, pooled, fds(t, e.mnt.Pid())
	}
	deadline := time.Now().Add(10 * time.Second)
	for d, _, m := leaked(); time.Now().Before(deadline) && (d > drvFDs || m > mntFDs); d, _, m = leaked() {
		time.Sleep(100 * time.Millisecond)
	}
	if d, pooled, m := leaked(); d > drvFDs || m > mntFDs {
		t.Errorf("open fds: driver %d besides %d pooled GCS connections (was %d), mounter %d (was %d)", d, pooled, drvFDs, m, mntFDs)
		out, _ := exec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", e.drv.Pid())).CombinedOutput()
		t.Logf("driver fds:\n%s", out)
	} else {
		t.Logf("open fds after: driver %d (was %d) and %d idle pooled GCS connections, mounter %d (was %d)", d, drvFDs, pooled, m, mntFDs)
	}
	if ents, _ := os.ReadDir(filepath.Join(e.dir, "work", "sessions")); len(ents) != 0 {
		names := make([]string, 0, len(ents))
		for _, d := range ents {
			names = append(names, d.Name())
		}
		sort.Strings(names)
		t.Errorf("session dirs left in the mounter's work dir: %v", names)
	}
}

// tcpTo counts pid's TCP sockets connected to port (hex in /proc/net/tcp).
func tcpTo(t *testing.T, pid int, port string) int {
	t.Helper()
	p, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("port %q: %v", port, err)
	}
	want := fmt.Sprintf(":%04X", p)
	inodes := map[string]bool{}
	for _, f := range []string{"tcp", "tcp6"} {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 9 && strings.HasSuffix(fields[2], want) {
				inodes[fields[9]] = true
			}
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	n := 0
	for _, d := range ents {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, d.Name()))
		if err == nil && strings.HasPrefix(link, "socket:[") && inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
			n++
		}
	}
	return n
}

func gcsfuseRSS(t *testing.T, e *env) int64 {
	var sum int64
	for _, pid := range e.gcsfuse(t) {
		rss, _, _ := harness.Memory(pid)
		sum += rss
	}
	return sum
}
