package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/fakegcp"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// faultsRetryAttempts is the driver's --max-retry-attempts in TestFaults:
// with the default (5) a 503 read takes 6-9 s to fail and a reset one
// 12-21 s, too long for this test; TestFaults/reads_slow measures the
// default (GCSFUSE_CSI_E2E_SLOW=1).
const faultsRetryAttempts = 2

// slowEnv names the variable that enables the slow fault measurements.
const slowEnv = "GCSFUSE_CSI_E2E_SLOW"

// gcsFaults is the fault hook of TestFaults' GCS front: a fault per bucket,
// and how many requests for each bucket are in the front right now.
type gcsFaults struct {
	mu       sync.Mutex
	faults   map[string]fakegcp.Fault
	inFlight map[string]int
}

func (g *gcsFaults) set(bkt string, f fakegcp.Fault) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.faults[bkt] = f
}

func (g *gcsFaults) hook(r *http.Request) fakegcp.Fault {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.faults[bucketOf(r.URL.Path)]
}

func (g *gcsFaults) pending(bkt string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight[bkt]
}

// front is the fakegcp front, counting requests in flight per bucket.
func (g *gcsFaults) front(gcp *fakegcp.Server) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		inner := gcp.Wrap(h)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			bkt := bucketOf(r.URL.Path)
			g.mu.Lock()
			g.inFlight[bkt]++
			g.mu.Unlock()
			defer func() {
				g.mu.Lock()
				g.inFlight[bkt]--
				g.mu.Unlock()
			}()
			inner.ServeHTTP(w, r)
		})
	}
}

// bucketOf is the bucket a GCS request path names (JSON API, JSON media,
// or XML API path), as the front works it out.
func bucketOf(path string) string {
	for _, p := range []string{"/storage/v1/b/", "/download/storage/v1/b/", "/upload/storage/v1/b/"} {
		if rest, ok := strings.CutPrefix(path, p); ok {
			b, _, _ := strings.Cut(rest, "/")
			return b
		}
	}
	b, _, _ := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	return b
}

// faultEnv is the e2e environment behind the fakegcp front with its fault
// hook; every bucket is public, so no credential is involved.
type faultEnv struct {
	*env
	gcp    *fakegcp.Server
	faults *gcsFaults
}

// checkCase is a fault on the bucket check, on a bucket of its own.
type checkCase struct {
	name     string
	fault    fakegcp.Fault
	deadline time.Duration // the RPC's
	code     codes.Code
	msg      []string // the message says this, besides the bucket
}

func (c checkCase) bucket() string { return "fault-" + strings.ReplaceAll(c.name, " ", "-") }

// stall is longer than any deadline here: the front holds the request until
// the client gives up.
const stall = 10 * time.Minute

var checkCases = []checkCase{
	{"403", fakegcp.Fault{Status: 403}, rpcTimeout, codes.PermissionDenied, []string{"may not list", "grant it"}},
	{"404", fakegcp.Fault{Status: 404}, rpcTimeout, codes.NotFound, []string{"does not exist"}},
	{"429", fakegcp.Fault{Status: 429}, rpcTimeout, codes.ResourceExhausted, []string{"rate limiting", "at most 3 attempts"}},
	{"500", fakegcp.Fault{Status: 500}, rpcTimeout, codes.Unavailable, []string{"GCS answered 500", "at most 3 attempts"}},
	{"503", fakegcp.Fault{Status: 503}, rpcTimeout, codes.Unavailable, []string{"GCS answered 503", "at most 3 attempts"}},
	{"reset", fakegcp.Fault{Reset: true}, rpcTimeout, codes.Unavailable, []string{"could not be reached", "connection reset"}},
	// The request's deadline bounds the check, with time left to answer.
	{"stall", fakegcp.Fault{Stall: stall}, 5 * time.Second, codes.DeadlineExceeded, []string{"did not answer", "gives a bucket check 4.5"}},
	// The driver's own bound (15 s) is nearer than the request's.
	{"stall 30s deadline", fakegcp.Fault{Stall: stall}, rpcTimeout, codes.DeadlineExceeded, []string{"did not answer", "gives a bucket check 15s"}},
}

