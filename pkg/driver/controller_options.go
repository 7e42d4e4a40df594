package driver

import (
	"errors"
	"flag"
	"fmt"
	"net/url"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/controller"
)

// ControllerOptions configure `gcsfuse-csi controller`: the Identity and
// Controller services behind the external-provisioner (and
// external-resizer) sidecars.
type ControllerOptions struct {
	Endpoint    string // unix:///path/to/csi.sock
	DriverName  string
	GCSEndpoint string // custom GCS JSON API endpoint
	// Anonymous: calls without secrets use no credentials (emulators)
	// instead of the Application Default Credentials.
	Anonymous bool
	// BucketNamePrefix is prepended to the bucket names of the
	// bucket-per-volume layout (controller.BucketName).
	BucketNamePrefix string
	// ProjectID is the project of new buckets for StorageClasses without
	// a projectID parameter.
	ProjectID string
	// BucketLabelMarker records a new bucket's labels also on a marker
	// object, for GCS emulators that drop bucket labels.
	BucketLabelMarker bool
}

// AddFlags registers the options on fs with their defaults.
func (o *ControllerOptions) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Endpoint, "endpoint", "unix:///csi/csi.sock", "CSI endpoint (unix socket) the provisioner sidecar calls")
	fs.StringVar(&o.DriverName, "driver-name", DefaultDriverName, "CSI driver name; recorded on every bucket and prefix the controller creates")
	fs.StringVar(&o.GCSEndpoint, "gcs-endpoint", "", "custom GCS JSON API endpoint, e.g. http://127.0.0.1:4443/storage/v1/ (emulators, private endpoints); empty: Google's")
	fs.BoolVar(&o.Anonymous, "anonymous", false, "calls without a provisioner secret use no credentials (emulators) instead of the Application Default Credentials")
	fs.StringVar(&o.BucketNamePrefix, "bucket-name-prefix", "", "prepended, as it is, to the names of buckets created per volume (bucket name = prefix + volume name, e.g. pvc-<uuid>)")
	fs.StringVar(&o.ProjectID, "project-id", "", "Google Cloud project of new buckets, for StorageClasses without a projectID parameter")
	fs.BoolVar(&o.BucketLabelMarker, "bucket-label-marker", false, "for GCS emulators that do not keep bucket labels (fake-gcs-server): record them also on the object "+controller.MarkerObject+" in the bucket")
}

// Validate checks every option and names the bad flag.
func (o *ControllerOptions) Validate() error {
	var errs []error
	if _, err := (&Options{Endpoint: o.Endpoint}).socketPath(); err != nil {
		errs = append(errs, err)
	}
	if len(o.DriverName) > 63 || !dns1123Subdomain.MatchString(o.DriverName) {
		errs = append(errs, fmt.Errorf("--driver-name=%q: want a DNS subdomain of at most 63 characters", o.DriverName))
	}
	if o.GCSEndpoint != "" {
		u, err := url.Parse(o.GCSEndpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--gcs-endpoint=%q: want an http(s) URL such as http://127.0.0.1:4443/storage/v1/", o.GCSEndpoint))
		}
	}
	if err := controller.ValidateBucketPrefix(o.BucketNamePrefix); err != nil {
		errs = append(errs, fmt.Errorf("--bucket-name-prefix=%q: %w", o.BucketNamePrefix, err))
	}
	if o.ProjectID != "" {
		if _, err := controller.ParseParameters(map[string]string{controller.ParamProjectID: o.ProjectID}); err != nil {
			errs = append(errs, fmt.Errorf("--project-id=%q: want a Google Cloud project ID (6-30 lower-case letters, digits and '-', starting with a letter)", o.ProjectID))
		}
	}
	return errors.Join(errs...)
}
