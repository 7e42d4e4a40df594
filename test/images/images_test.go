// Package images tests the node driver image: the tarball `make images`
// builds with hack/imgbuild (no Docker engine), and the Dockerfile, the path
// for users with one. The tarball is opened with go-containerregistry and
// checked file by file; the Dockerfile is parsed and must list the same
// paths, entrypoint, environment and labels, so the two cannot drift.
//
// The image is built once, into a temp dir, from the static binaries in
// bin/linux-amd64 (built with `make` when missing).
package images_test

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const repo = "ghcr.io/gcsfuse-csi/gcsfuse-csi"

// entry is one path of the image's filesystem.
type entry struct {
	typ  byte        // tar.TypeDir or tar.TypeReg
	mode fs.FileMode // permission, setuid/setgid and sticky bits
}

// wantLayout is the whole filesystem of the image: nothing more, nothing less.
var wantLayout = map[string]entry{
	"/etc":                               {tar.TypeDir, 0o755},
	"/etc/passwd":                        {tar.TypeReg, 0o644},
	"/etc/group":                         {tar.TypeReg, 0o644},
	"/etc/nsswitch.conf":                 {tar.TypeReg, 0o644},
	"/etc/ssl":                           {tar.TypeDir, 0o755},
	"/etc/ssl/certs":                     {tar.TypeDir, 0o755},
	"/etc/ssl/certs/ca-certificates.crt": {tar.TypeReg, 0o644},
	"/sbin":                              {tar.TypeDir, 0o755},
	"/sbin/tini":                         {tar.TypeReg, 0o755},
	"/tmp":                               {tar.TypeDir, fs.ModeSticky | 0o777},
	"/usr":                               {tar.TypeDir, 0o755},
	"/usr/local":                         {tar.TypeDir, 0o755},
	"/usr/local/bin":                     {tar.TypeDir, 0o755},
	"/usr/local/bin/gcsfuse":             {tar.TypeReg, 0o755},
	"/usr/local/bin/gcsfuse-csi":         {tar.TypeReg, 0o755},
}

var (
	wantEntrypoint = []string{"/sbin/tini", "--", "/usr/local/bin/gcsfuse-csi"}
	wantCmd        = []string{"node"}
	wantLabels     = []string{"org.opencontainers.image.source", "org.opencontainers.image.revision", "org.opencontainers.image.version", "org.opencontainers.image.title"}
)

// built is the image every test looks at.
type built struct {
	root    string // the repository
	tar     string // the image tarball
	layout  string // the tarball, unpacked: an OCI image layout
	rootfs  string // its filesystem, extracted
	version string // the driver's version (the binary's own)
	commit  string
	short   string
	img     v1.Image
	cfg     *v1.ConfigFile
	files   map[string]entry
	hdrs    map[string]*tar.Header
	imgbld  string // the hack/imgbuild binary
	inputs  []string
}

var (
	once     sync.Once
	image    *built
	imageErr error
	tmpDir   string
)

func TestMain(m *testing.M) {
	var err error
	tmpDir, err = os.MkdirTemp("", "gcsfuse-csi-images-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(tmpDir)
	os.Exit(code)
}

// img builds the image on first use and returns it.
func img(t *testing.T) *built {
	t.Helper()
	once.Do(func() { image, imageErr = buildImage() })
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return image
}

func repoRoot() (string, error) {
	root, err := filepath.Abs("../..")
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return "", err
	}
	return root, nil
}