// readCase is a fault on reads through a mounted volume.
type readCase struct {
	name   string
	fault  fakegcp.Fault
	object string
	// cached: the object was stat'ed before the fault, so only its
	// content is fetched during it; otherwise its metadata too.
	cached bool
	errnos []syscall.Errno // the read fails with one of these
}

// TestFaults injects GCS faults through the fakegcp front, first on the
// bucket check a stage or inline publish makes (each fault on a bucket of
// its own, all at once), then on reads through a mounted volume.
func TestFaults(t *testing.T) {
	start := time.Now()
	gcp, err := fakegcp.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcp.Stop)
	fe := &faultEnv{gcp: gcp, faults: &gcsFaults{faults: map[string]fakegcp.Fault{}, inFlight: map[string]int{}}}
	gcp.SetFault(fe.faults.hook)
	gcp.Public(bucket)
	var objects []fakestorage.Object
	for _, c := range checkCases {
		gcp.Public(c.bucket())
		objects = append(objects, harness.Object(c.bucket(), "ok.txt", c.name+"\n"))
	}
	for _, c := range append(append(slices.Clone(readCases), slowReadCases...), timeoutReadCases...) {
		objects = append(objects, harness.Object(bucket, c.object, c.name+"\n"))
	}
	fe.env = newEnvWith(t, envConfig{anonymous: true, front: fe.faults.front(gcp),
		driverArgs: []string{fmt.Sprintf("--max-retry-attempts=%d", faultsRetryAttempts)}}, objects...)
	t.Cleanup(func() { t.Logf("TestFaults took %s", time.Since(start).Round(100*time.Millisecond)) })
	t.Run("bucket_check", fe.testBucketCheck)
	t.Run("reads", func(t *testing.T) { fe.testReads(t, readCases, 30*time.Second) })
	t.Run("reads_slow", fe.testReadsSlow)
	// With httpClientTimeout a stalled stat or list ends too.
	t.Run("reads_stall_http_client_timeout", func(t *testing.T) {
		fe.testReads(t, timeoutReadCases, 60*time.Second, "http-client-timeout=5s")
	})
}

// timeoutReadCases stall, on a volume with http-client-timeout=5s (and the
// env's --max-retry-attempts=2): the metadata stall that hangs without it
// fails, with EIO or, when gcsfuse passes the client's timeout through,
// ECANCELED, and the name reads once the stall ends.
var timeoutReadCases = []readCase{
	{"stall, timeout", fakegcp.Fault{Stall: 6 * time.Minute}, "meta-stall-timeout/obj.txt", false, []syscall.Errno{syscall.EIO, syscall.ECANCELED}},
}

// checkCall is one RPC that checks the bucket before it mounts.
type checkCall struct {
	name   string
	call   func(ctx context.Context) error
	mounts string // where the volume is readable once the call succeeded
	undo   func(ctx context.Context) error
}

func (fe *faultEnv) checkCalls(t *testing.T, c checkCase) []checkCall {
	bkt := c.bucket()
	stage := fe.path("stage/" + bkt)
	target := fe.path("pods/" + bkt + "/vol")
	mkdir(t, stage)
	mkdir(t, filepath.Dir(target))
	unstage := func(ctx context.Context) error { return fe.unstage(ctx, bkt, stage) }
	unpublish := func(ctx context.Context) error { return fe.unpublish(ctx, "csi-"+bkt, target) }
	// Should a call succeed when it must not, its mount is undone.
	t.Cleanup(func() { fe.cleanupCall(t, "unstage "+stage, unstage) })
	t.Cleanup(func() { fe.cleanupCall(t, "unpublish "+target, unpublish) })
	return []checkCall{
		{"NodeStageVolume", func(ctx context.Context) error {
			_, err := fe.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: bkt, StagingTargetPath: stage, VolumeCapability: rwx})
			return err
		}, stage, unstage},
		{"NodePublishVolume (inline)", func(ctx context.Context) error {
			_, err := fe.node().NodePublishVolume(ctx, inline("csi-"+bkt, target, harness.MountCapability(inlineMode, ""),
				map[string]string{mounterEphemeral: "true", "bucketName": bkt}))
			return err
		}, target, unpublish},
	}
}

