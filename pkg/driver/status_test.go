package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter/fake"
)

func TestToStatus(t *testing.T) {
	list := "list gs://bkt/"
	reset := &url.Error{Op: "Get", URL: "http://gcs/", Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
	tests := []struct {
		name string
		err  error
		want codes.Code
	}{
		{"404", gcs.Classify(list, &googleapi.Error{Code: 404}), codes.NotFound},
		{"403", gcs.Classify(list, &googleapi.Error{Code: 403}), codes.PermissionDenied},
		{"401", gcs.Classify(list, &googleapi.Error{Code: 401}), codes.Unauthenticated},
		{"429", gcs.Classify(list, &googleapi.Error{Code: 429}), codes.ResourceExhausted},
		{"408", gcs.Classify(list, &googleapi.Error{Code: 408}), codes.Unavailable},
		{"500", gcs.Classify(list, &googleapi.Error{Code: 500}), codes.Unavailable},
		{"503", gcs.Classify(list, &googleapi.Error{Code: 503}), codes.Unavailable},
		{"501", gcs.Classify(list, &googleapi.Error{Code: 501}), codes.Internal},
		{"connection reset", gcs.Classify(list, reset), codes.Unavailable},
		{"connection refused", gcs.Classify(list, &url.Error{Op: "Get", URL: "http://gcs/", Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}), codes.Unavailable},
		{"deadline", gcs.Classify(list, &url.Error{Op: "Get", URL: "http://gcs/", Err: context.DeadlineExceeded}), codes.DeadlineExceeded},
		{"canceled", gcs.Classify(list, &url.Error{Op: "Get", URL: "http://gcs/", Err: context.Canceled}), codes.Canceled},
		{"unavailable, stage wrapped", fmt.Errorf("stage %q for this publish: %w", "/s", gcs.Classify(list, &googleapi.Error{Code: 503})), codes.Unavailable},
		{"gcsfuse backoff", fmt.Errorf("next attempt in 1s: %w", mounter.ErrBackoff), codes.Unavailable},
		{"mount timeout", fmt.Errorf("gcsfuse did not answer: %w", mounter.ErrTimeout), codes.DeadlineExceeded},
		{"unknown", errors.New("boom"), codes.Internal},
		{"status kept", status.Error(codes.Aborted, "busy"), codes.Aborted},
	}
	for _, tc := range tests {
		err := toStatus("stage volume bkt", tc.err)
		st := status.Convert(err)
		if st.Code() != tc.want {
			t.Errorf("%s: toStatus(%v) = %v, want %v", tc.name, tc.err, st.Code(), tc.want)
		}
		if tc.want != codes.Aborted && (!strings.HasPrefix(st.Message(), "stage volume bkt: ") || !strings.Contains(st.Message(), tc.err.Error())) {
			t.Errorf("%s: message %q does not say what failed and why (%v)", tc.name, st.Message(), tc.err)
		}
	}
	if toStatus("x", nil) != nil {
		t.Error("toStatus(nil) != nil")
	}
}

// gcsFaults is a GCS JSON API that lists an empty bucket, or fails every
// request as told: with a status, a reset connection, or a stall.
type gcsFaults struct {
	*httptest.Server
	mu    sync.Mutex
	fault string // "", "reset", "stall" or a status code
}

func (g *gcsFaults) set(f string) { g.mu.Lock(); g.fault = f; g.mu.Unlock() }

func (g *gcsFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	f := g.fault
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch f {
	case "":
		fmt.Fprint(w, `{"kind":"storage#objects"}`)
	case "reset":
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		conn.(*net.TCPConn).SetLinger(0)
		conn.Close()
	case "stall":
		<-r.Context().Done()
	default:
		var code int
		fmt.Sscan(f, &code)
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"code":%d,"message":"Injected fault: %d."}}`, code, code)
	}
}

// TestBucketCheckFaults stages and publishes inline through the real
// gcs.Checker while GCS fails: each fault gives its code and a message
// naming the bucket, nothing is mounted, and once the fault is cleared the
// same call succeeds at once: a failed check is no gcsfuse failure, so it
// starts no crash-loop backoff (the clock is frozen: any backoff would
// refuse the retry).
func TestBucketCheckFaults(t *testing.T) {
	tests := []struct {
		fault string
		code  codes.Code
		msg   string
	}{
		{"403", codes.PermissionDenied, "may not list"},
		{"404", codes.NotFound, "does not exist"},
		{"429", codes.ResourceExhausted, "rate limiting"},
		{"500", codes.Unavailable, "GCS answered 500"},
		{"503", codes.Unavailable, "GCS answered 503"},
		{"reset", codes.Unavailable, "could not be reached"},
		{"stall", codes.DeadlineExceeded, "did not answer"},
	}
	for _, tc := range tests {
		t.Run(tc.fault, func(t *testing.T) {
			t.Parallel()
			g := &gcsFaults{}
			g.Server = httptest.NewServer(g)
			t.Cleanup(g.Close)
			e := newCheckedEnv(t, &gcs.Checker{Endpoint: g.URL + "/storage/v1/", Attempts: 2})
			stage, target := e.path("s"), e.path("t")
			calls := []struct {
				name string
				call func(ctx context.Context) error
				undo func() error
			}{
				{"stage", func(ctx context.Context) error {
					_, err := e.d.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "bkt", StagingTargetPath: stage, VolumeCapability: capability()})
					return err
				}, func() error { return e.unstage("bkt", stage) }},
				{"inline publish", func(ctx context.Context) error {
					_, err := e.d.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: "csi-t", TargetPath: target, VolumeCapability: capability(),
						VolumeContext: map[string]string{"csi.storage.k8s.io/ephemeral": "true", "bucketName": "bkt"}})
					return err
				}, func() error { return e.unpublish(target) }},
			}
			for _, c := range calls {
				g.set(tc.fault)
				const deadline = 3 * time.Second
				ctx, cancel := context.WithTimeout(context.Background(), deadline)
				start := time.Now()
				err := c.call(ctx)
				took := time.Since(start)
				cancel()
				st := status.Convert(err)
				if st.Code() != tc.code || !strings.Contains(st.Message(), "gs://bkt/") || !strings.Contains(st.Message(), tc.msg) {
					t.Errorf("%s: %v, want %v naming gs://bkt/ and saying %q", c.name, err, tc.code, tc.msg)
				}
				if took >= deadline {
					t.Errorf("%s took %s, past its deadline of %s", c.name, took, deadline)
				}
				if len(e.fm.MountPoints) != 0 || e.daemon.Count() != 0 {
					t.Errorf("%s: a failed check left %v, %d sessions", c.name, e.mounts(), e.daemon.Count())
				}
				g.set("")
				if err := c.call(context.Background()); err != nil {
					t.Errorf("%s after the fault was cleared: %v", c.name, err)
				} else if len(e.fm.MountPoints) == 0 || e.daemon.Count() != 1 {
					t.Errorf("%s after the fault was cleared: mounts %v, %d sessions; want a mount and its session", c.name, e.mounts(), e.daemon.Count())
				}
				if err := c.undo(); err != nil {
					t.Errorf("undo %s: %v", c.name, err)
				}
			}
		})
	}
}

// newCheckedEnv is newEnv with the real bucket check, anonymous.
func newCheckedEnv(t *testing.T, check *gcs.Checker) *env {
	t.Helper()
	now := time.Now()
	e := &env{fm: mount.NewFakeMounter(nil), daemon: fake.NewDaemon(), dir: t.TempDir(), now: now}
	e.daemon.Now = func() time.Time { return now }
	d, err := New(Options{
		Endpoint: "unix:///unused.sock", DriverName: DefaultDriverName, NodeID: "node-1", Anonymous: true,
		StateDir: filepath.Join(e.dir, "state"), KubeletDir: e.dir, GCSFuseBinary: "gcsfuse", MaxRetryAttempts: 3, MountTimeout: 2 * time.Second,
	}, Deps{
		Mount: e.fm, FUSE: &fake.FUSE{Mounter: e.fm}, Daemon: e.daemon, Check: check,
		Ready: func() error { return nil }, Clock: func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	return e
}