func run(dir string, env []string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func buildImage() (*built, error) {
	root, err := repoRoot()
	if err != nil {
		return nil, err
	}
	b := &built{root: root}
	driver := filepath.Join(root, "bin/linux-amd64/gcsfuse-csi")
	gcsfuse := filepath.Join(root, "bin/linux-amd64/gcsfuse")
	// Reuse what `make images` built; build only what is missing, with the
	// Makefile's own rules (the same flags as `make images`).
	var targets []string
	for _, p := range []string{driver, gcsfuse} {
		if _, err := os.Stat(p); err != nil {
			targets = append(targets, strings.TrimPrefix(p, root+"/"))
		}
	}
	if _, err := os.Stat("/usr/bin/tini-static"); err != nil {
		targets = append(targets, "image-deps")
	}
	if len(targets) > 0 {
		if _, err := run(root, nil, "make", append([]string{"--no-print-directory"}, targets...)...); err != nil {
			return nil, err
		}
	}
	out, err := run(root, nil, driver, "version")
	if err != nil {
		return nil, err
	}
	b.version = strings.TrimSpace(out)
	if out, err := run(root, nil, "git", "rev-parse", "HEAD"); err == nil {
		b.commit = strings.TrimSpace(out)
		b.short = b.commit[:7]
	} else {
		b.commit, b.short = "0123456789abcdef0123456789abcdef01234567", "0123456"
	}
	b.imgbld = filepath.Join(tmpDir, "imgbuild")
	if _, err := run(root, nil, "go", "build", "-o", b.imgbld, "./hack/imgbuild"); err != nil {
		return nil, err
	}
	b.inputs = []string{"-driver", driver, "-gcsfuse", gcsfuse, "-version", b.version, "-commit", b.commit, "-short-commit", b.short, "-created", "1700000000"}
	b.tar = filepath.Join(tmpDir, "gcsfuse-csi.tar")
	if _, err := run(root, nil, b.imgbld, append(b.inputs, "-o", b.tar)...); err != nil {
		return nil, err
	}

	// Read it as containerd does: the OCI layout's index, the entry named
	// after the version tag.
	b.layout = filepath.Join(tmpDir, "layout")
	if err := untar(b.tar, b.layout); err != nil {
		return nil, err
	}
	idx, err := layout.ImageIndexFromPath(b.layout)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	for _, d := range im.Manifests {
		if d.Annotations["io.containerd.image.name"] == repo+":"+b.version {
			if b.img, err = idx.Image(d.Digest); err != nil {
				return nil, err
			}
		}
	}
	if b.img == nil {
		return nil, fmt.Errorf("%s: index.json has no image named %s:%s", b.tar, repo, b.version)
	}
	if b.cfg, err = b.img.ConfigFile(); err != nil {
		return nil, err
	}
	b.rootfs = filepath.Join(tmpDir, "rootfs")
	if b.files, b.hdrs, err = extract(b.img, b.rootfs); err != nil {
		return nil, err
	}
	return b, nil
}

// untar writes the regular files of a tarball under dir.
func untar(tarPath, dir string) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("%s: entry %q outside the archive", tarPath, h.Name)
		}
		target := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		out, err := os.Create(target)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, tr)
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
}

// extract writes the image's flattened filesystem under dir and returns
// what the layers say about each path.
func extract(img v1.Image, dir string) (map[string]entry, map[string]*tar.Header, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]entry{}
	hdrs := map[string]*tar.Header{}
	var dirModes []func() error
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		p := path.Clean("/" + h.Name)
		if p == "/" {
			continue
		}
		fi := h.FileInfo()
		files[p] = entry{typ: h.Typeflag, mode: fi.Mode() & (fs.ModePerm | fs.ModeSticky | fs.ModeSetuid | fs.ModeSetgid)}
		hdrs[p] = h
		target := filepath.Join(dir, filepath.FromSlash(p))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return nil, nil, err
			}
			mode := files[p].mode
			// After the files are in: a 0555 dir would refuse them.
			dirModes = append(dirModes, func() error { return os.Chmod(target, mode) })
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return nil, nil, err
			}
			f, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
			if err != nil {
				return nil, nil, err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Chmod(target, files[p].mode)
			}
			if err != nil {
				return nil, nil, err
			}
		}
	}
	for _, f := range dirModes {
		if err := f(); err != nil {
			return nil, nil, err
		}
	}
	return files, hdrs, nil
}

