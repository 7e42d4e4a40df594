// Package sanity runs the full csi-sanity suite
// (github.com/kubernetes-csi/csi-test): Identity, Controller and Node specs,
// against the driver deployed the way the chart deploys it, with buckets
// served by fake-gcs-server on 127.0.0.1:
//
//   - the controller: `gcsfuse-csi controller`, a separate process with its
//     own socket (csi-sanity's ControllerAddress), creating and deleting
//     real buckets (or prefixes) on the fake GCS;
//   - the node driver, in-process, mounting for real;
//   - the mounter (`gcsfuse-csi mounter`), a separate process running the
//     real gcsfuse.
//
// csi-sanity runs its Node lifecycle specs ("should work", "should be
// idempotent") only when the identity at the NODE endpoint advertises
// CONTROLLER_SERVICE: it assumes one endpoint serves everything. In
// Kubernetes, as here, the node plugin and the controller are separate
// endpoints, and the node's Identity rightly does not advertise a
// controller. So csi-sanity's node endpoint is a test endpoint that serves
// the driver's own Node service with the driver's Identity plus
// CONTROLLER_SERVICE (true of the plugin as a whole); its Controller calls
// go straight to the controller process. The driver's own endpoint
// (driver.Run) is served too and probed before the suite starts.
//
// TestSanity runs the bucket-per-volume layout; TestSanityPrefixLayout runs
// the whole suite again, in a child process (ginkgo runs one suite per
// process), with the prefix-per-volume layout.
package sanity

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// skippedGroups are the csi-sanity spec groups this suite filters out, as
// ginkgo skip regexps matched against a spec's full text, with the reason.
// None: the whole suite runs, and csi-sanity itself skips the specs of
// capabilities the driver does not advertise (each with its reason in the
// summary).
var skippedGroups = []struct{ pattern, reason string }{}

// layoutEnv selects the layout TestSanity provisions with: "bucket" (the
// default) or "prefix". TestSanityPrefixLayout sets it for its child.
const layoutEnv = "GCSFUSE_CSI_SANITY_LAYOUT"

// sharedBucket holds the volumes of the prefix layout.
const sharedBucket = "sanity-shared"

