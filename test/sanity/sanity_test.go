// Package sanity runs csi-sanity (github.com/kubernetes-csi/csi-test) against
// the real node driver (in-process) and the real mounter (`gcsfuse-csi
// mounter`, a separate process running gcsfuse), mounting buckets served by
// fake-gcs-server on 127.0.0.1.
//
// The product has no controller service yet, but csi-sanity's Node specs
// create and delete volumes through one. A small TEST FIXTURE controller
// (fixtureController below, not the product's controller) serves
// CreateVolume/DeleteVolume by creating and deleting real buckets on the fake
// GCS. csi-sanity's Controller Service specs are filtered out: they would
// test the fixture, not the product.
//
// csi-sanity runs its full Node lifecycle specs ("should work") only when
// the node endpoint's Identity advertises CONTROLLER_SERVICE. So the suite
// talks to a combined endpoint: the driver's own Node service, the fixture
// Controller, and an Identity that is the driver's plus CONTROLLER_SERVICE,
// which is true of that endpoint. The driver's own endpoint (driver.Run) is
// served too and probed before the suite starts.
package sanity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// skippedGroups are the csi-sanity spec groups this suite filters out, as
// ginkgo skip regexps matched against a spec's full text, with the reason.
var skippedGroups = []struct{ pattern, reason string }{
	{`\[Controller Server\]`, "Controller Service specs: the driver has no controller service yet (a later issue adds it); the fixture controller here exists only so the Node specs can create volumes"},
	{`\[GroupController `, "GroupController Service specs: the driver has no group controller service"},
}