// TestImageLayout: every path of the image, its type and mode, all root-owned.
func TestImageLayout(t *testing.T) {
	b := img(t)
	for p, want := range wantLayout {
		got, ok := b.files[p]
		if !ok {
			t.Errorf("%s: missing from the image", p)
			continue
		}
		if got != want {
			t.Errorf("%s: type %q mode %v, want type %q mode %v", p, got.typ, got.mode, want.typ, want.mode)
		}
	}
	for p, h := range b.hdrs {
		if _, ok := wantLayout[p]; !ok {
			t.Errorf("%s: in the image but not in the expected layout", p)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: owned by %d:%d, want 0:0", p, h.Uid, h.Gid)
		}
	}
	// Nothing writable by others but /tmp: the unprivileged mounter (65532)
	// must be unable to change anything else.
	for p, e := range b.files {
		if e.mode&0o002 != 0 && p != "/tmp" {
			t.Errorf("%s: world-writable (%v)", p, e.mode)
		}
	}
}

// TestImageBinariesStatic: the image has no loader or libc, so every
// executable must be a static x86-64 ELF; the Go ones built with CGO_ENABLED=0.
func TestImageBinariesStatic(t *testing.T) {
	b := img(t)
	for _, p := range []string{"/usr/local/bin/gcsfuse-csi", "/usr/local/bin/gcsfuse", "/sbin/tini"} {
		host := filepath.Join(b.rootfs, p)
		f, err := elf.Open(host)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
			t.Errorf("%s: %s %s %s, want ELFCLASS64 EM_X86_64 ET_EXEC", p, f.Class, f.Machine, f.Type)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: dynamically linked (PT_INTERP)", p)
			}
		}
		f.Close()
		if p == "/sbin/tini" {
			continue
		}
		bi, err := buildinfo.ReadFile(host)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		for _, want := range []string{"CGO_ENABLED=0", "-trimpath=true", "GOOS=linux", "GOARCH=amd64"} {
			k, v, _ := strings.Cut(want, "=")
			if !slices.ContainsFunc(bi.Settings, func(s debug.BuildSetting) bool { return s.Key == k && s.Value == v }) {
				t.Errorf("%s: built without %s", p, want)
			}
		}
	}
}

