// Package metrics is the node driver's Prometheus metrics: CSI calls, mounts,
// gcsfuse processes and volume health, and gcsfuse's own metrics re-exported
// with bucket and session labels. Everything is in a private registry.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"path"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// Namespace prefixes the driver's own metric names.
const Namespace = "gcsfuse_csi"

// ScrapeTimeout bounds what a scrape waits for: the health checks (each
// bounded by the mounter's CheckTimeout, 5 s) and the daemon host's answers.
// Prometheus' default scrape timeout is 10 s.
const ScrapeTimeout = 8 * time.Second

// Node holds the node driver's metrics.
type Node struct {
	Registry *prometheus.Registry

	rpcCalls    *prometheus.CounterVec
	rpcSeconds  *prometheus.HistogramVec
	mountSecond *prometheus.HistogramVec
	restarts    prometheus.Counter
}

// NewNode returns the driver's metrics in a fresh registry, with the Go and
// process collectors. Call Watch once the Mounter exists.
func NewNode() *Node {
	n := &Node{
		Registry: prometheus.NewRegistry(),
		rpcCalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "rpc_total",
			Help: "CSI calls served, by method and gRPC code.",
		}, []string{"method", "code"}),
		rpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "rpc_duration_seconds",
			Help:    "How long CSI calls took, by method and gRPC code.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"method", "code"}),
		mountSecond: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "mount_duration_seconds",
			Help:    "How long mounts that started gcsfuse took, until gcsfuse answered (or failed), by result (success, error).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2, 5, 10, 30, 60},
		}, []string{"result"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace, Name: "gcsfuse_restarts_total",
			Help: "Dead or hung gcsfuse mounts replaced by a new gcsfuse (since the driver started).",
		}),
	}
	n.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		n.rpcCalls, n.rpcSeconds, n.mountSecond, n.restarts,
	)
	return n
}

// Mounted implements mounter.Observer.
func (n *Node) Mounted(d time.Duration, restart bool, err error) {
	result := "success"
	if err != nil {
		result = "error"
	}
	n.mountSecond.WithLabelValues(result).Observe(d.Seconds())
	if restart && err == nil {
		n.restarts.Inc()
	}
}

// Watch adds the collector of m's mounts, sessions and gcsfuse metrics.
func (n *Node) Watch(m *mounter.Mounter) {
	n.Registry.MustRegister(&mountCollector{m: m})
}

// UnaryInterceptor counts and times every call by method and code.
func (n *Node) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	method, code := path.Base(info.FullMethod), status.Code(err).String()
	n.rpcCalls.WithLabelValues(method, code).Inc()
	n.rpcSeconds.WithLabelValues(method, code).Observe(time.Since(start).Seconds())
	return resp, err
}

// Handler serves the registry's exposition at /metrics. A metric that fails
// is left out instead of failing the scrape.
func (n *Node) Handler() http.Handler {
	return promhttp.HandlerFor(n.Registry, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError, Timeout: ScrapeTimeout + 2*time.Second})
}

var (
	mountsDesc = prometheus.NewDesc(Namespace+"_mounts",
		"Mounts of this driver in the node's mount table: session (one FUSE mount and one gcsfuse each) and bind (a pod's view of a session).", []string{"kind"}, nil)
	processesDesc = prometheus.NewDesc(Namespace+"_gcsfuse_processes",
		"gcsfuse sessions the FUSE daemon host holds, by state (running, exited and not yet stopped).", []string{"state"}, nil)
	daemonUpDesc = prometheus.NewDesc(Namespace+"_daemon_up",
		"1 if the FUSE daemon host (the mounter, or this process) answered.", nil, nil)
	healthDesc = prometheus.NewDesc(Namespace+"_volume_healthy",
		"1 if the session's mount answers statfs and its gcsfuse runs, 0 if it is dead, hung or unknown to the daemon host.", []string{"bucket", "session", "path"}, nil)
)

// mountCollector computes its metrics at scrape time, from the mount table
// and the daemon host. It is unchecked (Describe sends nothing): gcsfuse's
// metric families are only known once gcsfuse has pushed them.
type mountCollector struct {
	m *mounter.Mounter
}

func (c *mountCollector) Describe(chan<- *prometheus.Desc) {}

