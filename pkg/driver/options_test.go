package driver

import (
	"flag"
	"os"
	"strings"
	"testing"
)

func validOptions() Options {
	return Options{Endpoint: "unix:///run/csi.sock", DriverName: DefaultDriverName, NodeID: "n", StateDir: "/var/lib/x", KubeletDir: "/var/lib/kubelet",
		GCSFuseBinary: "gcsfuse", MaxRetryAttempts: 5, MountTimeout: 1}
}

func TestValidateNamesTheFlag(t *testing.T) {
	tests := []struct {
		mutate func(*Options)
		want   string
	}{
		{func(o *Options) { o.Endpoint = "tcp://127.0.0.1:1" }, "--endpoint"},
		{func(o *Options) { o.Endpoint = "unix://" }, "--endpoint"},
		{func(o *Options) { o.DriverName = "Not_DNS" }, "--driver-name"},
		{func(o *Options) { o.DriverName = strings.Repeat("a", 64) }, "--driver-name"},
		{func(o *Options) { o.NodeID = " " }, "--node-id"},
		{func(o *Options) { o.StateDir = "relative" }, "--state-dir"},
		{func(o *Options) { o.KubeletDir = "/" }, "--kubelet-dir"},
		{func(o *Options) { o.GCSFuseBinary = "" }, "--gcsfuse"},
		{func(o *Options) { o.GCSEndpoint = "ftp://x" }, "--gcs-endpoint"},
		{func(o *Options) { o.MaxRetryAttempts = 0 }, "--max-retry-attempts"},
		{func(o *Options) { o.STSEndpoint = "sts.googleapis.com" }, "--sts-endpoint"},
		{func(o *Options) { o.IAMEndpoint = "unix:///x" }, "--iam-credentials-endpoint"},
		{func(o *Options) { o.MountTimeout = 0 }, "--mount-timeout"},
		{func(o *Options) { o.MetricsAddress = "9920" }, "--metrics-address"},
		{func(o *Options) { o.MetricsAddress = ":0" }, "--metrics-address"},
		{func(o *Options) { o.MetricsAddress = "127.0.0.1:http" }, "--metrics-address"},
		{func(o *Options) { o.RegistrationDir = "rel"; o.KubeletRegistrationPath = "/x.sock" }, "--registration-dir"},
		{func(o *Options) { o.RegistrationDir = "/reg" }, "--kubelet-registration-path"},
		{func(o *Options) { o.KubeletRegistrationPath = "/x.sock" }, "only meaningful with --registration-dir"},
	}
	o := validOptions()
	if err := o.Validate(); err != nil {
		t.Fatalf("valid options rejected: %v", err)
	}
	for _, tc := range tests {
		o := validOptions()
		tc.mutate(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error naming %s", err, tc.want)
		}
	}
}

// TestReadmeListsEveryFlag keeps the README's flag table true.
func TestReadmeListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	var o Options
	o.AddFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(readme), "| `--"+f.Name+"` |") {
			t.Errorf("README flag table lacks --%s", f.Name)
		}
	})
}