// TestImageConfig: entrypoint, command, environment, labels, platform, user, tags.
func TestImageConfig(t *testing.T) {
	b := img(t)
	c := b.cfg.Config
	if !slices.Equal(c.Entrypoint, wantEntrypoint) {
		t.Errorf("entrypoint %q, want %q", c.Entrypoint, wantEntrypoint)
	}
	if !slices.Equal(c.Cmd, wantCmd) {
		t.Errorf("cmd %q, want %q", c.Cmd, wantCmd)
	}
	if c.User != "" {
		t.Errorf("user %q: the node driver runs as root (the pod spec sets runAsUser for the mounter)", c.User)
	}
	if b.cfg.OS != "linux" || b.cfg.Architecture != "amd64" {
		t.Errorf("platform %s/%s, want linux/amd64", b.cfg.OS, b.cfg.Architecture)
	}
	var pathEnv string
	for _, e := range c.Env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			pathEnv = v
		}
	}
	if !slices.Contains(strings.Split(pathEnv, ":"), "/usr/local/bin") {
		t.Errorf("PATH=%q: the driver looks gcsfuse up in PATH, want /usr/local/bin in it", pathEnv)
	}
	wantLabelValues := map[string]string{
		"org.opencontainers.image.title":    "gcsfuse-csi",
		"org.opencontainers.image.source":   "https://github.com/gcsfuse-csi/gcsfuse-csi",
		"org.opencontainers.image.version":  b.version,
		"org.opencontainers.image.revision": b.commit,
	}
	for k, v := range wantLabelValues {
		if c.Labels[k] != v {
			t.Errorf("label %s=%q, want %q", k, c.Labels[k], v)
		}
	}
	if len(c.Labels) != len(wantLabels) {
		t.Errorf("labels %v, want only %v", c.Labels, wantLabels)
	}
	if got := b.cfg.Created.Unix(); got != 1700000000 {
		t.Errorf("created %d, want the -created time 1700000000", got)
	}

	// The tags, as `ctr images import` reads them from manifest.json.
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(b.tar) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 {
		t.Fatalf("%d images in the tarball, want 1", len(m))
	}
	wantTags := []string{repo + ":" + b.version, repo + ":sha-" + b.short}
	if got := m[0].RepoTags; !slices.Equal(got, wantTags) {
		t.Errorf("tags %q, want %q", got, wantTags)
	}
	// The OCI index, which containerd imports: one entry per tag, named with
	// the annotation containerd reads, all pointing at this manifest.
	digest, err := b.img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	var index v1.IndexManifest
	if err := json.Unmarshal(readTarFile(t, b.tar, "index.json"), &index); err != nil {
		t.Fatal(err)
	}
	// Every blob is what its name says.
	blobs, err := os.ReadDir(filepath.Join(b.layout, "blobs/sha256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range blobs {
		f, err := os.Open(filepath.Join(b.layout, "blobs/sha256", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := v1.SHA256(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if h.Hex != e.Name() {
			t.Errorf("blobs/sha256/%s has digest %s", e.Name(), h)
		}
	}
	// `docker load` reads manifest.json: the same config and layers.
	tag, err := name.NewTag(wantTags[0])
	if err != nil {
		t.Fatal(err)
	}
	dockerImg, err := tarball.ImageFromPath(b.tar, &tag)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := b.img.ConfigName()
	if dockerID, err := dockerImg.ConfigName(); err != nil || dockerID != id {
		t.Errorf("manifest.json: config %s (%v), index.json: %s", dockerID, err, id)
	}
	var names []string
	for _, d := range index.Manifests {
		names = append(names, d.Annotations["io.containerd.image.name"])
		if d.Digest != digest {
			t.Errorf("index.json: %s points at %s, want the manifest %s", d.Annotations["io.containerd.image.name"], d.Digest, digest)
		}
		if d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" {
			t.Errorf("index.json: %s has platform %v, want linux/amd64", d.Annotations["io.containerd.image.name"], d.Platform)
		}
	}
	if !slices.Equal(names, wantTags) {
		t.Errorf("index.json names %q, want %q", names, wantTags)
	}
	if layout := string(readTarFile(t, b.tar, "oci-layout")); !strings.Contains(layout, `"imageLayoutVersion":"1.0.0"`) {
		t.Errorf("oci-layout: %s", layout)
	}
	if mt, _ := b.img.MediaType(); mt != types.OCIManifestSchema1 {
		t.Errorf("manifest media type %s, want %s", mt, types.OCIManifestSchema1)
	}

	layers, err := b.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var size int64
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		size += s
	}
	t.Logf("%s: %d layers, %.1f MB compressed, digest %s", wantTags[0], len(layers), float64(size)/1e6, digest)
}

// readTarFile returns one file of the image tarball.
func readTarFile(t *testing.T, tarPath, name string) []byte {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("%s in %s: %v", name, tarPath, err)
		}
		if path.Clean(h.Name) == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return data
		}
	}
}

