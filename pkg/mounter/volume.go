package mounter

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// Volume is what one gcsfuse mount serves: a bucket (or one directory of it)
// with a flag set drawn only from the allow-list below. Build it with
// NewVolume and the Set* methods; every value is validated on the way in, so
// a Volume can always be turned into gcsfuse arguments safely.
type Volume struct {
	Bucket string
	// flags maps a gcsfuse flag name (without dashes) to its value; field
	// remembers which request field set it, for conflict messages.
	flags map[string]string
	field map[string]string
	// kernel holds the kernel mount options asked for (ro, noexec, noatime).
	kernel map[string]bool
	// profile is the profile attribute ("": the default profile).
	profile Profile
	// SkipAccessCheck turns off the bucket check done before mounting.
	SkipAccessCheck bool
	// Auth is what the volume attributes say about credentials; the driver
	// resolves it, with the request's secrets and tokens, into Credentials.
	Auth AuthAttributes
	// Credentials gcsfuse and the bucket check use; nil: the node's. They
	// are not part of Key: who may share a session is the caller's choice.
	Credentials *auth.Credentials
}

// AuthAttributes are the credential settings of a volume's attributes.
type AuthAttributes struct {
	Mode           auth.Mode // "" unless the auth attribute is set
	ServiceAccount string    // Google service account to impersonate
	Provider       string    // workload identity pool provider (STS audience)
}

// NewVolume returns a Volume for bucket, which must be a valid bucket name.
func NewVolume(bucket, field string) (*Volume, error) {
	if err := validBucket(bucket); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return &Volume{Bucket: bucket, flags: map[string]string{}, field: map[string]string{}, kernel: map[string]bool{}}, nil
}

// kind is how a flag's value is validated.
type kind int

const (
	kindBool    kind = iota
	kindInt          // decimal integer in [min, max]
	kindMode         // octal permission bits, e.g. 0644
	kindSizeMiB      // MiB: plain integer or quantity (512Ki, 32Mi, 1Gi, 1Ti), -1 when min allows it
	kindEnum
	kindDir      // a relative directory inside the bucket
	kindDuration // 0 (off) or a Go duration from 1s to 1h, e.g. 90s
)

// flagSpec is one row of the allow-list: a gcsfuse flag a volume may set,
// optionally under a typed volume attribute name.
type flagSpec struct {
	flag     string
	attr     string
	kind     kind
	min, max int64
	enum     []string
	doc      string
}

