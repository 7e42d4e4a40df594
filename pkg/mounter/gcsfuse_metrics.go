package mounter

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	colmetrics "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	common "go.opentelemetry.io/proto/otlp/common/v1"
	otlp "go.opentelemetry.io/proto/otlp/metrics/v1"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"
)

// gcsfuse's own metrics.
//
// gcsfuse v3.13 can serve Prometheus (--prometheus-port), but it listens on
// every interface (":PORT"), which with a host network would put every
// volume's metrics on the node's network. So the daemon host never uses it.
// Instead, for a session started with Session.Metrics, it listens on
// 127.0.0.1:0 itself (a port of its own choosing, held from before gcsfuse
// starts until it exits: no allocate-then-hand-over race) and has gcsfuse
// push OTLP/HTTP there every gcsfuseMetricsInterval. gcsfuse opens no port.
// The latest push of each session is kept, converted to MetricFamily with
// the session's bucket and id as labels, and handed to the node driver by
// Metrics (the mounter protocol's "metrics" op), which re-exports it.

// gcsfuseMetricsInterval is how often gcsfuse pushes its metrics.
const gcsfuseMetricsInterval = 5 * time.Second

// GCSFuseMetricPrefix starts the name of every metric re-exported from gcsfuse.
const GCSFuseMetricPrefix = "gcsfuse_"

// MetricFamily is a Prometheus metric family in a form that travels as JSON.
type MetricFamily struct {
	Name    string   `json:"name"`
	Help    string   `json:"help,omitempty"`
	Type    string   `json:"type"` // counter, gauge or histogram
	Samples []Sample `json:"samples"`
}

// Sample is one series of a MetricFamily.
type Sample struct {
	Labels map[string]string `json:"labels,omitempty"`
	Value  float64           `json:"value,omitempty"` // counter, gauge
	// Histogram: cumulative counts by upper bound (+Inf is Count).
	Count   uint64   `json:"count,omitempty"`
	Sum     float64  `json:"sum,omitempty"`
	Buckets []Bucket `json:"buckets,omitempty"`
}

// Bucket is a histogram bucket: observations <= UpperBound.
type Bucket struct {
	UpperBound float64 `json:"le"`
	Count      uint64  `json:"count"`
}

// MetricsSource is a Daemon that reports the metrics of the gcsfuse
// processes it hosts (ProcessDaemon, RemoteDaemon).
type MetricsSource interface {
	Metrics(ctx context.Context) ([]MetricFamily, error)
}

// daemonMetrics counts what a daemon host sees happen to its gcsfuse.
type daemonMetrics struct {
	deaths atomic.Uint64 // exits with an error status that Stop did not cause
}

// Metrics implements MetricsSource: the latest push of every running session
// that was started with Session.Metrics, and the host's own counters.
func (d *ProcessDaemon) Metrics(context.Context) ([]MetricFamily, error) {
	d.mu.Lock()
	var fams []MetricFamily
	for _, p := range d.sessions {
		if p.metrics != nil {
			fams = mergeFamilies(fams, p.metrics.latest())
		}
	}
	d.mu.Unlock()
	fams = append(fams, MetricFamily{
		Name: "gcsfuse_csi_gcsfuse_deaths_total", Type: "counter",
		Help:    "gcsfuse processes that exited with an error status the FUSE daemon host did not cause (since the host started).",
		Samples: []Sample{{Value: float64(d.counters.deaths.Load())}},
	})
	slices.SortFunc(fams, func(a, b MetricFamily) int { return strings.Compare(a.Name, b.Name) })
	return fams, nil
}

// mergeFamilies adds add's samples to fams, by family name.
func mergeFamilies(fams, add []MetricFamily) []MetricFamily {
	for _, f := range add {
		i := slices.IndexFunc(fams, func(g MetricFamily) bool { return g.Name == f.Name })
		if i < 0 {
			fams = append(fams, MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type})
			i = len(fams) - 1
		}
		if fams[i].Type != f.Type {
			continue // the same name with another type: keep the first
		}
		fams[i].Samples = append(fams[i].Samples, f.Samples...)
	}
	return fams
}

// otlpReceiver takes one session's OTLP/HTTP metric pushes on a loopback
// port and keeps the latest, converted.
type otlpReceiver struct {
	lis    net.Listener
	srv    *http.Server
	labels map[string]string // added to every sample: bucket, session

	mu   sync.Mutex
	last []MetricFamily
}

// startOTLPReceiver listens on 127.0.0.1 (never another interface).
func startOTLPReceiver(labels map[string]string) (*otlpReceiver, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen on 127.0.0.1 for gcsfuse's metrics: %w", err)
	}
	r := &otlpReceiver{lis: lis, labels: labels}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/metrics", r.receive)
	r.srv = &http.Server{Handler: mux, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10}
	go func() { _ = r.srv.Serve(lis) }()
	return r, nil
}

// endpoint is what gcsfuse's --experimental-otel-metrics-endpoint gets.
func (r *otlpReceiver) endpoint() string { return r.lis.Addr().String() }

func (r *otlpReceiver) close() {
	if r != nil {
		_ = r.srv.Close()
	}
}

