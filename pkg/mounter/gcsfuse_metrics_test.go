package mounter

import (
	"bytes"
	"compress/gzip"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	otlp "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

func attr(k, v string) *common.KeyValue {
	return &common.KeyValue{Key: k, Value: &common.AnyValue{Value: &common.AnyValue_StringValue{StringValue: v}}}
}

// push is what gcsfuse v3.13 sends (cumulative sums and histograms), plus
// a delta sum that cannot become a Prometheus counter.
func push() *colmetrics.ExportMetricsServiceRequest {
	cum := otlp.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE
	return &colmetrics.ExportMetricsServiceRequest{ResourceMetrics: []*otlp.ResourceMetrics{{ScopeMetrics: []*otlp.ScopeMetrics{{Metrics: []*otlp.Metric{
		{Name: "fs/ops_count", Description: "ops", Data: &otlp.Metric_Sum{Sum: &otlp.Sum{IsMonotonic: true, AggregationTemporality: cum, DataPoints: []*otlp.NumberDataPoint{
			{Attributes: []*common.KeyValue{attr("fs_op", "ReadFile"), attr("bucket", "spoofed")}, Value: &otlp.NumberDataPoint_AsInt{AsInt: 3}},
		}}}},
		{Name: "metadata_cache/size", Data: &otlp.Metric_Sum{Sum: &otlp.Sum{IsMonotonic: false, AggregationTemporality: cum, DataPoints: []*otlp.NumberDataPoint{
			{Value: &otlp.NumberDataPoint_AsDouble{AsDouble: 2.5}},
		}}}},
		{Name: "fs/ops_latencies", Data: &otlp.Metric_Histogram{Histogram: &otlp.Histogram{AggregationTemporality: cum, DataPoints: []*otlp.HistogramDataPoint{
			{Count: 6, Sum: proto.Float64(40), ExplicitBounds: []float64{1, 10}, BucketCounts: []uint64{1, 2, 3}},
		}}}},
		{Name: "delta/count", Data: &otlp.Metric_Sum{Sum: &otlp.Sum{IsMonotonic: true, AggregationTemporality: otlp.AggregationTemporality_AGGREGATION_TEMPORALITY_DELTA, DataPoints: []*otlp.NumberDataPoint{
			{Value: &otlp.NumberDataPoint_AsInt{AsInt: 1}},
		}}}},
	}}}}}}
}

func postPush(t *testing.T, endpoint string) {
	t.Helper()
	raw, err := proto.Marshal(push())
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	zw := gzip.NewWriter(&body)
	zw.Write(raw)
	zw.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+endpoint+"/v1/metrics", &body)
	req.Header.Set("Content-Type", "application/x-protobuf")
	req.Header.Set("Content-Encoding", "gzip")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("push: %s", resp.Status)
	}
}

func family(fams []MetricFamily, name string) *MetricFamily {
	for i := range fams {
		if fams[i].Name == name {
			return &fams[i]
		}
	}
	return nil
}