// allowList is the ONE list of gcsfuse flags a volume can set. Attributes
// (volume_context) and mount options (PV mountOptions, the mountOptions
// attribute) both resolve through it. It is read-only.
var allowList = []flagSpec{
	{flag: "only-dir", attr: "onlyDir", kind: kindDir, doc: "mount only this directory of the bucket"},
	{flag: "implicit-dirs", attr: "implicitDirs", kind: kindBool, doc: "show directories that exist only as object-name prefixes"},
	{flag: "uid", attr: "uid", kind: kindInt, min: 0, max: math.MaxInt32, doc: "owner uid of every file"},
	{flag: "gid", attr: "gid", kind: kindInt, min: 0, max: math.MaxInt32, doc: "owner gid of every file"},
	{flag: "file-mode", attr: "fileMode", kind: kindMode, doc: "permission bits of files (octal)"},
	{flag: "dir-mode", attr: "dirMode", kind: kindMode, doc: "permission bits of directories (octal)"},
	{flag: "metadata-cache-ttl-secs", attr: "metadataCacheTTLSeconds", kind: kindInt, min: -1, max: math.MaxInt32, doc: "TTL of cached stat and type entries; -1 never expires"},
	{flag: "metadata-cache-negative-ttl-secs", attr: "metadataCacheNegativeTTLSeconds", kind: kindInt, min: -1, max: math.MaxInt32, doc: "TTL of cached not-found entries"},
	{flag: "stat-cache-max-size-mb", attr: "metadataStatCacheCapacity", kind: kindSizeMiB, min: -1, max: math.MaxInt32, doc: "stat cache size; -1 unlimited"},
	{flag: "type-cache-max-size-mb", attr: "metadataTypeCacheCapacity", kind: kindSizeMiB, min: -1, max: math.MaxInt32, doc: "type cache size (deprecated and ignored by gcsfuse v3.13)"},
	{flag: "kernel-list-cache-ttl-secs", attr: "metadataListCacheTTLSeconds", kind: kindInt, min: -1, max: math.MaxInt32, doc: "TTL of directory listings in the kernel; 0 off"},
	{flag: "file-cache-max-size-mb", attr: "fileCacheCapacity", kind: kindSizeMiB, min: 0, max: math.MaxInt32, doc: "file cache size, in a driver-owned directory; 0 off"},
	{flag: "file-cache-cache-file-for-range-read", attr: "fileCacheForRangeRead", kind: kindBool, doc: "fill the file cache on random reads too"},
	{flag: "file-cache-enable-parallel-downloads", attr: "fileCacheParallelDownloads", kind: kindBool, doc: "download cached files in parallel chunks"},
	{flag: "log-severity", attr: "gcsfuseLoggingSeverity", kind: kindEnum, enum: []string{"trace", "debug", "info", "warning", "error", "off"}, doc: "gcsfuse log level"},
	{flag: "anonymous-access", attr: "anonymousAccess", kind: kindBool, doc: "no credentials: public buckets and emulators"},
	{flag: "rename-dir-limit", kind: kindInt, min: 0, max: 1_000_000, doc: "largest directory (in objects) that rename may move"},
	{flag: "max-conns-per-host", kind: kindInt, min: 0, max: 10_000, doc: "HTTP connections per GCS host"},
	{flag: "sequential-read-size-mb", kind: kindInt, min: 1, max: 1024, doc: "size of sequential GCS reads"},
	{flag: "max-retry-attempts", kind: kindInt, min: 1, max: 30, doc: "attempts per GCS call (bounded: the driver never allows unbounded retries)"},
	{flag: "http-client-timeout", attr: "httpClientTimeout", kind: kindDuration, doc: "limit on one whole GCS HTTP request, body included; 0 (gcsfuse's default) waits forever on a stalled backend"},
	{flag: "enable-nonexistent-type-cache", kind: kindBool, doc: "cache not-found types"},
	{flag: "enable-streaming-writes", kind: kindBool, doc: "upload writes as they happen instead of staging them locally"},
	{flag: "enable-buffered-read", kind: kindBool, doc: "prefetch into memory (about +320 MB per mount)"},
	{flag: "enable-kernel-reader", attr: "kernelReader", kind: kindBool, doc: "read through the kernel's read-ahead and page cache; excludes a file cache"},
	{flag: "max-read-ahead-kb", attr: "readAheadKB", kind: kindInt, min: 0, max: maxReadAheadKB, doc: "the mount's kernel read-ahead (bdi read_ahead_kb), applied by the driver"},
	// Up to the kernel's default max_pages_limit: more would need a
	// node-wide change the driver does not make (profiles.go).
	{flag: "fuse-max-request-size-kb", kind: kindInt, min: 4, max: 1024, doc: "largest FUSE read request with the kernel reader"},
	{flag: "experimental-enable-dentry-cache", kind: kindBool, doc: "kernel dentry cache with the metadata cache's TTL"},
	{flag: "experimental-enable-readdirplus", kind: kindBool, doc: "attributes with directory listings (READDIRPLUS)"},
}