// testBucketCheck: every fault fails the stage and the inline publish with
// its code, in time, naming the bucket, with nothing mounted and no gcsfuse
// started; the stalled GCS request is abandoned, not left hanging. Once the
// faults are cleared, the same calls succeed on their first attempt: a
// failed check leaves no cached error and starts no gcsfuse backoff.
func (fe *faultEnv) testBucketCheck(t *testing.T) {
	type result struct {
		c    checkCase
		call string
		err  error
		took time.Duration
	}
	var (
		mu      sync.Mutex
		results []result
		wg      sync.WaitGroup
	)
	calls := map[string][]checkCall{}
	for _, c := range checkCases {
		fe.faults.set(c.bucket(), c.fault)
		calls[c.name] = fe.checkCalls(t, c)
	}
	for _, c := range checkCases {
		for _, call := range calls[c.name] {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), c.deadline)
				defer cancel()
				start := time.Now()
				err := call.call(ctx)
				r := result{c, call.name, err, time.Since(start)}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	slices.SortFunc(results, func(a, b result) int {
		return slices.IndexFunc(checkCases, func(c checkCase) bool { return c.name == a.c.name }) -
			slices.IndexFunc(checkCases, func(c checkCase) bool { return c.name == b.c.name })
	})
	table := []string{fmt.Sprintf("%-20s %-27s %-18s %8s", "fault", "call", "code", "seconds")}
	for _, r := range results {
		st := status.Convert(r.err)
		table = append(table, fmt.Sprintf("%-20s %-27s %-18s %8.2f", r.c.name, r.call, st.Code(), r.took.Seconds()))
		if r.err == nil || st.Code() != r.c.code {
			t.Errorf("%s, %s: %v, want %s", r.c.name, r.call, r.err, r.c.code)
			continue
		}
		// The driver's own answer: a deadline the client ran into would say
		// nothing about the bucket.
		for _, w := range append([]string{"gs://" + r.c.bucket() + "/"}, r.c.msg...) {
			if !strings.Contains(st.Message(), w) {
				t.Errorf("%s, %s: message %q lacks %q", r.c.name, r.call, st.Message(), w)
			}
		}
		if r.took >= r.c.deadline {
			t.Errorf("%s, %s: answered after %s, not within the RPC's deadline of %s", r.c.name, r.call, r.took, r.c.deadline)
		}
	}
	t.Logf("bucket check faults (RPC deadline %s; stall: as given):\n%s", rpcTimeout, strings.Join(table, "\n"))

	// Nothing was mounted, no gcsfuse was started, and no request of the
	// driver is still waiting on the stalled GCS.
	if mounts, err := harness.FUSEMounts(fe.dir + "/"); err != nil || len(mounts) != 0 {
		t.Errorf("mounts after failed checks: %+v (%v), want none", mounts, err)
	}
	if pids := fe.gcsfuse(t); len(pids) != 0 {
		t.Errorf("gcsfuse processes after failed checks: %v, want none", pids)
	}
	for _, c := range checkCases {
		if n := waitFor(time.Second, func() bool { return fe.faults.pending(c.bucket()) == 0 }); !n {
			t.Errorf("%s: %d requests for gs://%s still in the front after the calls returned: the check did not give up its request", c.name, fe.faults.pending(c.bucket()), c.bucket())
		}
	}

	// Cleared: the same calls succeed at once (a backoff would answer
	// Unavailable), and the volume reads.
	for _, c := range checkCases {
		fe.faults.set(c.bucket(), fakegcp.Fault{})
	}
	for _, c := range checkCases {
		for _, call := range calls[c.name] {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
				defer cancel()
				if err := call.call(ctx); err != nil {
					t.Errorf("%s, %s after the fault was cleared: %v, want success on the first attempt", c.name, call.name, err)
					return
				}
				if got, err := readWithin(filepath.Join(call.mounts, "ok.txt"), 10*time.Second); err != nil || got != c.name+"\n" {
					t.Errorf("%s, %s: read ok.txt = %q, %v", c.name, call.name, got, err)
				}
				if err := call.undo(ctx); err != nil {
					t.Errorf("%s: undo %s: %v", c.name, call.name, err)
				}
			})
		}
	}
	wg.Wait()
	fe.assertClean(t)
}