func (r *otlpReceiver) latest() []MetricFamily {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

// maxPush bounds an OTLP push, compressed and not.
const maxPush = 4 << 20

func (r *otlpReceiver) receive(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxPush)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	raw, err := io.ReadAll(io.LimitReader(body, maxPush+1))
	if err != nil || len(raw) > maxPush {
		http.Error(w, "metrics push too large or unreadable", http.StatusBadRequest)
		return
	}
	var msg colmetrics.ExportMetricsServiceRequest
	if err := proto.Unmarshal(raw, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fams := fromOTLP(&msg, r.labels)
	r.mu.Lock()
	r.last = fams
	r.mu.Unlock()
	out, _ := proto.Marshal(&colmetrics.ExportMetricsServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

var invalidNameChars = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// promName turns an OTel name (fs/ops_count) into a Prometheus one
// (fs_ops_count).
func promName(s string) string {
	s = invalidNameChars.ReplaceAllString(s, "_")
	if s != "" && s[0] >= '0' && s[0] <= '9' {
		s = "_" + s
	}
	return s
}

// fromOTLP converts a cumulative OTLP push into metric families named
// gcsfuse_<name>, with extra added to every sample's labels (which win over
// gcsfuse's attributes of the same name). Sums become counters (monotonic)
// or gauges, histograms with explicit bounds histograms; other kinds are
// dropped (gcsfuse v3.13 sends none).
func fromOTLP(msg *colmetrics.ExportMetricsServiceRequest, extra map[string]string) []MetricFamily {
	var fams []MetricFamily
	for _, rm := range msg.GetResourceMetrics() {
		for _, sm := range rm.GetScopeMetrics() {
			for _, m := range sm.GetMetrics() {
				f := MetricFamily{Name: GCSFuseMetricPrefix + promName(m.GetName()), Help: m.GetDescription()}
				switch {
				case m.GetSum() != nil:
					s := m.GetSum()
					if s.GetIsMonotonic() && s.GetAggregationTemporality() == otlp.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
						f.Type = "counter"
					} else if !s.GetIsMonotonic() {
						f.Type = "gauge"
					} else {
						continue // delta counters cannot be re-exported as totals
					}
					for _, p := range s.GetDataPoints() {
						f.Samples = append(f.Samples, Sample{Labels: attrLabels(p.GetAttributes(), extra), Value: numberValue(p)})
					}
				case m.GetGauge() != nil:
					f.Type = "gauge"
					for _, p := range m.GetGauge().GetDataPoints() {
						f.Samples = append(f.Samples, Sample{Labels: attrLabels(p.GetAttributes(), extra), Value: numberValue(p)})
					}
				case m.GetHistogram() != nil:
					h := m.GetHistogram()
					if h.GetAggregationTemporality() != otlp.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE {
						continue
					}
					f.Type = "histogram"
					for _, p := range h.GetDataPoints() {
						s := Sample{Labels: attrLabels(p.GetAttributes(), extra), Count: p.GetCount(), Sum: p.GetSum()}
						var cum uint64
						counts := p.GetBucketCounts()
						for i, bound := range p.GetExplicitBounds() {
							if i < len(counts) {
								cum += counts[i]
							}
							s.Buckets = append(s.Buckets, Bucket{UpperBound: bound, Count: cum})
						}
						f.Samples = append(f.Samples, s)
					}
				default:
					continue
				}
				if len(f.Samples) > 0 {
					fams = mergeFamilies(fams, []MetricFamily{f})
				}
			}
		}
	}
	return fams
}

func numberValue(p *otlp.NumberDataPoint) float64 {
	if v, ok := p.GetValue().(*otlp.NumberDataPoint_AsInt); ok {
		return float64(v.AsInt)
	}
	v := p.GetAsDouble()
	if math.IsNaN(v) {
		return 0
	}
	return v
}

func attrLabels(attrs []*common.KeyValue, extra map[string]string) map[string]string {
	out := make(map[string]string, len(attrs)+len(extra))
	for _, kv := range attrs {
		k := promName(kv.GetKey())
		if k == "" || strings.HasPrefix(k, "__") {
			continue
		}
		out[k] = anyString(kv.GetValue())
	}
	for k, v := range extra {
		out[k] = v
	}
	return out
}

func anyString(v *common.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *common.AnyValue_StringValue:
		return x.StringValue
	case *common.AnyValue_BoolValue:
		return strconv.FormatBool(x.BoolValue)
	case *common.AnyValue_IntValue:
		return strconv.FormatInt(x.IntValue, 10)
	case *common.AnyValue_DoubleValue:
		return strconv.FormatFloat(x.DoubleValue, 'g', -1, 64)
	default:
		return ""
	}
}

// metricsArgs starts a session's receiver and returns the gcsfuse flags
// that make it push there. The project id only fills a resource attribute
// (without it gcsfuse would look for credentials to find one).
func metricsArgs(s Session) (*otlpReceiver, []string, error) {
	r, err := startOTLPReceiver(map[string]string{"bucket": s.Bucket, "session": s.ID})
	if err != nil {
		return nil, nil, err
	}
	klog.V(4).InfoS("receiving gcsfuse metrics", "session", s.ID, "endpoint", r.endpoint())
	return r, []string{
		"--experimental-enable-otel-metrics=true",
		"--experimental-otel-metrics-endpoint=" + r.endpoint(),
		"--experimental-otel-metrics-project-id=gcsfuse-csi",
		"--cloud-metrics-export-interval-secs=" + strconv.Itoa(int(gcsfuseMetricsInterval/time.Second)),
	}, nil
}

// Metrics implements MetricsSource: the mounter's answer to "metrics".
func (r *RemoteDaemon) Metrics(ctx context.Context) ([]MetricFamily, error) {
	resp, err := r.call(ctx, wireRequest{Op: "metrics"}, nil)
	if err != nil {
		return nil, err
	}
	return resp.Metrics, nil
}

var (
	_ MetricsSource = (*ProcessDaemon)(nil)
	_ MetricsSource = (*RemoteDaemon)(nil)
)
