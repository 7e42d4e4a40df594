package driver

import (
	"bufio"
	"context"
	"errors"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	mount "k8s.io/mount-utils"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter/fake"
)

// metricsEnv is a driver with --metrics-address on a fake mount table and
// a fake daemon that also reports gcsfuse metrics.
func metricsEnv(t *testing.T) (*env, *fake.MetricsDaemon) {
	t.Helper()
	e := &env{fm: mount.NewFakeMounter(nil), daemon: fake.NewDaemon(), dir: t.TempDir(), now: time.Now()}
	md := &fake.MetricsDaemon{Daemon: e.daemon}
	opts := Options{
		Endpoint: "unix:///unused.sock", DriverName: DefaultDriverName, NodeID: "node-1",
		StateDir: filepath.Join(e.dir, "state"), KubeletDir: e.dir, GCSFuseBinary: "gcsfuse", MaxRetryAttempts: 3, MountTimeout: 2 * time.Second,
		MetricsAddress: "127.0.0.1:9920",
	}
	d, err := New(opts, Deps{
		Mount: e.fm, FUSE: &fake.FUSE{Mounter: e.fm}, Daemon: md,
		Check: checkFunc(func(context.Context, string, string, *auth.Credentials) error { return nil }),
		Ready: func() error { return nil },
		Clock: func() time.Time { return e.now },
	})
	if err != nil {
		t.Fatal(err)
	}
	e.d = d
	return e, md
}

// call runs a CSI method through the driver's interceptors, as gRPC does.
func (e *env) call(method string, req any, h func(context.Context, any) (any, error)) error {
	ics := e.d.interceptors()
	handler := grpc.UnaryHandler(h)
	for i := len(ics) - 1; i >= 0; i-- {
		next, ic := handler, ics[i]
		handler = func(ctx context.Context, req any) (any, error) {
			return ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: "/csi.v1.Node/" + method}, next)
		}
	}
	_, err := handler(context.Background(), req)
	return err
}

type exposition map[string]float64

func scrapeDriver(t *testing.T, d *Driver) exposition {
	t.Helper()
	rec := httptest.NewRecorder()
	d.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != 200 {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	m := exposition{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad line %q", line)
		}
		m[line[:i]] = v
	}
	return m
}

func (m exposition) want(t *testing.T, series string, v float64) {
	t.Helper()
	if got, ok := m[series]; !ok || got != v {
		var have []string
		name, _, _ := strings.Cut(series, "{")
		for s, v := range m {
			if strings.HasPrefix(s, name) {
				have = append(have, s+" "+strconv.FormatFloat(v, 'g', -1, 64))
			}
		}
		t.Errorf("%s = %v (present %t), want %v; have:\n%s", series, got, ok, v, strings.Join(have, "\n"))
	}
}