func TestSanity(t *testing.T) {
	layout := os.Getenv(layoutEnv)
	var params map[string]string
	switch layout {
	case "", "bucket":
		layout = "bucket"
		// deletePolicy delete: every volume csi-sanity deletes must be
		// gone from the fake GCS at the end (checked below).
		params = map[string]string{"projectID": "sanity-project", "deletePolicy": "delete", "implicitDirs": "true"}
	case "prefix":
		params = map[string]string{"bucketName": sharedBucket, "deletePolicy": "delete", "implicitDirs": "true"}
	default:
		t.Fatalf("%s=%q: want bucket or prefix", layoutEnv, layout)
	}
	if os.Geteuid() != 0 {
		t.Skip("csi-sanity needs root: the driver mounts FUSE and bind mounts for real")
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("csi-sanity needs /dev/fuse for real gcsfuse mounts: %v", err)
	} else if fi.Mode()&os.ModeCharDevice == 0 {
		t.Skip("csi-sanity needs /dev/fuse for real gcsfuse mounts: it is not a character device")
	}
	gcsfuse, err := harness.Binary("gcsfuse", "GCSFUSE_BIN")
	if err != nil {
		t.Fatal(err)
	}
	driverBin, err := harness.Binary("gcsfuse-csi", "GCSFUSE_CSI_BIN")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()

	// Unix socket paths are limited to ~107 bytes: use a short base dir
	// rather than t.TempDir. Everything the test makes lives under it.
	base, err := os.MkdirTemp("", "san")
	if err != nil {
		t.Fatal(err)
	}
	// Cleanups run last-registered first: unmount leftovers, stop the
	// driver, stop the fake GCS, and only then remove the directory (a
	// RemoveAll across a live mount would delete bucket contents).
	t.Cleanup(func() {
		if err := os.RemoveAll(base); err != nil {
			t.Errorf("remove %s: %v", base, err)
		}
	})

	logs := captureKlog(t)

	// The prefix layout's bucket, with data of its own that must survive.
	gcs, err := harness.StartFakeGCS([]fakestorage.Object{harness.Object(sharedBucket, "not-a-volume/keep.txt", "keep\n")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)
	before := bucketObjects(t, gcs.Client)

	// The controller, as its own process on its own socket (the chart's
	// controller Deployment). The fake GCS keeps no bucket labels, hence
	// --bucket-label-marker.
	ctrl, err := harness.StartController(driverBin, filepath.Join(base, "ctrl.sock"), filepath.Join(base, "controller.log"),
		"--gcs-endpoint="+gcs.Endpoint, "--anonymous", "--bucket-label-marker", "-v=4")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ctrl.Stop(); err != nil {
			t.Errorf("stop controller: %v", err)
		}
	})

	// The split deployment: gcsfuse runs in a separate mounter process, the
	// node driver (in this process) only mounts and binds.
	mounterSock := filepath.Join(base, "m", "mounter.sock")
	if err := os.MkdirAll(filepath.Dir(mounterSock), 0o700); err != nil {
		t.Fatal(err)
	}
	mnt, err := harness.StartMounter(driverBin, mounterSock, filepath.Join(base, "mwork"), filepath.Join(base, "mounter.log"), nil, "--gcsfuse="+gcsfuse, "-v=2")
	if err != nil {
		t.Fatal(err)
	}
	mounterPid = mnt.Pid()
	t.Cleanup(func() {
		if err := mnt.Stop(); err != nil {
			t.Errorf("stop mounter: %v", err)
		}
	})

	nodeSock := filepath.Join(base, "node.sock")
	sanitySock := filepath.Join(base, "sanity.sock")
	d := startDriver(t, driver.Options{
		Endpoint:         "unix://" + nodeSock,
		DriverName:       driver.DefaultDriverName,
		NodeID:           "sanity-node",
		StateDir:         filepath.Join(base, "state"),
		KubeletDir:       base,
		GCSFuseBinary:    gcsfuse,
		GCSEndpoint:      gcs.Endpoint,
		Anonymous:        true,
		AtomicRename:     false, // the fake has no moveObject API
		MaxRetryAttempts: 3,
		MountTimeout:     30 * time.Second,
		MounterSocket:    mounterSock,
		MounterUID:       -1,
	})
	startCombined(t, sanitySock, d)
	// Registered after the driver's cleanup, so it runs before it: nothing
	// may stay mounted under base, whatever happened in the suite.
	t.Cleanup(func() { forceCleanup(t, base) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver log (last 300 lines):\n%s", logs.Tail(300))
			if b, err := os.ReadFile(filepath.Join(base, "mounter.log")); err == nil {
				t.Logf("mounter log:\n%s", b)
			}
			if b, err := os.ReadFile(filepath.Join(base, "controller.log")); err == nil {
				t.Logf("controller log:\n%s", b)
			}
		}
	})

	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + sanitySock
	cfg.ControllerAddress = ctrl.Endpoint
	cfg.TestVolumeParameters = params
	cfg.TargetPath = filepath.Join(base, "target")
	cfg.StagingPath = filepath.Join(base, "staging")
	cfg.TestVolumeSize = 1 << 30

	// Run csi-sanity's specs as a ginkgo suite inside this test.
	gomega.RegisterFailHandler(ginkgo.Fail)
	sc := sanity.GinkgoTest(&cfg)
	var report types.Report
	ginkgo.ReportAfterSuite("collect report", func(r types.Report) { report = r })
	// Top-level, so it runs after csi-sanity's own cleanup of every spec:
	// a spec that leaves a mount or a directory behind fails itself, and
	// the leftovers are removed so they cannot fail the specs after it.
	ginkgo.AfterEach(func() { checkSpecLeftovers(base, cfg.TargetPath, cfg.StagingPath) })
	suiteConfig, reporterConfig := ginkgo.GinkgoConfiguration()
	for _, g := range skippedGroups {
		suiteConfig.SkipStrings = append(suiteConfig.SkipStrings, g.pattern)
	}
	suiteConfig.Timeout = 4 * time.Minute
	suiteConfig.GracePeriod = 10 * time.Second
	reporterConfig.Succinct = !testing.Verbose()
	reporterConfig.NoColor = true
	passed := ginkgo.RunSpecs(t, "gcsfuse-csi sanity, "+layout+"-per-volume layout", suiteConfig, reporterConfig)
	sc.Finalize()

	summarize(t, report)
	if !passed {
		t.Error("csi-sanity reported failures")
	}

	// Every spec cleaned up after itself through the driver: no gcsfuse
	// mount and no gcsfuse process may remain.
	if mounts, err := harness.FUSEMounts(base + "/"); err != nil {
		t.Errorf("read mounts: %v", err)
	} else if len(mounts) > 0 {
		t.Errorf("%d fuse.gcsfuse mount(s) left under %s after the suite: %+v", len(mounts), base, mounts)
	}
	if pids, zombies, err := waitNoChildren("gcsfuse", 10*time.Second); err != nil {
		t.Errorf("scan /proc: %v", err)
	} else if len(pids) > 0 {
		t.Errorf("gcsfuse process(es) left after the suite: pids %v (%d zombies)", pids, zombies)
	}
	// Every volume csi-sanity created it also deleted, and deletePolicy
	// delete removed it: the fake GCS holds what it held before, no more.
	if after := bucketObjects(t, gcs.Client); !equalSets(before, after) {
		t.Errorf("the fake GCS holds %v after the suite, %v before: DeleteVolume left something behind (or removed what was not its own)", after, before)
	}
	t.Logf("csi-sanity run (%s-per-volume layout) took %s", layout, time.Since(start).Round(time.Millisecond))
}

