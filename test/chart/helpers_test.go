package chart

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
)

const (
	chartDir    = "../../deploy/helm/gcsfuse-csi"
	examplesDir = chartDir + "/examples"
	releaseName = "gcsfuse-csi"
	releaseNS   = "gcsfuse-csi"
)

// object is one decoded manifest document.
type object struct {
	source string // template or file it came from
	kind   string // apiVersion/kind, e.g. "apps/v1/DaemonSet"
	meta   metav1.Object
	obj    any // the typed object, e.g. *appsv1.DaemonSet
}

func (o object) String() string { return fmt.Sprintf("%s %s (%s)", o.kind, o.meta.GetName(), o.source) }

// kinds are the only objects the chart and the examples may contain. A kind
// missing here fails the test: add it on purpose, with assertions.
var kinds = map[string]func() metav1.Object{
	"storage.k8s.io/v1/CSIDriver":                     func() metav1.Object { return &storagev1.CSIDriver{} },
	"apps/v1/DaemonSet":                               func() metav1.Object { return &appsv1.DaemonSet{} },
	"apps/v1/Deployment":                              func() metav1.Object { return &appsv1.Deployment{} },
	"storage.k8s.io/v1/StorageClass":                  func() metav1.Object { return &storagev1.StorageClass{} },
	"v1/ServiceAccount":                               func() metav1.Object { return &corev1.ServiceAccount{} },
	"v1/Service":                                      func() metav1.Object { return &corev1.Service{} }, // metrics.enabled
	"v1/Secret":                                       func() metav1.Object { return &corev1.Secret{} },
	"v1/Namespace":                                    func() metav1.Object { return &corev1.Namespace{} },
	"v1/PersistentVolume":                             func() metav1.Object { return &corev1.PersistentVolume{} },
	"v1/PersistentVolumeClaim":                        func() metav1.Object { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                                          func() metav1.Object { return &corev1.Pod{} },
	"rbac.authorization.k8s.io/v1/Role":               func() metav1.Object { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1/ClusterRole":        func() metav1.Object { return &rbacv1.ClusterRole{} },
	"rbac.authorization.k8s.io/v1/RoleBinding":        func() metav1.Object { return &rbacv1.RoleBinding{} },
	"rbac.authorization.k8s.io/v1/ClusterRoleBinding": func() metav1.Object { return &rbacv1.ClusterRoleBinding{} },
}

// decodeStrict decodes every YAML document of data into its k8s.io/api type.
// An unknown field, a duplicate field, a wrong type or an unknown kind is an
// error.
func decodeStrict(source string, data []byte) ([]object, error) {
	var out []object
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		js, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		if s := strings.TrimSpace(string(js)); s == "null" || s == "" {
			continue // only comments, or empty
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", source, i, err)
		}
		kind := tm.APIVersion + "/" + tm.Kind
		newObj := kinds[kind]
		if newObj == nil {
			return nil, fmt.Errorf("%s: document %d: kind %q is not known to this test", source, i, kind)
		}
		obj := newObj()
		if err := yaml.UnmarshalStrict(doc, obj); err != nil {
			return nil, fmt.Errorf("%s: %s: strict decoding: %w", source, kind, err)
		}
		if obj.GetName() == "" {
			return nil, fmt.Errorf("%s: %s without metadata.name", source, kind)
		}
		out = append(out, object{source: source, kind: kind, meta: obj, obj: obj})
	}
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// parseValues reads a values overlay, as `helm install -f` would.
func parseValues(t *testing.T, overlay string) map[string]any {
	t.Helper()
	v, err := chartutil.ReadValues([]byte(overlay))
	if err != nil {
		t.Fatalf("values %q: %v", overlay, err)
	}
	return v
}

// renderChart renders the chart the way `helm install`/`helm template` do:
// the values are coalesced with values.yaml and checked against
// values.schema.json, then every template is rendered (strict: a template
// reading a value that does not exist fails).
func renderChart(c *chart.Chart, vals map[string]any) (map[string]string, error) {
	opts := chartutil.ReleaseOptions{Name: releaseName, Namespace: releaseNS, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(c, vals, opts, chartutil.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(c, rv)
}

// manifest is a rendered chart, decoded.
type manifest struct {
	files   map[string]string
	objects []object
	values  chartutil.Values // coalesced values the chart was rendered with
}

func render(t *testing.T, overlay string) *manifest {
	t.Helper()
	c := loadChart(t)
	vals := parseValues(t, overlay)
	files, err := renderChart(c, vals)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	coalesced, err := chartutil.CoalesceValues(c, vals)
	if err != nil {
		t.Fatalf("coalesce: %v", err)
	}
	m := &manifest{files: files, values: coalesced}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if path.Ext(name) != ".yaml" {
			continue // NOTES.txt, _helpers.tpl
		}
		objs, err := decodeStrict(name, []byte(files[name]))
		if err != nil {
			t.Fatal(err)
		}
		m.objects = append(m.objects, objs...)
	}
	if len(m.objects) == 0 {
		t.Fatal("the chart rendered no objects")
	}
	return m
}

func (m *manifest) ofKind(kind string) []object {
	var out []object
	for _, o := range m.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (m *manifest) value(t *testing.T, key string) any {
	t.Helper()
	v, err := m.values.PathValue(key)
	if err != nil {
		t.Fatalf("value %s: %v", key, err)
	}
	return v
}

func (m *manifest) str(t *testing.T, key string) string {
	t.Helper()
	s, ok := m.value(t, key).(string)
	if !ok {
		t.Fatalf("value %s is %T, want a string", key, m.value(t, key))
	}
	return s
}

// only returns the one object of kind; anything else fails the test.
func only[T any](t *testing.T, m *manifest, kind string) T {
	t.Helper()
	objs := m.ofKind(kind)
	if len(objs) != 1 {
		t.Fatalf("%d objects of kind %s, want 1: %v", len(objs), kind, objs)
	}
	return objs[0].obj.(T)
}

func container(t *testing.T, spec *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range spec.Containers {
		if spec.Containers[i].Name == name {
			return &spec.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

func containerNames(spec *corev1.PodSpec) []string {
	var names []string
	for _, c := range spec.InitContainers {
		names = append(names, "init:"+c.Name)
	}
	for _, c := range spec.Containers {
		names = append(names, c.Name)
	}
	return names
}

// hostPathOf resolves a path inside container c to the host path behind it:
// the mount with the longest matching mountPath, which must be a hostPath
// volume. It returns the mount too.
func hostPathOf(spec *corev1.PodSpec, c *corev1.Container, p string) (string, *corev1.VolumeMount, error) {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		vm := &c.VolumeMounts[i]
		if (p == vm.MountPath || strings.HasPrefix(p, strings.TrimSuffix(vm.MountPath, "/")+"/")) &&
			(best == nil || len(vm.MountPath) > len(best.MountPath)) {
			best = vm
		}
	}
	if best == nil {
		return "", nil, fmt.Errorf("container %s: %q is on no volume mount (it would be in the container's own filesystem)", c.Name, p)
	}
	for _, v := range spec.Volumes {
		if v.Name != best.Name {
			continue
		}
		if v.HostPath == nil {
			return "", nil, fmt.Errorf("container %s: %q is on volume %q, which is not a hostPath", c.Name, p, v.Name)
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, best.MountPath), "/")
		return filepath.Join(v.HostPath.Path, rel), best, nil
	}
	return "", nil, fmt.Errorf("container %s: mount %q names no volume", c.Name, best.Name)
}

// driverFlags parses a driver container's args with the driver's own flag
// set (plus klog's -v and -vmodule, as cmd/gcsfuse-csi adds them) and
// validates them as the driver would at start.
func driverFlags(args []string) (driver.Options, int, error) {
	var opts driver.Options
	v, err := modeFlags("node", args, opts.AddFlags, opts.Validate)
	return opts, v, err
}

// modeFlags parses args, which must start with mode, with the flags add
// registers (plus klog's -v and -vmodule) and then runs validate; it
// returns -v.
func modeFlags(mode string, args []string, add func(*flag.FlagSet), validate func() error) (int, error) {
	if len(args) == 0 || args[0] != mode {
		return 0, fmt.Errorf("args %q: want the %s mode first", args, mode)
	}
	fs := flag.NewFlagSet("gcsfuse-csi "+mode, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	add(fs)
	v := fs.Int("v", 0, "")
	fs.String("vmodule", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return 0, fmt.Errorf("args %q: %w", args, err)
	}
	if fs.NArg() > 0 {
		return 0, fmt.Errorf("args %q: stray arguments %q", args, fs.Args())
	}
	return *v, validate()
}

// mounterOptions are the flags the chart gives `gcsfuse-csi mounter`.
type mounterOptions struct {
	socket, gcsfuse, workDir string
	v                        int
}

// mounterFlags parses a mounter container's args: the mounter mode first,
// then its flags (plus klog's -v and -vmodule), each absolute where a path.
func mounterFlags(args []string) (mounterOptions, error) {
	var o mounterOptions
	if len(args) == 0 || args[0] != "mounter" {
		return o, fmt.Errorf("args %q: want the mounter mode first", args)
	}
	fs := flag.NewFlagSet("gcsfuse-csi mounter", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&o.socket, "socket", "", "")
	fs.StringVar(&o.gcsfuse, "gcsfuse", "", "")
	fs.StringVar(&o.workDir, "work-dir", "", "")
	fs.IntVar(&o.v, "v", 0, "")
	fs.String("vmodule", "", "")
	if err := fs.Parse(args[1:]); err != nil {
		return o, fmt.Errorf("args %q: %w", args, err)
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("args %q: stray arguments %q", args, fs.Args())
	}
	if !filepath.IsAbs(o.socket) || o.gcsfuse == "" || !filepath.IsAbs(o.workDir) {
		return o, fmt.Errorf("args %q: want an absolute --socket and --work-dir, and --gcsfuse", args)
	}
	return o, nil
}

// daemonSet returns the DaemonSet whose pods carry
// app.kubernetes.io/component=component, or nil if there is none.
func daemonSet(t *testing.T, m *manifest, component string) *appsv1.DaemonSet {
	t.Helper()
	var found []*appsv1.DaemonSet
	for _, o := range m.ofKind("apps/v1/DaemonSet") {
		ds := o.obj.(*appsv1.DaemonSet)
		if ds.Spec.Template.Labels["app.kubernetes.io/component"] == component {
			found = append(found, ds)
		}
	}
	switch len(found) {
	case 0:
		return nil
	case 1:
		return found[0]
	}
	t.Fatalf("%d DaemonSets of component %q, want at most 1", len(found), component)
	return nil
}

// nodeDaemonSet returns the node driver's DaemonSet, which every rendering has.
func nodeDaemonSet(t *testing.T, m *manifest) *appsv1.DaemonSet {
	t.Helper()
	ds := daemonSet(t, m, "node")
	if ds == nil {
		t.Fatal("no DaemonSet of component node")
	}
	return ds
}

// volumeOf returns the volume behind path p in container c (the mount with
// the longest matching mountPath).
func volumeOf(spec *corev1.PodSpec, c *corev1.Container, p string) (*corev1.Volume, error) {
	var best *corev1.VolumeMount
	for i := range c.VolumeMounts {
		vm := &c.VolumeMounts[i]
		if (p == vm.MountPath || strings.HasPrefix(p, strings.TrimSuffix(vm.MountPath, "/")+"/")) &&
			(best == nil || len(vm.MountPath) > len(best.MountPath)) {
			best = vm
		}
	}
	if best == nil {
		return nil, fmt.Errorf("container %s: %q is on no volume mount (it would be in the container's own filesystem)", c.Name, p)
	}
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == best.Name {
			return &spec.Volumes[i], nil
		}
	}
	return nil, fmt.Errorf("container %s: mount %q names no volume", c.Name, best.Name)
}

// intValue reads an integer value (YAML numbers arrive as float64 or int64).
func (m *manifest) intValue(t *testing.T, key string) int64 {
	t.Helper()
	switch v := m.value(t, key).(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	default:
		t.Fatalf("value %s is %T, want a number", key, v)
		return 0
	}
}

// argValue returns the value of --name=value in args.
func argValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

// unixPath turns unix:///a/b into /a/b.
func unixPath(t *testing.T, endpoint string) string {
	t.Helper()
	p, ok := strings.CutPrefix(endpoint, "unix://")
	if !ok || !strings.HasPrefix(p, "/") {
		t.Fatalf("endpoint %q: want unix:///absolute/path", endpoint)
	}
	return p
}

func readFile(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