func TestMetrics(t *testing.T) {
	e, md := metricsEnv(t)
	md.Families = []mounter.MetricFamily{
		{Name: "gcsfuse_fs_ops_count", Type: "counter", Samples: []mounter.Sample{
			{Labels: map[string]string{"bucket": "b", "session": "s", "fs_op": "ReadFile"}, Value: 7},
			{Labels: map[string]string{"bucket": "b", "session": "s"}, Value: 1}, // fewer labels: filled with ""
		}},
		{Name: "gcsfuse_fs_ops_latencies", Type: "histogram", Samples: []mounter.Sample{
			{Labels: map[string]string{"bucket": "b"}, Count: 3, Sum: 9, Buckets: []mounter.Bucket{{UpperBound: 1, Count: 1}, {UpperBound: 10, Count: 3}}},
		}},
	}
	stage, target, other := e.path("stage"), e.path("target"), e.path("other")
	if err := e.call("NodeStageVolume", nil, func(context.Context, any) (any, error) { return nil, e.stage("bkt", stage) }); err != nil {
		t.Fatal(err)
	}
	for _, tg := range []string{target, other} {
		if err := e.call("NodePublishVolume", nil, func(context.Context, any) (any, error) { return nil, e.publish("bkt", stage, tg, false) }); err != nil {
			t.Fatal(err)
		}
	}
	// A failed call is counted with its code.
	_ = e.call("NodePublishVolume", nil, func(context.Context, any) (any, error) {
		return e.d.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{})
	})

	m := scrapeDriver(t, e.d)
	m.want(t, `gcsfuse_csi_rpc_total{code="OK",method="NodeStageVolume"}`, 1)
	m.want(t, `gcsfuse_csi_rpc_total{code="OK",method="NodePublishVolume"}`, 2)
	m.want(t, `gcsfuse_csi_rpc_total{code="InvalidArgument",method="NodePublishVolume"}`, 1)
	m.want(t, `gcsfuse_csi_rpc_duration_seconds_count{code="OK",method="NodePublishVolume"}`, 2)
	m.want(t, `gcsfuse_csi_mounts{kind="session"}`, 1)
	m.want(t, `gcsfuse_csi_mounts{kind="bind"}`, 2)
	m.want(t, `gcsfuse_csi_gcsfuse_processes{state="running"}`, 1)
	m.want(t, `gcsfuse_csi_daemon_up`, 1)
	m.want(t, `gcsfuse_csi_mount_duration_seconds_count{result="success"}`, 1)
	m.want(t, `gcsfuse_csi_gcsfuse_restarts_total`, 0)
	sid := mounter.SessionID(stage, mustVolume(t, "bkt"))
	health := `gcsfuse_csi_volume_healthy{bucket="bkt",path="` + stage + `",session="` + sid + `"}`
	m.want(t, health, 1)
	m.want(t, `gcsfuse_fs_ops_count{bucket="b",fs_op="ReadFile",session="s"}`, 7)
	m.want(t, `gcsfuse_fs_ops_count{bucket="b",fs_op="",session="s"}`, 1)
	m.want(t, `gcsfuse_fs_ops_latencies_bucket{bucket="b",le="10"}`, 3)
	m.want(t, `gcsfuse_fs_ops_latencies_count{bucket="b"}`, 3)
	if _, ok := m["go_goroutines"]; !ok {
		t.Error("no Go collector metrics")
	}

	// gcsfuse dies: the volume is unhealthy; the next publish replaces it,
	// which counts a restart.
	e.daemon.Kill(sid, errors.New("killed"))
	m = scrapeDriver(t, e.d)
	m.want(t, health, 0)
	m.want(t, `gcsfuse_csi_gcsfuse_processes{state="exited"}`, 1)
	e.fm.MountCheckErrors = map[string]error{stage: syscall.ENOTCONN}
	if err := e.publish("bkt", stage, target, false); err == nil {
		t.Fatal("publish of a just-died volume did not back off")
	}
	e.now = e.now.Add(2 * time.Second) // past the crash-loop backoff
	if err := e.publish("bkt", stage, target, false); err != nil {
		t.Fatal(err)
	}
	e.fm.MountCheckErrors = nil
	m = scrapeDriver(t, e.d)
	m.want(t, `gcsfuse_csi_gcsfuse_restarts_total`, 1)
	m.want(t, `gcsfuse_csi_mount_duration_seconds_count{result="success"}`, 2)
	m.want(t, health, 1)

	// The daemon host is down: the scrape still answers, and says so.
	e.daemon.Unreachable = errors.New("down")
	m = scrapeDriver(t, e.d)
	m.want(t, `gcsfuse_csi_daemon_up`, 0)
	m.want(t, `gcsfuse_csi_mounts{kind="session"}`, 1)
	m.want(t, health, 1) // the mount itself still answers (as Health says)
	if _, ok := m[`gcsfuse_fs_ops_count{bucket="b",fs_op="ReadFile",session="s"}`]; ok {
		t.Error("gcsfuse metrics reported while the daemon host is down")
	}
}

// Without --metrics-address nothing is collected, and gcsfuse is not asked
// for its metrics.
func TestNoMetricsByDefault(t *testing.T) {
	e := newEnv(t)
	if e.d.metrics != nil || len(e.d.interceptors()) != 1 {
		t.Fatal("metrics are on without --metrics-address")
	}
	stage := e.path("stage")
	if err := e.stage("bkt", stage); err != nil {
		t.Fatal(err)
	}
	for id, s := range e.daemon.Running {
		if s.Metrics {
			t.Errorf("session %s asks gcsfuse for metrics", id)
		}
	}
	stop, err := e.d.serveMetrics()
	if err != nil {
		t.Fatal(err)
	}
	stop()
}

func mustVolume(t *testing.T, bucket string) *mounter.Volume {
	t.Helper()
	v, err := mounter.NewVolume(bucket, "")
	if err != nil {
		t.Fatal(err)
	}
	return v
}