func TestSanity(t *testing.T) {
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

	gcs, err := harness.StartFakeGCS(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(gcs.Stop)

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
	ctrlSock := filepath.Join(base, "ctrl.sock")
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
	startCombined(t, ctrlSock, d, gcs.Client)
	// Registered after the driver's cleanup, so it runs before it: nothing
	// may stay mounted under base, whatever happened in the suite.
	t.Cleanup(func() { forceCleanup(t, base) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("driver log (last 300 lines):\n%s", logs.tail(300))
			if b, err := os.ReadFile(filepath.Join(base, "mounter.log")); err == nil {
				t.Logf("mounter log:\n%s", b)
			}
		}
	})

	cfg := sanity.NewTestConfig()
	cfg.Address = "unix://" + ctrlSock
	cfg.ControllerAddress = "unix://" + ctrlSock
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
	passed := ginkgo.RunSpecs(t, "gcsfuse-csi node sanity", suiteConfig, reporterConfig)
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
	t.Logf("csi-sanity run took %s", time.Since(start).Round(time.Millisecond))
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

// logBuffer collects klog output (the driver's log) so a failing run can
// show it without flooding a passing one.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.Split(strings.TrimRight(b.buf.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// captureKlog sends klog output at -v=4 to a buffer for the test's life.
func captureKlog(t *testing.T) *logBuffer {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for name, value := range map[string]string{"logtostderr": "false", "alsologtostderr": "false", "stderrthreshold": "FATAL", "v": "4"} {
		if err := fs.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	b := &logBuffer{}
	// The INFO writer receives every severity once.
	klog.SetOutput(io.Discard)
	klog.SetOutputBySeverity("INFO", b)
	t.Cleanup(func() {
		klog.Flush()
		_ = fs.Set("logtostderr", "true")
		_ = fs.Set("v", "0")
	})
	return b
}

// ---------------------------------------------------------------------------
// TEST FIXTURE: a minimal controller service, NOT the product's controller.
// It exists only because csi-sanity's Node specs provision volumes through
// CreateVolume/DeleteVolume. Each volume is a real bucket on the fake GCS,
// named after the request name; its volume id is the bucket name, which is
// what the node driver expects of a persistent volume.
// ---------------------------------------------------------------------------

type fixtureController struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedControllerServer

	client *storage.Client

	mu      sync.Mutex
	volumes map[string]*csi.Volume // by request name
}

// combinedIdentity is the driver's Identity service, plus CONTROLLER_SERVICE
// for the fixture controller served on the same endpoint.
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

// startCombined serves the driver's Node service, the fixture's Controller
// service and their combined Identity on a unix socket until the test ends.
func startCombined(t *testing.T, sock string, d *driver.Driver, client *storage.Client) {
	t.Helper()
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	fc := &fixtureController{client: client, volumes: map[string]*csi.Volume{}}
	csi.RegisterIdentityServer(srv, combinedIdentity{d})
	csi.RegisterNodeServer(srv, d)
	csi.RegisterControllerServer(srv, fc)
	done := make(chan struct{})
	go func() { _ = srv.Serve(lis); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
}

var notBucketChar = regexp.MustCompile(`[^a-z0-9]+`)

// bucketFor turns a CSI volume name into a valid, unique bucket name:
// lower-case [a-z0-9-], at most 63 characters, with a hash of the full name.
func bucketFor(name string) string {
	sum := sha256.Sum256([]byte(name))
	suffix := hex.EncodeToString(sum[:])[:12]
	stem := strings.Trim(notBucketChar.ReplaceAllString(strings.ToLower(name), "-"), "-")
	if max := 63 - len(suffix) - 1; len(stem) > max {
		stem = strings.TrimRight(stem[:max], "-")
	}
	if stem == "" {
		stem = "vol"
	}
	return stem + "-" + suffix
}

func (f *fixtureController) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{Capabilities: []*csi.ControllerServiceCapability{{
		Type: &csi.ControllerServiceCapability_Rpc{Rpc: &csi.ControllerServiceCapability_RPC{Type: csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}},
	}}}, nil
}

// CreateVolume creates the bucket for req.Name; the same name again returns
// the same volume (idempotent), or AlreadyExists if its capacity does not fit.
func (f *fixtureController) CreateVolume(ctx context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	if req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "name is required")
	}
	if len(req.GetVolumeCapabilities()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "volume_capabilities are required")
	}
	for _, c := range req.GetVolumeCapabilities() {
		if c.GetMount() == nil && c.GetBlock() == nil {
			return nil, status.Error(codes.InvalidArgument, "volume_capabilities: access_type is required")
		}
		if c.GetAccessMode() == nil {
			return nil, status.Error(codes.InvalidArgument, "volume_capabilities: access_mode is required")
		}
	}
	capacity := req.GetCapacityRange().GetRequiredBytes()
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && capacity > limit {
		return nil, status.Errorf(codes.OutOfRange, "required_bytes %d exceeds limit_bytes %d", capacity, limit)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.volumes[req.GetName()]; ok {
		limit := req.GetCapacityRange().GetLimitBytes()
		if v.CapacityBytes < capacity || (limit > 0 && v.CapacityBytes > limit) {
			return nil, status.Errorf(codes.AlreadyExists, "volume %q exists with capacity %d", req.GetName(), v.CapacityBytes)
		}
		return &csi.CreateVolumeResponse{Volume: v}, nil
	}
	bucket := bucketFor(req.GetName())
	err := f.client.Bucket(bucket).Create(ctx, "sanity", nil)
	var gerr *googleapi.Error
	if err != nil && !(errors.As(err, &gerr) && gerr.Code == 409) {
		return nil, status.Errorf(codes.Internal, "create bucket %q: %v", bucket, err)
	}
	v := &csi.Volume{VolumeId: bucket, CapacityBytes: capacity}
	f.volumes[req.GetName()] = v
	return &csi.CreateVolumeResponse{Volume: v}, nil
}

// DeleteVolume empties and deletes the bucket; an unknown one is not an error.
func (f *fixtureController) DeleteVolume(ctx context.Context, req *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	bucket := req.GetVolumeId()
	if bucket == "" {
		return nil, status.Error(codes.InvalidArgument, "volume_id is required")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, v := range f.volumes {
		if v.VolumeId == bucket {
			delete(f.volumes, name)
		}
	}
	b := f.client.Bucket(bucket)
	it := b.Objects(ctx, nil)
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) || errors.Is(err, storage.ErrBucketNotExist) || isNotFound(err) {
			break
		}
		if err != nil {
			return nil, status.Errorf(codes.Internal, "list objects of %q: %v", bucket, err)
		}
		if err := b.Object(attrs.Name).Delete(ctx); err != nil && !errors.Is(err, storage.ErrObjectNotExist) {
			return nil, status.Errorf(codes.Internal, "delete object %q of %q: %v", attrs.Name, bucket, err)
		}
	}
	if err := b.Delete(ctx); err != nil && !errors.Is(err, storage.ErrBucketNotExist) && !isNotFound(err) {
		return nil, status.Errorf(codes.Internal, "delete bucket %q: %v", bucket, err)
	}
	return &csi.DeleteVolumeResponse{}, nil
}

func isNotFound(err error) bool {
	var gerr *googleapi.Error
	return errors.As(err, &gerr) && gerr.Code == 404
}