func (c *mountCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), ScrapeTimeout)
	defer cancel()
	sessions, err := c.m.SessionMounts()
	if err != nil {
		klog.ErrorS(err, "metrics: reading the mount table")
		ch <- prometheus.NewInvalidMetric(mountsDesc, err)
	} else {
		binds := 0
		for _, s := range sessions {
			binds += s.Binds
		}
		ch <- prometheus.MustNewConstMetric(mountsDesc, prometheus.GaugeValue, float64(len(sessions)), "session")
		ch <- prometheus.MustNewConstMetric(mountsDesc, prometheus.GaugeValue, float64(binds), "bind")
	}

	var wg sync.WaitGroup
	wg.Go(func() { c.collectHealth(ctx, sessions, ch) })
	d := c.m.Daemon()
	list, err := d.List(ctx)
	up := 1.0
	if err != nil {
		up = 0
		klog.V(4).InfoS("metrics: the FUSE daemon host did not list its sessions", "err", err)
	} else {
		running := 0
		for _, s := range list {
			if s.Running {
				running++
			}
		}
		ch <- prometheus.MustNewConstMetric(processesDesc, prometheus.GaugeValue, float64(running), "running")
		ch <- prometheus.MustNewConstMetric(processesDesc, prometheus.GaugeValue, float64(len(list)-running), "exited")
	}
	ch <- prometheus.MustNewConstMetric(daemonUpDesc, prometheus.GaugeValue, up)
	if src, ok := d.(mounter.MetricsSource); ok && err == nil {
		fams, err := src.Metrics(ctx)
		if err != nil {
			klog.V(4).InfoS("metrics: the FUSE daemon host did not report gcsfuse's metrics", "err", err)
		}
		for _, f := range fams {
			constMetrics(f, ch)
		}
	}
	wg.Wait()
}

// collectHealth checks every session mount concurrently. Each check is
// bounded (statfs by CheckTimeout, the daemon host by ctx); a mount whose
// check has not returned when ctx ends counts as unhealthy.
func (c *mountCollector) collectHealth(ctx context.Context, sessions []mounter.SessionMount, ch chan<- prometheus.Metric) {
	type result struct {
		s       mounter.SessionMount
		healthy bool
	}
	results := make(chan result, len(sessions))
	sem := make(chan struct{}, 16)
	for _, s := range sessions {
		go func() {
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				results <- result{s, false}
				return
			}
			h, err := c.m.Health(ctx, s.Path)
			results <- result{s, err == nil && !h.Abnormal}
		}()
	}
	seen := map[string]bool{}
	for range sessions {
		var r result
		select {
		case r = <-results:
		case <-ctx.Done():
			// Whatever has not answered by now is hung.
			for _, s := range sessions {
				if !seen[s.Path] {
					seen[s.Path] = true
					ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, 0, s.Bucket, s.Session, s.Path)
				}
			}
			return
		}
		if seen[r.s.Path] {
			continue
		}
		seen[r.s.Path] = true
		v := 0.0
		if r.healthy {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(healthDesc, prometheus.GaugeValue, v, r.s.Bucket, r.s.Session, r.s.Path)
	}
}

// constMetrics sends f's samples as constant metrics. Samples of one family
// get the union of their label names ("" where one lacks a label).
func constMetrics(f mounter.MetricFamily, ch chan<- prometheus.Metric) {
	names := map[string]bool{}
	for _, s := range f.Samples {
		for k := range s.Labels {
			names[k] = true
		}
	}
	labels := make([]string, 0, len(names))
	for k := range names {
		labels = append(labels, k)
	}
	sort.Strings(labels)
	help := f.Help
	if help == "" {
		help = f.Name
	}
	desc := prometheus.NewDesc(f.Name, help, labels, nil)
	for _, s := range f.Samples {
		values := make([]string, len(labels))
		for i, k := range labels {
			values[i] = s.Labels[k]
		}
		var m prometheus.Metric
		var err error
		switch f.Type {
		case "counter":
			m, err = prometheus.NewConstMetric(desc, prometheus.CounterValue, s.Value, values...)
		case "gauge":
			m, err = prometheus.NewConstMetric(desc, prometheus.GaugeValue, s.Value, values...)
		case "histogram":
			buckets := make(map[float64]uint64, len(s.Buckets))
			for _, b := range s.Buckets {
				buckets[b.UpperBound] = b.Count
			}
			m, err = prometheus.NewConstHistogram(desc, s.Count, s.Sum, buckets, values...)
		default:
			err = errors.New("unknown metric type " + f.Type)
		}
		if err != nil {
			m = prometheus.NewInvalidMetric(desc, err)
		}
		ch <- m
	}
}