// denied names gcsfuse flags and kernel options a volume must never set,
// each with the reason given back to the user.
var denied = map[string]string{
	"key-file":             "credentials come from the driver (node credentials or a secret), never from a node path",
	"token-url":            "the token endpoint is set by the driver",
	"reuse-token-from-url": "the token endpoint is set by the driver",
	"config-file":          "a config file can set any flag, including ones that escape the volume",
	"log-file":             "the driver owns every node path gcsfuse writes to",
	"cache-dir":            "the driver owns every node path gcsfuse writes to (use fileCacheCapacity for a file cache)",
	"temp-dir":             "the driver owns every node path gcsfuse writes to",
	"custom-endpoint":      "the GCS endpoint is a driver setting (--gcs-endpoint)",
	"foreground":           "the driver runs gcsfuse itself",
	"prometheus-port":      "it would open a port on the node's network",
	"billing-project":      "it would bill a project with the node's credentials",
	"s2a-address":          "connection endpoints are driver settings",
	"s2a-spiffe-id":        "connection endpoints are driver settings",
	"log-format":           "the driver reads gcsfuse logs in its own format",
	"debug":                "use gcsfuseLoggingSeverity (log-severity)",
	// kernel options the driver always sets itself
	"suid": "the driver always mounts nosuid", "dev": "the driver always mounts nodev",
	"allow_other": "set by the driver", "default_permissions": "set by the driver",
	"user_id": "set by the driver", "group_id": "set by the driver", "fd": "set by the driver",
	"rootmode": "set by the driver", "max_read": "set by the driver", "blksize": "set by the driver",
}

// kernelOptions are the raw mount options a volume may ask for, bare or as
// "o=NAME". nosuid and nodev are always applied, so asking is allowed.
var kernelOptions = []string{"ro", "rw", "noexec", "exec", "noatime", "nosuid", "nodev"}

// internalAttributes are set by kubelet or the external-provisioner, not by
// users: they are accepted and carry no gcsfuse meaning.
var internalAttributes = []string{
	"csi.storage.k8s.io/pod.name", "csi.storage.k8s.io/pod.namespace", "csi.storage.k8s.io/pod.uid",
	"csi.storage.k8s.io/serviceAccount.name", "csi.storage.k8s.io/serviceAccount.tokens",
	"csi.storage.k8s.io/ephemeral", "csi.storage.k8s.io/pv/name", "csi.storage.k8s.io/pvc/name",
	"csi.storage.k8s.io/pvc/namespace", "storage.kubernetes.io/csiProvisionerIdentity",
}

// Attribute names with a meaning outside the flag table.
const (
	AttrBucketName      = "bucketName"
	AttrMountOptions    = "mountOptions"
	AttrSkipAccessCheck = "skipBucketAccessCheck"
	AttrAuth            = "auth"
	AttrServiceAccount  = "googleServiceAccount"
	AttrProvider        = "workloadIdentityProvider"
	AttrEphemeral       = "csi.storage.k8s.io/ephemeral"
	AttrTokens          = "csi.storage.k8s.io/serviceAccount.tokens"
)

var (
	serviceAccountRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]{0,99}@[a-z0-9][a-z0-9.-]{0,149}$`)
	providerRE       = regexp.MustCompile(`^//[a-z0-9.-]+/[A-Za-z0-9._~:/@-]{1,400}$|^[A-Za-z0-9._~:/@-]{1,400}$`)
)

// SetAttribute applies one volume_context entry. Unknown names are rejected.
func (v *Volume) SetAttribute(name, value string) error {
	field := "volume_context." + FieldName(name)
	switch {
	case name == AttrBucketName:
		if value != v.Bucket {
			return fmt.Errorf("%s=%q does not match the volume's bucket %q", field, value, v.Bucket)
		}
		return nil
	case name == AttrMountOptions:
		for _, opt := range strings.Split(value, ",") {
			if err := v.SetMountOption(strings.TrimSpace(opt), field); err != nil {
				return err
			}
		}
		return nil
	case name == AttrSkipAccessCheck:
		b, err := parseBool(value)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		v.SkipAccessCheck = b
		return nil
	case name == AttrProfile:
		return v.setProfile(value, field)
	case name == AttrAuth:
		if !slices.Contains(auth.Modes, auth.Mode(value)) {
			return fmt.Errorf("%s=%q: want one of %s", field, value, joinModes())
		}
		v.Auth.Mode = auth.Mode(value)
		return nil
	case name == AttrServiceAccount:
		if !serviceAccountRE.MatchString(value) {
			return fmt.Errorf("%s=%q: want a service account email (NAME@PROJECT.iam.gserviceaccount.com)", field, value)
		}
		v.Auth.ServiceAccount = value
		return nil
	case name == AttrProvider:
		if !providerRE.MatchString(value) {
			return fmt.Errorf("%s=%q: want a workload identity pool provider, e.g. //iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER", field, value)
		}
		v.Auth.Provider = value
		return nil
	case slices.Contains(internalAttributes, name):
		return nil
	}
	for i := range allowList {
		if allowList[i].attr == name {
			return v.setFlag(&allowList[i], value, field)
		}
	}
	return fmt.Errorf("%s: unknown volume attribute; allowed: %s", field, strings.Join(AttributeNames(), ", "))
}