// readCases: an object whose metadata is not cached is in a directory of
// its own, as gcsfuse prefetches the metadata of a directory's objects.
var readCases = []readCase{
	{"503", fakegcp.Fault{Status: 503}, "meta-503/obj.txt", false, []syscall.Errno{syscall.EIO}},
	{"503, stat cached", fakegcp.Fault{Status: 503}, "data-503.txt", true, []syscall.Errno{syscall.EIO}},
	// gcsfuse passes a reset's errno through.
	{"reset", fakegcp.Fault{Reset: true}, "meta-reset/obj.txt", false, []syscall.Errno{syscall.EIO, syscall.ECONNRESET}},
	{"reset, stat cached", fakegcp.Fault{Reset: true}, "data-reset.txt", true, []syscall.Errno{syscall.EIO, syscall.ECONNRESET}},
}

// testReads reads objects not read before through a mounted volume while
// every request for its bucket fails: each read fails with an error within
// bound instead of hanging, and once the fault is cleared the same file
// reads, on the same mount (same gcsfuse, no new RPC).
func (fe *faultEnv) testReads(t *testing.T, cases []readCase, bound time.Duration, flags ...string) {
	stage, target := fe.path("reads/stage"), fe.path("reads/target")
	vc := harness.MountCapability(harness.RWX, "", append([]string{"implicit-dirs"}, flags...)...)
	fe.mustStage(t, bucket, stage, vc, nil)
	fe.mustPublish(t, persistent(bucket, stage, target, vc, false))
	pids, mounts := fe.gcsfuse(t), fe.mountsBySource(t)
	table := []string{fmt.Sprintf("%-20s %-22s %8s  %s", "fault", "error", "seconds", "GCS requests during the fault")}
	for _, c := range cases {
		path := filepath.Join(target, c.object)
		if c.cached {
			if _, err := os.Stat(path); err != nil {
				t.Fatal(err)
			}
		}
		before := len(fe.gcp.Requests())
		fe.faults.set(bucket, c.fault)
		start := time.Now()
		_, err := readWithin(path, bound)
		took := time.Since(start)
		fe.faults.set(bucket, fakegcp.Fault{})
		var paths []string
		for _, r := range fe.gcp.Requests()[before:] {
			if r.Bucket == bucket {
				paths = append(paths, r.Path)
			}
		}
		var errno syscall.Errno
		errors.As(err, &errno)
		table = append(table, fmt.Sprintf("%-20s %-22s %8.2f  %d: %s", c.name, errnoName(err, errno), took.Seconds(), len(paths), summarize(paths)))
		switch {
		case err == nil:
			t.Errorf("%s: read of %s succeeded during the fault", c.name, c.object)
		case errno == 0:
			t.Errorf("%s: read of %s: %v after %s: it hangs (see testReadsSlow)", c.name, c.object, err, took.Round(time.Millisecond))
		case !slices.Contains(c.errnos, errno):
			t.Errorf("%s: read of %s: %v, want one of %v", c.name, c.object, err, c.errnos)
		}
		// What the read had to fetch during the fault: metadata (a stat
		// or a list), or with the stat cached the content (besides the
		// listings gcsfuse prefetches in the background).
		metadata := func(p string) bool { return strings.HasPrefix(p, "/storage/v1/b/"+bucket+"/o") }
		content := func(p string) bool { return !metadata(p) && strings.HasSuffix(p, "/"+c.object) }
		stat := "/storage/v1/b/" + bucket + "/o/" + c.object
		if c.cached && (!slices.ContainsFunc(paths, content) || slices.Contains(paths, stat)) {
			t.Errorf("%s: GCS requests during the fault %v, want reads of the content of %s and no stat of it", c.name, paths, c.object)
		}
		if !c.cached && !slices.ContainsFunc(paths, metadata) {
			t.Errorf("%s: GCS requests during the fault %v, want metadata requests (%s was not looked up before)", c.name, paths, c.object)
		}
		if got, err := readWithin(path, 10*time.Second); err != nil || got != c.name+"\n" {
			t.Errorf("%s: read of %s after the fault was cleared = %q, %v; want %q", c.name, c.object, got, err, c.name+"\n")
		}
	}
	t.Logf("reads during GCS faults (--max-retry-attempts=%s):\n%s", retryAttempts(flags), strings.Join(table, "\n"))
	if got := fe.gcsfuse(t); !slices.Equal(got, pids) {
		t.Errorf("gcsfuse processes %v after the faults, want %v: the same mount keeps serving", got, pids)
	}
	if got := fe.mountsBySource(t); fmt.Sprint(got) != fmt.Sprint(mounts) {
		t.Errorf("mounts %v after the faults, want %v", got, mounts)
	}
	fe.mustUnpublish(t, bucket, target)
	fe.mustUnstage(t, bucket, stage)
}