// TestSanityPrefixLayout runs TestSanity again with the prefix-per-volume
// layout, in a child process: ginkgo runs one suite per process.
func TestSanityPrefixLayout(t *testing.T) {
	if os.Getenv(layoutEnv) != "" {
		t.Skipf("%s is set: this process is a child running one layout", layoutEnv)
	}
	if os.Geteuid() != 0 {
		t.Skip("csi-sanity needs root: the driver mounts FUSE and bind mounts for real")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSanity$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), layoutEnv+"=prefix")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) } // by PID
	cmd.WaitDelay = 30 * time.Second
	err := cmd.Run()
	// The child's summary: counts, and every skip with its reason.
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, "csi-sanity") || strings.Contains(line, "skipped") || strings.Contains(line, "FAILED") {
			t.Log(strings.TrimSpace(line))
		}
	}
	if err != nil {
		t.Errorf("csi-sanity with the prefix-per-volume layout: %v\n%s", err, out.String())
	}
}

// bucketObjects lists every bucket/object of the fake GCS.
func bucketObjects(t *testing.T, c *storage.Client) []string {
	t.Helper()
	ctx := context.Background()
	var out []string
	it := c.Buckets(ctx, "sanity-project")
	for {
		b, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			t.Fatalf("list buckets: %v", err)
		}
		out = append(out, b.Name+"/")
		oit := c.Bucket(b.Name).Objects(ctx, nil)
		for {
			o, err := oit.Next()
			if errors.Is(err, iterator.Done) {
				break
			}
			if err != nil {
				t.Fatalf("list objects of %s: %v", b.Name, err)
			}
			out = append(out, b.Name+"/"+o.Name)
		}
	}
	sort.Strings(out)
	return out
}