// TestImageRuntimeFiles: the users, the resolver config, the CA bundle.
func TestImageRuntimeFiles(t *testing.T) {
	b := img(t)
	read := func(p string) string {
		data, err := os.ReadFile(filepath.Join(b.rootfs, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	for file, want := range map[string][]string{
		"/etc/passwd": {`(?m)^root:x:0:0:`, `(?m)^nonroot:x:65532:65532:`},
		"/etc/group":  {`(?m)^root:x:0:`, `(?m)^nonroot:x:65532:`},
		// Go's resolver: /etc/hosts (kubelet-managed) first, then DNS.
		"/etc/nsswitch.conf": {`(?m)^hosts:\s+files dns\s*$`},
	} {
		text := read(file)
		for _, re := range want {
			if !regexp.MustCompile(re).MatchString(text) {
				t.Errorf("%s: no line matching %s in:\n%s", file, re, text)
			}
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(read("/etc/ssl/certs/ca-certificates.crt"))) {
		t.Fatal("ca-certificates.crt: no certificates")
	}
	// The roots GCS certificates chain to must be there.
	if n := strings.Count(read("/etc/ssl/certs/ca-certificates.crt"), "BEGIN CERTIFICATE"); n < 50 {
		t.Errorf("ca-certificates.crt: %d certificates, want Debian's bundle", n)
	}
}

// TestImageBinariesRun: the extracted binaries run (on the host, from the
// temp dir) and report the versions they were built with.
func TestImageBinariesRun(t *testing.T) {
	b := img(t)
	bin := func(p string) string { return filepath.Join(b.rootfs, p) }
	out, err := run(b.rootfs, nil, bin("/usr/local/bin/gcsfuse-csi"), "version")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(out); got != b.version || got == "" || got == "dev" {
		t.Errorf("gcsfuse-csi version: %q, want the label's %q (set by ldflags)", got, b.version)
	}
	if _, err := run(b.rootfs, nil, bin("/usr/local/bin/gcsfuse-csi"), "node", "--help"); err != nil {
		t.Error(err)
	}
	want, err := pinnedGcsfuse(b.root)
	if err != nil {
		t.Fatal(err)
	}
	if want != "3.13.0" {
		t.Logf("go.mod pins gcsfuse %s", want)
	}
	out, err = run(b.rootfs, nil, bin("/usr/local/bin/gcsfuse"), "--version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "gcsfuse version "+want+" ") {
		t.Errorf("gcsfuse --version: %q, want version %s", out, want)
	}
	out, err = run(b.rootfs, nil, bin("/sbin/tini"), "--version")
	if err != nil || !strings.HasPrefix(out, "tini version ") {
		t.Errorf("tini --version: %q %v", out, err)
	}
}

// pinnedGcsfuse is the gcsfuse version go.mod requires, without the v.
func pinnedGcsfuse(root string) (string, error) {
	data, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", err
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/googlecloudplatform/gcsfuse/v3 v(\S+)`).FindStringSubmatch(string(data))
	if m == nil {
		return "", errors.New("go.mod does not require github.com/googlecloudplatform/gcsfuse/v3")
	}
	return m[1], nil
}

// TestImageRunsAsContainer runs the image's entrypoint the way a runtime
// would: chrooted into the extracted filesystem (so a missing file or a
// dynamic binary fails), in a new PID namespace with tini as PID 1. The
// driver serves CSI, answers GetPluginInfo, and stops with status 0 when
// tini forwards it SIGTERM, as root and as nonroot (65532), writing only
// under /tmp.
func TestImageRunsAsContainer(t *testing.T) {
	b := img(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root (chroot, PID namespace)")
	}
	version := containerCmd(b, 0, "version")
	out, err := version.Output()
	if err != nil {
		t.Fatalf("entrypoint version: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != b.version {
		t.Errorf("entrypoint version: %q, want %q", got, b.version)
	}
	for _, uid := range []uint32{0, 65532} {
		t.Run(fmt.Sprintf("uid=%d", uid), func(t *testing.T) {
			sockDir := fmt.Sprintf("/tmp/csi-%d", uid)
			cmd := containerCmd(b, uid, "node", "--endpoint=unix://"+sockDir+"/csi.sock",
				fmt.Sprintf("--state-dir=/tmp/state-%d", uid), "--node-id=test-node")
			var logs bytes.Buffer
			cmd.Stdout, cmd.Stderr = &logs, &logs
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// done closes when the container has exited, with its status in waitErr.
			done := make(chan struct{})
			var waitErr error
			go func() { waitErr = cmd.Wait(); close(done) }()
			t.Cleanup(func() {
				select {
				case <-done:
				default:
					cmd.Process.Kill() // tini, PID 1: the kernel kills the whole namespace
					<-done
				}
			})

			sock := filepath.Join(b.rootfs, sockDir, "csi.sock")
			deadline := time.Now().Add(20 * time.Second)
			for {
				if _, err := os.Stat(sock); err == nil {
					break
				}
				select {
				case <-done:
					t.Fatalf("driver exited before serving: %v\n%s", waitErr, logs.String())
				default:
				}
				if time.Now().After(deadline) {
					t.Fatalf("no socket %s after 20s\n%s", sock, logs.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			if uid != 0 {
				fi, err := os.Stat(sock)
				if err != nil {
					t.Fatal(err)
				}
				if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid {
					t.Errorf("socket owned by %d, want %d", st.Uid, uid)
				}
			}
			conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
			cancel()
			conn.Close()
			if err != nil {
				t.Fatalf("GetPluginInfo: %v\n%s", err, logs.String())
			}
			if info.VendorVersion != b.version {
				t.Errorf("GetPluginInfo version %q, want %q", info.VendorVersion, b.version)
			}

			// SIGTERM to tini (PID 1 of the namespace), as `kubectl delete pod` does.
			if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
				t.Fatal(err)
			}
			select {
			case <-done:
				if waitErr != nil {
					t.Errorf("after SIGTERM: %v, want exit status 0\n%s", waitErr, logs.String())
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("still running 20s after SIGTERM: tini did not forward it\n%s", logs.String())
			}
		})
	}
	// Nothing but /tmp changed: the image works on a read-only root filesystem.
	files, err := walk(b.rootfs)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range files {
		if _, ok := wantLayout[p]; !ok && !strings.HasPrefix(p, "/tmp/") {
			t.Errorf("%s: created outside /tmp", p)
		}
	}
}

// containerCmd runs the image's entrypoint with args as its command.
func containerCmd(b *built, uid uint32, args ...string) *exec.Cmd {
	argv := append(slices.Clone(b.cfg.Config.Entrypoint), args...)
	cmd := &exec.Cmd{Path: argv[0], Args: argv, Env: b.cfg.Config.Env, Dir: "/"}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Chroot:     b.rootfs,
		Cloneflags: syscall.CLONE_NEWPID,
		Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}},
		Pdeathsig:  syscall.SIGKILL,
	}
	return cmd
}

func walk(root string) ([]string, error) {
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			out = append(out, "/"+filepath.ToSlash(strings.TrimPrefix(p, root+"/")))
		}
		return nil
	})
	return out, err
}

// TestImageReproducible: the same inputs give the same tarball, byte for byte.
func TestImageReproducible(t *testing.T) {
	b := img(t)
	again := filepath.Join(t.TempDir(), "again.tar")
	if _, err := run(b.root, nil, b.imgbld, append(b.inputs, "-o", again)...); err != nil {
		t.Fatal(err)
	}
	sum := func(p string) v1.Hash {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		h, _, err := v1.SHA256(f)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	if s1, s2 := sum(b.tar), sum(again); s1 != s2 {
		t.Errorf("two builds from the same inputs: tarballs %s and %s", s1, s2)
	}
}

// TestImageBuilderRejectsDynamicBinary: a cgo binary would not start on
// the scratch image; the builder refuses it.
func TestImageBuilderRejectsDynamicBinary(t *testing.T) {
	b := img(t)
	dyn := "/bin/sh" // any dynamically linked executable of the host
	if f, err := elf.Open(dyn); err != nil || !slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		t.Skipf("%s is not a dynamic ELF executable here", dyn)
	}
	args := slices.Clone(b.inputs)
	args[slices.Index(args, "-driver")+1] = dyn
	out, err := run(b.root, nil, b.imgbld, append(args, "-o", filepath.Join(t.TempDir(), "x.tar"))...)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("imgbuild -driver %s: %v %s, want a 'dynamically linked' error", dyn, err, out)
	}
}

// dockerfile is the Dockerfile's instructions, split by stage.
type instruction struct {
	cmd  string // upper case: FROM, COPY, ...
	args string
}

func parseDockerfile(t *testing.T, root string) [][]instruction {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages [][]instruction
	var cur strings.Builder
	flush := func() {
		line := strings.TrimSpace(cur.String())
		cur.Reset()
		if line == "" {
			return
		}
		cmd, args, _ := strings.Cut(line, " ")
		in := instruction{cmd: strings.ToUpper(cmd), args: strings.TrimSpace(args)}
		if in.cmd == "FROM" || len(stages) == 0 {
			stages = append(stages, nil)
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		// Comment lines go, even inside a continued instruction.
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		if l, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), `\`); ok {
			cur.WriteString(l + " ")
			continue
		}
		cur.WriteString(line)
		flush()
	}
	flush()
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// copyArgs splits COPY arguments: flags, sources, destination.
func copyArgs(t *testing.T, args string) (flags, srcs []string, dst string) {
	t.Helper()
	var words []string
	for len(args) > 0 && strings.HasPrefix(args, "--") {
		flag, rest, _ := strings.Cut(args, " ")
		flags = append(flags, flag)
		args = strings.TrimSpace(rest)
	}
	if strings.HasPrefix(args, "[") {
		if err := json.Unmarshal([]byte(args), &words); err != nil {
			t.Fatalf("COPY %s: %v", args, err)
		}
	} else {
		words = strings.Fields(args)
	}
	if len(words) < 2 {
		t.Fatalf("COPY %s: want sources and a destination", args)
	}
	return flags, words[:len(words)-1], words[len(words)-1]
}

// TestDockerfileMatchesImage: the documented build (Dockerfile) and the
// offline one (hack/imgbuild) must give the same image: the final stage
// copies exactly the paths the tarball has, with the same entrypoint, cmd,
// PATH and label keys.
func TestDockerfileMatchesImage(t *testing.T) {
	b := img(t)
	stages := parseDockerfile(t, b.root)
	final := stages[len(stages)-1]
	if from := strings.Fields(final[0].args); len(from) == 0 || from[0] != "scratch" {
		t.Fatalf("final stage FROM %s: want scratch, so that the COPYs below are all it has", final[0].args)
	}
	var dests []string
	var labels []string
	for _, in := range final {
		switch in.cmd {
		case "COPY", "ADD":
			flags, srcs, dst := copyArgs(t, in.args)
			if !slices.Contains(flags, "--parents") {
				dests = append(dests, path.Clean(dst))
				continue
			}
			// --parents: what follows the ./ in the source lands under dst.
			for _, src := range srcs {
				_, rel, ok := strings.Cut(src, "/./")
				if !ok {
					t.Errorf("COPY %s: --parents without a ./ in %s", in.args, src)
				}
				dests = append(dests, path.Join(dst, rel))
			}
		case "ENTRYPOINT", "CMD":
			var got []string
			if err := json.Unmarshal([]byte(in.args), &got); err != nil {
				t.Errorf("%s %s: want the exec (JSON) form: %v", in.cmd, in.args, err)
			}
			want := b.cfg.Config.Entrypoint
			if in.cmd == "CMD" {
				want = b.cfg.Config.Cmd
			}
			if !slices.Equal(got, want) {
				t.Errorf("Dockerfile %s %q, tarball %q", in.cmd, got, want)
			}
		case "ENV":
			k, v, _ := strings.Cut(in.args, "=")
			if !slices.Contains(b.cfg.Config.Env, k+"="+v) {
				t.Errorf("Dockerfile ENV %s=%s, tarball env %q", k, v, b.cfg.Config.Env)
			}
		case "LABEL":
			for _, m := range regexp.MustCompile(`([\w.-]+)="([^"]*)"`).FindAllStringSubmatch(in.args, -1) {
				labels = append(labels, m[1])
				if !strings.Contains(m[2], "$") && b.cfg.Config.Labels[m[1]] != m[2] {
					t.Errorf("Dockerfile LABEL %s=%q, tarball %q", m[1], m[2], b.cfg.Config.Labels[m[1]])
				}
			}
		case "USER":
			t.Errorf("Dockerfile USER %s: the tarball has none (root)", in.args)
		case "RUN":
			t.Errorf("RUN %s in the final stage: scratch has no shell", in.args)
		}
	}

	// The tarball's leaves: files, and directories with nothing under them.
	var leaves []string
	for p := range b.files {
		parent := false
		for q := range b.files {
			if strings.HasPrefix(q, p+"/") {
				parent = true
				break
			}
		}
		if !parent {
			leaves = append(leaves, p)
		}
	}
	sort.Strings(dests)
	sort.Strings(leaves)
	if !slices.Equal(dests, leaves) {
		t.Errorf("Dockerfile final stage copies\n  %q\nthe make images tarball has\n  %q", dests, leaves)
	}
	sort.Strings(labels)
	want := slices.Sorted(slices.Values(wantLabels))
	if !slices.Equal(labels, want) {
		t.Errorf("Dockerfile labels %q, want %q", labels, want)
	}
}

