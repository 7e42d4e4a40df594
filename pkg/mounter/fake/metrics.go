package fake

import (
	"context"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// MetricsDaemon is a Daemon that also reports gcsfuse metrics
// (mounter.MetricsSource), as ProcessDaemon and RemoteDaemon do.
type MetricsDaemon struct {
	*Daemon
	Families []mounter.MetricFamily
	Err      error // returned by Metrics when set
}

// Metrics implements mounter.MetricsSource.
func (d *MetricsDaemon) Metrics(context.Context) ([]mounter.MetricFamily, error) {
	return d.Families, d.Err
}