func equalSets(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// summarize logs the passed/skipped/failed counts, each filtered group with
// its reason, and each spec csi-sanity skipped itself with its reason.
func summarize(t *testing.T, r types.Report) {
	t.Helper()
	var passed, failed, skipped, pending int
	filtered := map[string]int{}         // skip pattern -> specs
	selfSkipped := map[string][]string{} // reason -> specs
	var failures []string
	for _, s := range r.SpecReports {
		if s.LeafNodeType != types.NodeTypeIt {
			continue
		}
		switch {
		case s.State == types.SpecStatePassed:
			passed++
		case s.State == types.SpecStateSkipped:
			skipped++
			if msg := s.FailureMessage(); msg != "" {
				selfSkipped[msg] = append(selfSkipped[msg], s.FullText())
				break
			}
			for _, g := range skippedGroups {
				if regexp.MustCompile(g.pattern).MatchString(s.FullText()) {
					filtered[g.pattern]++
					break
				}
			}
		case s.State == types.SpecStatePending:
			pending++
			t.Logf("pending (not run, marked pending by csi-sanity): %s", s.FullText())
		case s.State.Is(types.SpecStateFailureStates):
			failed++
			failures = append(failures, fmt.Sprintf("%s: %s", s.FullText(), s.FailureMessage()))
		}
	}
	for _, g := range skippedGroups {
		t.Logf("skipped %d spec(s) matching %s: %s", filtered[g.pattern], g.pattern, g.reason)
	}
	reasons := make([]string, 0, len(selfSkipped))
	for reason := range selfSkipped {
		reasons = append(reasons, reason)
	}
	sort.Strings(reasons)
	for _, reason := range reasons {
		t.Logf("csi-sanity skipped %d spec(s) itself (%s):\n\t%s", len(selfSkipped[reason]), reason, strings.Join(selfSkipped[reason], "\n\t"))
	}
	for _, f := range failures {
		t.Logf("FAILED: %s", f)
	}
	t.Logf("csi-sanity: %d passed, %d skipped, %d pending, %d failed", passed, skipped, pending, failed)
}

// startDriver runs the real node driver in this process until the test
// ends, and waits until its Probe answers ready.
func startDriver(t *testing.T, opts driver.Options) *driver.Driver {
	t.Helper()
	d, err := driver.New(opts, driver.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("driver Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("driver Run did not return 30s after cancel")
		}
	})

	conn, err := grpc.NewClient(opts.Endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("driver exited before it was ready: %v", err)
		default:
		}
		pctx, pcancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := id.Probe(pctx, &csi.ProbeRequest{})
		pcancel()
		if err == nil && resp.GetReady().GetValue() {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("driver not ready after 30s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkSpecLeftovers fails the current spec if it left a gcsfuse mount
// under base or a target/staging directory behind, after removing them.
func checkSpecLeftovers(base string, dirs ...string) {
	var problems []string
	mounts, err := harness.DetachAll(base)
	for _, m := range mounts {
		problems = append(problems, fmt.Sprintf("mount %s (%s) left behind", m.Path, m.Source))
	}
	if err != nil {
		ginkgo.Fail(fmt.Sprintf("detach leftovers: %v", err))
	}
	if len(mounts) > 0 {
		// gcsfuse exits once its mount is gone.
		waitNoChildren("gcsfuse", 10*time.Second)
	}
	for _, dir := range dirs {
		if _, err := os.Stat(dir); err == nil {
			problems = append(problems, fmt.Sprintf("directory %s left behind", dir))
			if err := os.RemoveAll(dir); err != nil {
				ginkgo.Fail(fmt.Sprintf("remove leftover %s: %v", dir, err))
			}
		}
	}
	if len(problems) > 0 {
		ginkgo.Fail("spec did not clean up (removed now): " + strings.Join(problems, "; "))
	}
}

// forceCleanup unmounts whatever is still mounted under base (a failed spec
// may leave mounts behind) and stops leftover gcsfuse children by PID.
func forceCleanup(t *testing.T, base string) {
	mounts, err := harness.DetachAll(base)
	if err != nil {
		t.Errorf("cleanup: %v", err)
	}
	for _, m := range mounts {
		t.Logf("cleanup: detached leftover %s (%s)", m.Path, m.Source)
	}
	// gcsfuse exits once its mount is gone; terminate stragglers by PID.
	pids, _, _ := waitNoChildren("gcsfuse", 10*time.Second)
	for _, pid := range pids {
		t.Logf("cleanup: terminating leftover gcsfuse pid %d", pid)
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if pids, _, _ = waitNoChildren("gcsfuse", 5*time.Second); len(pids) > 0 {
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		waitNoChildren("gcsfuse", 5*time.Second)
	}
}

// mounterPid is the mounter process: gcsfuse runs as its children.
var mounterPid int

// waitNoChildren waits up to timeout until the mounter has no child named
// comm (its gcsfuse daemons), and returns those left.
func waitNoChildren(comm string, timeout time.Duration) ([]int, int, error) {
	return harness.WaitNoChildren(mounterPid, comm, timeout)
}

// captureKlog sends klog's output at -v=4 to a buffer for the test's life.
func captureKlog(t *testing.T) *harness.LogBuffer { return harness.CaptureKlog(t, 4) }

// combinedIdentity is the driver's Identity service plus
// CONTROLLER_SERVICE: the plugin as a whole has a controller (the
// controller process), and csi-sanity looks for it at the node endpoint.
type combinedIdentity struct{ *driver.Driver }

func (c combinedIdentity) GetPluginCapabilities(ctx context.Context, req *csi.GetPluginCapabilitiesRequest) (*csi.GetPluginCapabilitiesResponse, error) {
	resp, err := c.Driver.GetPluginCapabilities(ctx, req)
	if err != nil {
		return nil, err
	}
	resp.Capabilities = append(resp.Capabilities, &csi.PluginCapability{
		Type: &csi.PluginCapability_Service_{Service: &csi.PluginCapability_Service{Type: csi.PluginCapability_Service_CONTROLLER_SERVICE}},
	})
	return resp, nil
}

// startCombined serves the driver's Node service and combinedIdentity on a
// unix socket until the test ends.
func startCombined(t *testing.T, sock string, d *driver.Driver) {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterIdentityServer(srv, combinedIdentity{d})
	csi.RegisterNodeServer(srv, d)
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
}
