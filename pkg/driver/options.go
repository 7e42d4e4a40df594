package driver

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// DefaultDriverName is the CSI driver name. It lives under a domain the
// project controls (its GitHub Pages host) and differs from GKE's
// gcsfuse.csi.storage.gke.io, so both drivers can run in one cluster.
const DefaultDriverName = "gcsfuse-csi.github.io"

// Options configure the node driver.
type Options struct {
	Endpoint         string // unix:///path/to/csi.sock
	DriverName       string
	NodeID           string
	StateDir         string
	KubeletDir       string // targets and staging paths must be inside it
	GCSFuseBinary    string
	GCSEndpoint      string // custom GCS JSON API endpoint for gcsfuse and the driver
	Anonymous        bool
	AtomicRename     bool
	MaxRetryAttempts int
	MountTimeout     time.Duration
	// RegistrationDir, when set, is kubelet's plugins_registry dir: the
	// driver registers itself there (no registrar sidecar needed).
	RegistrationDir string
	// KubeletRegistrationPath is the CSI socket's path as kubelet (on the
	// host) sees it.
	KubeletRegistrationPath string
	// MounterSocket, when set, is the unix socket of `gcsfuse-csi mounter`:
	// gcsfuse runs there, so restarting the driver keeps every mount.
	// Empty: gcsfuse runs in the driver process and dies with it.
	MounterSocket string
	// MounterUID, when >= 0, owns the mounter socket's directory (created
	// 0700), so an unprivileged mounter can create its socket there.
	MounterUID int
	// Workload Identity: where pod tokens are exchanged, for which pool
	// provider, and which of kubelet's tokens (by audience) is used.
	STSEndpoint   string
	IAMEndpoint   string
	WIProvider    string
	TokenAudience string
	// MetricsAddress, when set, is where /metrics is served (host:port).
	MetricsAddress string
}

// AddFlags registers the options on fs with their defaults.
func (o *Options) AddFlags(fs *flag.FlagSet) {
	host, _ := os.Hostname()
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint (unix socket)")
	fs.StringVar(&o.DriverName, "driver-name", DefaultDriverName, "CSI driver name")
	fs.StringVar(&o.NodeID, "node-id", host, "node id reported to the CO (the Kubernetes node name)")
	fs.StringVar(&o.StateDir, "state-dir", "/var/lib/gcsfuse-csi", "driver-owned directory for inline volume mounts, caches and temp files")
	fs.StringVar(&o.KubeletDir, "kubelet-dir", "/var/lib/kubelet", "kubelet's root directory: target and staging paths outside it are refused")
	fs.StringVar(&o.GCSFuseBinary, "gcsfuse", "gcsfuse", "gcsfuse binary (path, or name looked up in PATH)")
	fs.StringVar(&o.GCSEndpoint, "gcs-endpoint", "", "custom GCS JSON API endpoint, e.g. http://127.0.0.1:4443/storage/v1/ (emulators, private endpoints); empty: Google's")
	fs.BoolVar(&o.Anonymous, "anonymous", false, "access buckets without credentials unless a volume sets anonymousAccess")
	fs.BoolVar(&o.AtomicRename, "atomic-rename", true, "let gcsfuse rename with the moveObject API (emulators without it need false)")
	fs.IntVar(&o.MaxRetryAttempts, "max-retry-attempts", 5, "default bound on gcsfuse attempts per GCS call (1-30)")
	fs.DurationVar(&o.MountTimeout, "mount-timeout", 30*time.Second, "how long gcsfuse may take to start answering")
	fs.StringVar(&o.RegistrationDir, "registration-dir", "", "kubelet's plugins_registry dir: register with kubelet there (empty: a registrar sidecar does it)")
	fs.StringVar(&o.KubeletRegistrationPath, "kubelet-registration-path", "", "the CSI socket's path on the host, as kubelet sees it (with --registration-dir)")
	fs.StringVar(&o.MounterSocket, "mounter-socket", "", "unix socket of `gcsfuse-csi mounter`, which runs gcsfuse so mounts survive a driver restart (empty: gcsfuse runs in the driver process and dies with it)")
	fs.IntVar(&o.MounterUID, "mounter-uid", -1, "uid that owns the mounter socket's directory, created 0700 (-1: leave it as it is)")
	fs.StringVar(&o.STSEndpoint, "sts-endpoint", auth.DefaultSTSEndpoint, "Security Token Service where auth=workloadIdentity volumes exchange the pod's token")
	fs.StringVar(&o.IAMEndpoint, "iam-credentials-endpoint", auth.DefaultIAMEndpoint, "IAM Credentials API base, for volumes that impersonate a googleServiceAccount")
	fs.StringVar(&o.WIProvider, "workload-identity-provider", "", "default workload identity pool provider (STS audience) for auth=workloadIdentity volumes, e.g. //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER")
	fs.StringVar(&o.TokenAudience, "token-audience", "", "audience of the kubelet token (CSIDriver tokenRequests) to exchange; empty: the only token kubelet sends")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "host:port to serve Prometheus metrics on at /metrics, e.g. :9920 or 127.0.0.1:9920 (empty: no metrics, and gcsfuse's own are not collected)")
}