// SetMountOption applies one mount option: a gcsfuse flag ("implicit-dirs",
// "uid=1000", "--file-mode=0640") from the allow-list, or a kernel option
// ("ro", "o=noexec"). field names where it came from, for errors.
func (v *Volume) SetMountOption(opt, field string) error {
	if opt == "" {
		return nil
	}
	name, value, hasValue := strings.Cut(strings.TrimLeft(opt, "-"), "=")
	if name == "o" || name == "-o" {
		name, value, hasValue = value, "", false
		if strings.Contains(name, "=") {
			return fmt.Errorf("%s: kernel option %q is not allowed; allowed: %s", field, name, strings.Join(kernelOptions, ", "))
		}
	}
	if slices.Contains(kernelOptions, name) && !hasValue {
		v.kernel[name] = true
		return v.checkKernelConflicts(field)
	}
	if reason, ok := denied[name]; ok {
		return fmt.Errorf("%s: mount option %q is not allowed: %s", field, name, reason)
	}
	for i := range allowList {
		spec := &allowList[i]
		if spec.flag != name {
			continue
		}
		if !hasValue {
			if spec.kind != kindBool {
				return fmt.Errorf("%s: mount option %q needs a value (%s=...)", field, name, name)
			}
			value = "true"
		}
		return v.setFlag(spec, value, field)
	}
	return fmt.Errorf("%s: unknown or unsupported mount option %q; allowed: %s", field, name, strings.Join(MountOptionNames(), ", "))
}

func (v *Volume) checkKernelConflicts(field string) error {
	for _, pair := range [][2]string{{"ro", "rw"}, {"exec", "noexec"}} {
		if v.kernel[pair[0]] && v.kernel[pair[1]] {
			return fmt.Errorf("%s: mount options %q and %q contradict each other", field, pair[0], pair[1])
		}
	}
	return nil
}

// SetReadOnly makes the whole mount read-only (reader-only access modes).
func (v *Volume) SetReadOnly() { v.kernel["ro"] = true; delete(v.kernel, "rw") }

// SetMountGroup applies a pod's fsGroup (volume_mount_group): files belong to
// gid and are group-writable unless modes were given explicitly.
func (v *Volume) SetMountGroup(gid, field string) error {
	if err := v.setFlag(specFor("gid"), gid, field); err != nil {
		return err
	}
	if _, ok := v.flags["file-mode"]; !ok {
		v.flags["file-mode"], v.field["file-mode"] = "0664", field
	}
	if _, ok := v.flags["dir-mode"]; !ok {
		v.flags["dir-mode"], v.field["dir-mode"] = "0775", field
	}
	return nil
}

// SetOnlyDir mounts only dir of the bucket (a volume handle's "bucket/dir").
func (v *Volume) SetOnlyDir(dir, field string) error {
	return v.setFlag(specFor("only-dir"), dir, field)
}

func specFor(flag string) *flagSpec {
	for i := range allowList {
		if allowList[i].flag == flag {
			return &allowList[i]
		}
	}
	panic("mounter: no allow-list entry for " + flag)
}