// testReadsSlow measures reads with gcsfuse's default retry bound (5) and a
// stall storm, which take minutes: only with GCSFUSE_CSI_E2E_SLOW=1.
//
// Measured with gcsfuse 3.13 (seconds until the read fails, over several
// runs):
//
//	                          --max-retry-attempts=2    =5 (the default)
//	503, metadata uncached    0.04-0.8  EIO             5.7-9.0    EIO
//	503, stat cached          0.8-1.7   EIO             9.2-12.3   EIO
//	reset, metadata uncached  0.1-0.5   ECONNRESET      7.6        ECONNRESET
//	reset, stat cached        0.9-1.4   ECONNRESET      12-22      ECONNRESET
//	stall, stat cached        87        EIO             258-260    EIO
//	stall, metadata uncached  never (> 5 min)           never (> 5 min)
//
// A stalled content read ends because gcsfuse times out stalled reads
// (read-stall retry, about 20 s per attempt); nothing times out a stalled
// metadata request (stat, list), since gcsfuse's --http-client-timeout is 0
// (none) unless the volume sets httpClientTimeout (the driver does not by
// default; see reads_stall_http_client_timeout): the read hangs, and so
// does every later lookup of the same name, fault cleared or not, until the
// connection ends. So the last case fails. Run by hand, gcsfuse with
// --http-client-timeout=10s --max-retry-attempts=2 fails it with EIO after
// 20 s (and the stat-cached stall after 42 s).
func (fe *faultEnv) testReadsSlow(t *testing.T) {
	if os.Getenv(slowEnv) == "" {
		t.Skipf("takes minutes; set %s=1 to measure reads with --max-retry-attempts=5 and stall storms", slowEnv)
	}
	fe.testReads(t, append(slices.Clone(readCases), slowReadCases...), 5*time.Minute, "max-retry-attempts=5")
}

// slowReadCases stall longer than testReadsSlow waits: a hang shows as one.
var slowReadCases = []readCase{
	{"stall, stat cached", fakegcp.Fault{Stall: 6 * time.Minute}, "data-stall.txt", true, []syscall.Errno{syscall.EIO}},
	{"stall", fakegcp.Fault{Stall: 6 * time.Minute}, "meta-stall/obj.txt", false, []syscall.Errno{syscall.EIO}},
}

func retryAttempts(flags []string) string {
	for _, f := range flags {
		if v, ok := strings.CutPrefix(f, "max-retry-attempts="); ok {
			return v
		}
	}
	return fmt.Sprint(faultsRetryAttempts)
}

func errnoName(err error, errno syscall.Errno) string {
	switch {
	case err == nil:
		return "none"
	case errno == 0:
		return "hang"
	case errno == syscall.EIO:
		return "EIO"
	case errno == syscall.ECONNRESET:
		return "ECONNRESET"
	}
	return errno.Error()
}

// summarize counts paths by value, in order of first appearance.
func summarize(paths []string) string {
	var order []string
	n := map[string]int{}
	for _, p := range paths {
		if n[p] == 0 {
			order = append(order, p)
		}
		n[p]++
	}
	var out []string
	for _, p := range order {
		out = append(out, fmt.Sprintf("%s x%d", p, n[p]))
	}
	return strings.Join(out, ", ")
}

// waitFor polls cond every 10 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}