var dns1123Subdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)

// Validate checks every option and names the bad flag.
func (o *Options) Validate() error {
	var errs []error
	if _, err := o.socketPath(); err != nil {
		errs = append(errs, err)
	}
	if len(o.DriverName) > 63 || !dns1123Subdomain.MatchString(o.DriverName) {
		errs = append(errs, fmt.Errorf("--driver-name=%q: want a DNS subdomain of at most 63 characters", o.DriverName))
	}
	if strings.TrimSpace(o.NodeID) == "" {
		errs = append(errs, errors.New("--node-id: required"))
	}
	if !filepath.IsAbs(o.StateDir) {
		errs = append(errs, fmt.Errorf("--state-dir=%q: want an absolute path", o.StateDir))
	}
	if !filepath.IsAbs(o.KubeletDir) || filepath.Clean(o.KubeletDir) == "/" {
		errs = append(errs, fmt.Errorf("--kubelet-dir=%q: want kubelet's absolute root directory (not /)", o.KubeletDir))
	}
	if o.GCSFuseBinary == "" {
		errs = append(errs, errors.New("--gcsfuse: required"))
	}
	if o.GCSEndpoint != "" {
		u, err := url.Parse(o.GCSEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--gcs-endpoint=%q: want an http(s) URL such as http://127.0.0.1:4443/storage/v1/", o.GCSEndpoint))
		}
	}
	if o.MaxRetryAttempts < 1 || o.MaxRetryAttempts > 30 {
		errs = append(errs, fmt.Errorf("--max-retry-attempts=%d: want 1 to 30 (unbounded retries hang a dead mount)", o.MaxRetryAttempts))
	}
	if o.RegistrationDir != "" {
		if !filepath.IsAbs(o.RegistrationDir) {
			errs = append(errs, fmt.Errorf("--registration-dir=%q: want an absolute path", o.RegistrationDir))
		}
		if !filepath.IsAbs(o.KubeletRegistrationPath) {
			errs = append(errs, fmt.Errorf("--kubelet-registration-path=%q: want the CSI socket's absolute path on the host (required with --registration-dir)", o.KubeletRegistrationPath))
		}
	} else if o.KubeletRegistrationPath != "" {
		errs = append(errs, errors.New("--kubelet-registration-path: only meaningful with --registration-dir"))
	}
	if o.MounterSocket != "" && !filepath.IsAbs(o.MounterSocket) {
		errs = append(errs, fmt.Errorf("--mounter-socket=%q: want an absolute path", o.MounterSocket))
	}
	if o.MounterUID > 0 && o.MounterSocket == "" {
		errs = append(errs, errors.New("--mounter-uid: only meaningful with --mounter-socket"))
	}
	for _, e := range []struct{ flag, value string }{{"sts-endpoint", o.STSEndpoint}, {"iam-credentials-endpoint", o.IAMEndpoint}} {
		if e.value == "" {
			continue // Google's
		}
		if u, err := url.Parse(e.value); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--%s=%q: want an http(s) URL", e.flag, e.value))
		}
	}
	if err := validateMetricsAddress(o.MetricsAddress); err != nil {
		errs = append(errs, err)
	}
	if o.MountTimeout <= 0 {
		errs = append(errs, fmt.Errorf("--mount-timeout=%s: want a positive duration", o.MountTimeout))
	}
	return errors.Join(errs...)
}

func (o *Options) socketPath() (string, error) {
	u, err := url.Parse(o.Endpoint)
	if err != nil || u.Scheme != "unix" || (u.Path == "" && u.Host == "") {
		return "", fmt.Errorf("--endpoint=%q: want unix:///absolute/path.sock", o.Endpoint)
	}
	return u.Host + u.Path, nil
}