func (v *Volume) setFlag(spec *flagSpec, raw, field string) error {
	value, err := spec.normalize(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	if old, ok := v.flags[spec.flag]; ok && old != value {
		return fmt.Errorf("%s sets %s=%s but %s already set it to %s", field, spec.flag, value, v.field[spec.flag], old)
	}
	v.flags[spec.flag], v.field[spec.flag] = value, field
	return v.checkFlagConflicts(field)
}

// normalize validates raw for this flag and returns its canonical form.
func (s *flagSpec) normalize(raw string) (string, error) {
	switch s.kind {
	case kindBool:
		b, err := parseBool(raw)
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.flag, err)
		}
		return strconv.FormatBool(b), nil
	case kindInt:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil || n < s.min || n > s.max {
			return "", fmt.Errorf("%s=%q: want an integer from %d to %d", s.flag, raw, s.min, s.max)
		}
		return strconv.FormatInt(n, 10), nil
	case kindMode:
		n, err := strconv.ParseUint(raw, 8, 32)
		if err != nil || n > 0o777 || len(raw) > 4 {
			return "", fmt.Errorf("%s=%q: want octal permission bits from 000 to 0777", s.flag, raw)
		}
		return fmt.Sprintf("%04o", n), nil
	case kindSizeMiB:
		n, err := parseMiB(raw)
		if err != nil || n < s.min || n > s.max {
			return "", fmt.Errorf("%s=%q: want a size in MiB (e.g. 64) or a quantity (e.g. 512Mi, 10Gi)%s", s.flag, raw, map[bool]string{true: ", or -1 for unlimited"}[s.min < 0])
		}
		return strconv.FormatInt(n, 10), nil
	case kindEnum:
		if !slices.Contains(s.enum, raw) {
			return "", fmt.Errorf("%s=%q: want one of %s", s.flag, raw, strings.Join(s.enum, ", "))
		}
		return raw, nil
	case kindDir:
		d, err := cleanDir(raw)
		if err != nil {
			return "", fmt.Errorf("%s=%q: %w", s.flag, raw, err)
		}
		return d, nil
	case kindDuration:
		d, err := time.ParseDuration(raw)
		if raw == "0" {
			d, err = 0, nil
		}
		if err != nil || (d != 0 && (d < time.Second || d > time.Hour)) {
			return "", fmt.Errorf("%s=%q: want 0 (no limit) or a duration from 1s to 1h, e.g. 90s or 2m", s.flag, raw)
		}
		return d.String(), nil
	}
	return "", fmt.Errorf("%s: unsupported value kind", s.flag)
}

func parseBool(s string) (bool, error) {
	switch strings.ToLower(s) {
	case "true", "yes", "1":
		return true, nil
	case "false", "no", "0":
		return false, nil
	}
	return false, fmt.Errorf("%q is not a boolean (want true or false)", s)
}

var quantityRE = regexp.MustCompile(`^(-?[0-9]+)(Ki|Mi|Gi|Ti)?$`)

// parseMiB reads "64" (MiB), or a binary quantity "512Ki", "32Mi", "1Gi",
// "2Ti", rounding up to whole MiB.
func parseMiB(s string) (int64, error) {
	m := quantityRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("bad size %q", s)
	}
	n, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil || (n < 0 && (n != -1 || m[2] != "")) || n > 1<<40 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	switch m[2] {
	case "Ki":
		return (n + 1023) / 1024, nil
	case "Gi":
		return n * 1024, nil
	case "Ti":
		return n * 1024 * 1024, nil
	}
	return n, nil
}

var bucketRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$`)

// validBucket applies GCS bucket naming rules that matter for safety and
// clear errors: lower case letters, digits, '-', '_', '.', 3-222 chars,
// dot-separated parts of at most 63.
func validBucket(b string) error {
	if !bucketRE.MatchString(b) || strings.Contains(b, "..") {
		return fmt.Errorf("invalid bucket name %q: use 3-222 lower-case letters, digits, '-', '_' and '.', starting and ending with a letter or digit", b)
	}
	for _, part := range strings.Split(b, ".") {
		if len(part) > 63 || part == "" {
			return fmt.Errorf("invalid bucket name %q: each dot-separated part must be 1-63 characters", b)
		}
	}
	if len(b) > 63 && !strings.Contains(b, ".") {
		return fmt.Errorf("invalid bucket name %q: names without dots are at most 63 characters", b)
	}
	return nil
}

// cleanDir validates a directory inside the bucket: relative, no "." or ".."
// segments, no empty segments, printable. A trailing "/" is dropped.
func cleanDir(d string) (string, error) {
	d = strings.TrimSuffix(d, "/")
	if d == "" || len(d) > 1024 {
		return "", fmt.Errorf("want a non-empty directory of at most 1024 bytes")
	}
	if strings.HasPrefix(d, "/") {
		return "", fmt.Errorf("want a directory relative to the bucket root, without a leading '/'")
	}
	for _, seg := range strings.Split(d, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return "", fmt.Errorf("path segments may not be empty, '.' or '..'")
		}
	}
	if !utf8.ValidString(d) {
		return "", fmt.Errorf("want valid UTF-8")
	}
	for _, r := range d {
		if unicode.IsControl(r) || r == ',' {
			return "", fmt.Errorf("control characters and ',' are not allowed")
		}
	}
	return d, nil
}

// Flag returns the value set for a gcsfuse flag and whether it was set.
func (v *Volume) Flag(name string) (string, bool) { s, ok := v.flags[name]; return s, ok }

// ReadOnly reports whether the whole mount is read-only.
func (v *Volume) ReadOnly() bool { return v.kernel["ro"] }

// KernelOptions returns the requested kernel mount options, sorted.
func (v *Volume) KernelOptions() []string {
	var out []string
	for k := range v.kernel {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// Args returns the volume's gcsfuse flags ("--name=value"), sorted.
func (v *Volume) Args() []string {
	names := make([]string, 0, len(v.flags))
	for k := range v.flags {
		names = append(names, k)
	}
	slices.Sort(names)
	out := make([]string, 0, len(names))
	for _, k := range names {
		out = append(out, "--"+k+"="+v.flags[k])
	}
	return out
}

// Key identifies what the mount serves: equal keys can share one gcsfuse.
func (v *Volume) Key() string {
	parts := append([]string{v.Bucket}, v.Args()...)
	for i, p := range parts {
		// A value with a space (only-dir may have one) must not read as two
		// args: quote it. Plain parts, the usual case, stay as they are, so
		// session ids of existing mounts do not change.
		if strings.ContainsAny(p, " \\\"") {
			parts[i] = strconv.Quote(p)
		}
	}
	key := strings.Join(parts, " ") + " o=" + strings.Join(v.KernelOptions(), ",")
	if v.Profile() != ProfileDefault {
		// Only a non-default profile shows: session ids of volumes that
		// name no profile stay what they were.
		key += " profile=" + string(v.profile)
	}
	return key
}

// SessionID names the gcsfuse session that serves v at mountpoint. It is
// part of the FUSE mount's source ("bucket:sid"), so the mount table alone
// tells which session a mount or bind mount belongs to.
func SessionID(mountpoint string, v *Volume) string {
	h := sha256.Sum256([]byte(mountpoint + "\x00" + v.Key()))
	return hex.EncodeToString(h[:8])
}

func joinModes() string {
	s := make([]string, len(auth.Modes))
	for i, m := range auth.Modes {
		s[i] = string(m)
	}
	return strings.Join(s, ", ")
}

// FieldName is name as it appears in an error: quoted when it is not a
// plain printable name, so that a newline or a space in a hostile
// attribute name cannot forge or hide the rest of the message.
func FieldName(name string) string {
	for _, r := range name {
		if r <= ' ' || r == '"' || r == '\\' || r > '~' {
			return strconv.Quote(name)
		}
	}
	if name == "" {
		return `""`
	}
	return name
}

// AttributeNames lists every volume attribute a user may set.
func AttributeNames() []string {
	names := []string{AttrBucketName, AttrMountOptions, AttrSkipAccessCheck, AttrAuth, AttrServiceAccount, AttrProvider, AttrProfile}
	for _, s := range allowList {
		if s.attr != "" {
			names = append(names, s.attr)
		}
	}
	return names
}

// MountOptionNames lists every mount option a user may set.
func MountOptionNames() []string {
	var names []string
	for _, s := range allowList {
		names = append(names, s.flag)
	}
	return append(names, kernelOptions...)
}