// TestDockerignoreLetsBuildInputsThrough: .dockerignore is an allow-list;
// every file the driver's build reads (the Go files of every package of this
// module it imports, go.mod, go.sum) must be copied by the Dockerfile and get
// through, as must everything else the Dockerfile copies from the context;
// bin/, .git and tests must not.
func TestDockerignoreLetsBuildInputsThrough(t *testing.T) {
	root, err := repoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			rules = append(rules, l)
		}
	}
	// The same GOOS and cgo setting as the Docker build: the same files.
	out, err := run(root, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"}, "go", "list", "-deps",
		"-f", `{{if and .Module .Module.Main}}{{$d := .Dir}}{{range .GoFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{range .EmbedFiles}}{{$d}}/{{.}}{{"\n"}}{{end}}{{end}}`,
		"./cmd/gcsfuse-csi")
	if err != nil {
		t.Fatal(err)
	}
	goFiles := []string{"go.mod", "go.sum"}
	for _, p := range strings.Fields(out) {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		goFiles = append(goFiles, filepath.ToSlash(rel))
	}
	need := slices.Clone(goFiles)
	var copied []string // what the Dockerfile copies from the context
	for _, stage := range parseDockerfile(t, root) {
		for _, in := range stage {
			if in.cmd != "COPY" {
				continue
			}
			flags, srcs, _ := copyArgs(t, in.args)
			if slices.ContainsFunc(flags, func(f string) bool { return strings.HasPrefix(f, "--from=") }) {
				continue
			}
			for _, src := range srcs {
				if _, err := os.Stat(filepath.Join(root, src)); err != nil {
					t.Errorf("Dockerfile COPY %s: %v", src, err)
				}
				need = append(need, path.Clean(src))
				copied = append(copied, path.Clean(src))
			}
		}
	}
	// The build stage copies every Go file of the driver (a new top-level
	// package directory needs a COPY line).
	for _, f := range goFiles {
		if !slices.ContainsFunc(copied, func(c string) bool { return f == c || strings.HasPrefix(f, c+"/") }) {
			t.Errorf("the Dockerfile copies %q from the context; the driver's build also reads %s", copied, f)
		}
	}
	// The rootfs stage needs every file under build/rootfs.
	files, err := walk(filepath.Join(root, "build/rootfs"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		need = append(need, "build/rootfs"+f)
	}
	for _, p := range need {
		if !dockerignoreAllows(rules, p) {
			t.Errorf(".dockerignore keeps %s out of the build context; the image build needs it", p)
		}
	}
	for _, p := range []string{"bin/gcsfuse-csi", ".git/HEAD", "test/e2e/e2e_test.go", "pkg/driver/node_test.go"} {
		if dockerignoreAllows(rules, p) {
			t.Errorf(".dockerignore lets %s into the build context", p)
		}
	}
}

// dockerignoreAllows applies .dockerignore rules the way Docker does: the
// last rule matching the path or one of its parents decides.
func dockerignoreAllows(rules []string, p string) bool {
	allowed := true
	for _, r := range rules {
		exclude := true
		if rest, ok := strings.CutPrefix(r, "!"); ok {
			r, exclude = rest, false
		}
		r = strings.TrimSuffix(path.Clean(r), "/")
		for q := p; q != "." && q != "/"; q = path.Dir(q) {
			if globMatch(r, q) {
				allowed = !exclude
				break
			}
		}
	}
	return allowed
}

func globMatch(pattern, p string) bool {
	if rest, ok := strings.CutPrefix(pattern, "**/"); ok {
		parts := strings.Split(p, "/")
		for i := range parts {
			if ok, _ := path.Match(rest, strings.Join(parts[i:], "/")); ok {
				return true
			}
		}
		return false
	}
	ok, _ := path.Match(pattern, p)
	return ok
}
