package driver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/metrics"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// newMetrics returns the driver's metrics, and has the mounter time mounts
// and collect gcsfuse's own metrics, when --metrics-address is set; nil
// otherwise (gcsfuse then runs without a metrics exporter).
func newMetrics(opts Options, cfg *mounter.Config) *metrics.Node {
	if opts.MetricsAddress == "" {
		return nil
	}
	n := metrics.NewNode()
	cfg.GCSFuseMetrics = true
	cfg.Observer = n
	return n
}

// interceptors are the CSI server's: logging, then metrics.
func (d *Driver) interceptors() []grpc.UnaryServerInterceptor {
	if d.metrics == nil {
		return []grpc.UnaryServerInterceptor{logCalls}
	}
	return []grpc.UnaryServerInterceptor{logCalls, d.metrics.UnaryInterceptor}
}

// serveMetrics serves /metrics on --metrics-address, if set, until the
// returned stop is called.
func (d *Driver) serveMetrics() (stop func(), err error) {
	if d.metrics == nil {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", d.opts.MetricsAddress)
	if err != nil {
		return nil, fmt.Errorf("--metrics-address=%q: %w", d.opts.MetricsAddress, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", d.metrics.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: metrics.ScrapeTimeout + 5*time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "serving metrics", "address", lis.Addr().String())
		}
	}()
	klog.InfoS("serving metrics", "address", lis.Addr().String(), "path", "/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// validateMetricsAddress accepts "" (off) or host:port with a port 1-65535.
func validateMetricsAddress(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err == nil {
		var n int
		if n, err = strconv.Atoi(port); err == nil && (n < 1 || n > 65535) {
			err = errors.New("port out of range")
		}
	}
	if err != nil {
		return fmt.Errorf("--metrics-address=%q: want host:port such as :9920 or 127.0.0.1:9920 (%v)", addr, err)
	}
	return nil
}