// A session started with Metrics gets a loopback receiver and the flags that
// make gcsfuse push there; what it pushes comes back through the mounter's
// "metrics" op, named gcsfuse_*, with the session's bucket and id as labels.
func TestGCSFuseMetricsThroughTheMounter(t *testing.T) {
	args := filepath.Join(t.TempDir(), "args")
	bin := script(t, `echo "$@" > `+args+`; while :; do sleep 0.05; done`)
	rd, _ := startHost(t, bin, nil)
	ctx := context.Background()
	anon := &auth.Credentials{Mode: auth.ModeAnonymous}
	if err := rd.Start(ctx, Session{ID: "s1", Bucket: "bkt", Credentials: anon, Metrics: true}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	var got string
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !strings.Contains(got, "/dev/fd/3"); time.Sleep(10 * time.Millisecond) {
		b, _ := os.ReadFile(args)
		got = string(b)
	}
	m := regexp.MustCompile(`--experimental-otel-metrics-endpoint=(127\.0\.0\.1:\d+) `).FindStringSubmatch(got)
	if m == nil || !strings.Contains(got, "--experimental-enable-otel-metrics=true") || !strings.Contains(got, "--cloud-metrics-export-interval-secs=5") {
		t.Fatalf("gcsfuse args %q: want an OTLP push to a 127.0.0.1 endpoint", got)
	}
	if strings.Contains(got, "prometheus-port") {
		t.Errorf("gcsfuse args %q: --prometheus-port listens on every interface", got)
	}
	postPush(t, m[1])

	fams, err := rd.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops := family(fams, "gcsfuse_fs_ops_count")
	if ops == nil || ops.Type != "counter" || len(ops.Samples) != 1 || ops.Samples[0].Value != 3 {
		t.Fatalf("gcsfuse_fs_ops_count = %+v, want one counter sample of 3", ops)
	}
	if l := ops.Samples[0].Labels; l["bucket"] != "bkt" || l["session"] != "s1" || l["fs_op"] != "ReadFile" {
		t.Errorf("labels %v: want bucket=bkt (not gcsfuse's own), session=s1, fs_op=ReadFile", l)
	}
	if g := family(fams, "gcsfuse_metadata_cache_size"); g == nil || g.Type != "gauge" || g.Samples[0].Value != 2.5 {
		t.Errorf("gcsfuse_metadata_cache_size = %+v, want a gauge of 2.5 (a non-monotonic sum)", g)
	}
	h := family(fams, "gcsfuse_fs_ops_latencies")
	if h == nil || h.Type != "histogram" || h.Samples[0].Count != 6 || h.Samples[0].Sum != 40 {
		t.Fatalf("gcsfuse_fs_ops_latencies = %+v, want a histogram of 6 observations", h)
	}
	if b := h.Samples[0].Buckets; len(b) != 2 || b[0] != (Bucket{1, 1}) || b[1] != (Bucket{10, 3}) {
		t.Errorf("buckets %v, want cumulative [{1 1} {10 3}]", b)
	}
	if family(fams, "gcsfuse_delta_count") != nil {
		t.Error("a delta sum was re-exported as a counter")
	}
	if d := family(fams, "gcsfuse_csi_gcsfuse_deaths_total"); d == nil || d.Samples[0].Value != 0 {
		t.Errorf("deaths = %+v, want 0", d)
	}

	// Without Metrics, no receiver and no flags.
	if err := rd.Start(ctx, Session{ID: "s2", Bucket: "bkt", Credentials: anon}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if b, _ := os.ReadFile(args); strings.Contains(string(b), "/dev/fd/3") && !strings.Contains(string(b), "experimental-otel") {
			return
		}
	}
	b, _ := os.ReadFile(args)
	t.Errorf("a session without Metrics got %q", b)
}

// Deaths count exits with an error status, except those Stop caused.
func TestProcessDaemonCountsDeaths(t *testing.T) {
	dir := t.TempDir()
	d := NewProcessDaemon(script(t, `[ "$(cat `+filepath.Join(dir, "mode")+`)" = die ] && exit 1; while :; do sleep 0.05; done`), t.TempDir())
	deaths := func() float64 {
		fams, _ := d.Metrics(context.Background())
		return family(fams, "gcsfuse_csi_gcsfuse_deaths_total").Samples[0].Value
	}
	os.WriteFile(filepath.Join(dir, "mode"), []byte("die"), 0o644)
	if err := d.Start(context.Background(), Session{ID: "dies", Bucket: "b"}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	waitExited(t, d, "dies")
	if got := deaths(); got != 1 {
		t.Errorf("deaths after gcsfuse exited 1 = %v, want 1", got)
	}
	os.WriteFile(filepath.Join(dir, "mode"), []byte("run"), 0o644)
	if err := d.Start(context.Background(), Session{ID: "stopped", Bucket: "b"}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := d.Stop(ctx, "stopped"); err != nil {
		t.Fatal(err)
	}
	if got := deaths(); got != 1 {
		t.Errorf("deaths after Stop terminated gcsfuse = %v, want still 1", got)
	}
}
