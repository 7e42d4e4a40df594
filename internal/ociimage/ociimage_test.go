package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

var created = time.Unix(1700000000, 0).UTC()

// entry is what the tests check of one layer entry.
type entry struct {
	typ      byte
	mode     int64
	linkname string
	content  string
}

// makeRootfs writes a small root filesystem like test/k8s/build.sh's
// busybox one: a binary, symlinks to it, a sticky /tmp, an empty dir.
func makeRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "tmp", "www"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, data string, mode os.FileMode) {
		if err := os.WriteFile(filepath.Join(root, p), []byte(data), mode); err != nil {
			t.Fatal(err)
		}
		// Chmod: the umask applies to WriteFile and Mkdir.
		if err := os.Chmod(filepath.Join(root, p), mode); err != nil {
			t.Fatal(err)
		}
	}
	write("bin/busybox", "#!busybox\n", 0o755)
	write("bin/su", "setuid\n", 0o755|os.ModeSetuid)
	write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
	write("etc/secret", "", 0o600)
	for _, c := range []struct {
		p    string
		mode os.FileMode
	}{{"tmp", 0o777 | os.ModeSticky}, {"www", 0o700}} {
		if err := os.Chmod(filepath.Join(root, c.p), c.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("busybox", filepath.Join(root, "bin/sh")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "passwd")); err != nil {
		t.Fatal(err)
	}
	// Host timestamps and owners must not reach the image.
	old := time.Unix(123456789, 0)
	if err := os.Chtimes(filepath.Join(root, "etc/passwd"), old, old); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(filepath.Join(root, "etc/secret"), 1000, 2000); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// readLayer returns the entries of an uncompressed layer in order, and
// fails the test on a non-root owner or another mtime.
func readLayer(t *testing.T, l v1.Layer) ([]string, map[string]entry) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var names []string
	got := map[string]entry{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(created) {
			t.Errorf("%s: mtime %v, want %v", h.Name, h.ModTime, created)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		got[h.Name] = entry{typ: h.Typeflag, mode: h.Mode, linkname: h.Linkname, content: string(b)}
	}
	return names, got
}

func buildDir(t *testing.T, root, out string, tags ...name.Tag) v1.Image {
	t.Helper()
	files, err := DirFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	img, err := Build(Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"echo hi"},
		Env:        []string{"PATH=/bin"},
		Labels:     map[string]string{"org.opencontainers.image.title": "test"},
		Created:    created,
		Comment:    "ociimage test",
	}, []Layer{{CreatedBy: "rootfs", Files: files}})
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(out, img, tags...); err != nil {
		t.Fatal(err)
	}
	return img
}

func mustTag(t *testing.T, s string) name.Tag {
	t.Helper()
	tag, err := name.NewTag(s)
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func TestDirImageRoundTrip(t *testing.T) {
	root := makeRootfs(t)
	out := filepath.Join(t.TempDir(), "sub", "img.tar") // Write creates sub/
	tags := []name.Tag{mustTag(t, "e2e.local/busybox:1.35"), mustTag(t, "busybox:latest")}
	img := buildDir(t, root, out, tags...)
	wantDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("%s.tmp left behind: %v", out, err)
	}

	wantID, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	wantLayers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	wantLayer, err := wantLayers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}

	// Read back through Docker's manifest.json (go-containerregistry makes
	// a Docker manifest of its own from it, so compare the config and the
	// layer blob, not the manifest digest).
	for _, tag := range tags {
		got, err := tarball.ImageFromPath(out, &tag)
		if err != nil {
			t.Fatalf("tarball.ImageFromPath(%s): %v", tag, err)
		}
		if id, err := got.ConfigName(); err != nil || id != wantID {
			t.Errorf("%s: image ID %v (%v), want %v", tag, id, err, wantID)
		}
	}
	got, err := tarball.ImageFromPath(out, &tags[0])
	if err != nil {
		t.Fatal(err)
	}
	layers, err := got.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if d, err := layers[0].Digest(); err != nil || d != wantLayer {
		t.Errorf("layer digest %v (%v), want %v", d, err, wantLayer)
	}
	names, entries := readLayer(t, layers[0])
	want := map[string]entry{
		"bin/":        {typ: tar.TypeDir, mode: 0o755},
		"bin/busybox": {typ: tar.TypeReg, mode: 0o755, content: "#!busybox\n"},
		"bin/sh":      {typ: tar.TypeSymlink, mode: 0o777, linkname: "busybox"},
		"bin/su":      {typ: tar.TypeReg, mode: 0o4755, content: "setuid\n"},
		"etc/":        {typ: tar.TypeDir, mode: 0o755},
		"etc/passwd":  {typ: tar.TypeReg, mode: 0o644, content: "root:x:0:0:root:/root:/bin/sh\n"},
		"etc/secret":  {typ: tar.TypeReg, mode: 0o600},
		"passwd":      {typ: tar.TypeSymlink, mode: 0o777, linkname: "/etc/passwd"},
		"tmp/":        {typ: tar.TypeDir, mode: 0o1777},
		"www/":        {typ: tar.TypeDir, mode: 0o700},
	}
	if !reflect.DeepEqual(entries, want) {
		t.Errorf("layer entries:\n got %+v\nwant %+v", entries, want)
	}
	wantNames := []string{"bin/", "bin/busybox", "bin/sh", "bin/su", "etc/", "etc/passwd", "etc/secret", "passwd", "tmp/", "www/"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("layer order %q, want %q", names, wantNames)
	}

	cf, err := got.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || !cf.Created.Time.Equal(created) {
		t.Errorf("config os/arch/created %s/%s/%v, want linux/amd64/%v", cf.OS, cf.Architecture, cf.Created.Time, created)
	}
	wantCfg := v1.Config{
		Entrypoint: []string{"/bin/sh", "-c"},
		Cmd:        []string{"echo hi"},
		Env:        []string{"PATH=/bin"},
		Labels:     map[string]string{"org.opencontainers.image.title": "test"},
	}
	if !reflect.DeepEqual(cf.Config, wantCfg) {
		t.Errorf("config %+v, want %+v", cf.Config, wantCfg)
	}
	if len(cf.History) != 1 || cf.History[0].CreatedBy != "rootfs" || cf.History[0].Comment != "ociimage test" || !cf.History[0].Created.Time.Equal(created) {
		t.Errorf("history %+v", cf.History)
	}
	if d, err := layers[0].DiffID(); err != nil || len(cf.RootFS.DiffIDs) != 1 || cf.RootFS.DiffIDs[0] != d {
		t.Errorf("rootfs diff_ids %v, layer %v (%v)", cf.RootFS.DiffIDs, d, err)
	}

	// Docker's manifest.json: every tag, containerd's spelling of Docker Hub.
	m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(out) })
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 1 || !reflect.DeepEqual(m[0].RepoTags, []string{"e2e.local/busybox:1.35", "docker.io/library/busybox:latest"}) {
		t.Errorf("manifest.json %+v", m)
	}

	// The OCI layout, as containerd reads it: one entry per tag.
	dir := untar(t, out)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index.json has %d manifests, want 2", len(im.Manifests))
	}
	for i, want := range []struct{ name, ref string }{{"e2e.local/busybox:1.35", "1.35"}, {"docker.io/library/busybox:latest", "latest"}} {
		d := im.Manifests[i]
		if d.Digest != wantDigest || d.MediaType != types.OCIManifestSchema1 ||
			d.Platform == nil || d.Platform.OS != "linux" || d.Platform.Architecture != "amd64" ||
			d.Annotations["io.containerd.image.name"] != want.name || d.Annotations["org.opencontainers.image.ref.name"] != want.ref {
			t.Errorf("index.json manifests[%d] = %+v, want %s (%s) %s", i, d, want.name, want.ref, wantDigest)
		}
	}
	li, err := idx.Image(wantDigest)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := li.Digest(); err != nil || d != wantDigest {
		t.Errorf("layout image digest %v (%v), want %v", d, err, wantDigest)
	}
	if id, err := li.ConfigName(); err != nil || id != wantID {
		t.Errorf("layout image ID %v (%v), want %v", id, err, wantID)
	}
	lm, err := li.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if lm.MediaType != types.OCIManifestSchema1 || lm.Config.MediaType != types.OCIConfigJSON ||
		len(lm.Layers) != 1 || lm.Layers[0].MediaType != types.OCILayer || lm.Layers[0].Digest != wantLayer {
		t.Errorf("layout manifest %+v, want OCI media types and layer %v", lm, wantLayer)
	}
	if err := validateLayers(li); err != nil {
		t.Error(err)
	}

	// Every archive entry has the image time too.
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(created) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("archive %s: mtime %v owner %d:%d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
	}
}

// validateLayers reads every layer blob of img and checks its digest.
func validateLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		want, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		h, _, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if h != want {
			return errors.New("layer " + want.String() + " has digest " + h.String())
		}
	}
	return nil
}

// untar extracts the regular files and directories of a tarball.
func untar(t *testing.T, p string) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return dir
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			var b []byte
			if b, err = io.ReadAll(tr); err == nil {
				err = os.WriteFile(target, b, 0o644)
			}
		default:
			t.Fatalf("%s: unexpected type %c", h.Name, h.Typeflag)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// A file list as hack/imgbuild gives it: parents are added as 0755, a
// listed directory keeps its mode, one layer per list in order.
func TestFileListLayers(t *testing.T) {
	src := filepath.Join(t.TempDir(), "tool")
	if err := os.WriteFile(src, []byte("tool"), 0o600); err != nil {
		t.Fatal(err)
	}
	img, err := Build(Config{Created: created}, []Layer{
		{CreatedBy: "one", Files: []File{
			{Path: "/usr/local/bin/tool", Mode: 0o755, Src: src},
			{Path: "/tmp", Mode: 0o1777, Dir: true},
			{Path: "/usr/share", Mode: 0o700, Dir: true},
		}},
		{CreatedBy: "two", Files: []File{{Path: "/etc/tool.conf", Mode: 0o644, Src: src}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 2 {
		t.Fatalf("%d layers, want 2", len(layers))
	}
	names, entries := readLayer(t, layers[0])
	want := map[string]entry{
		"tmp/":               {typ: tar.TypeDir, mode: 0o1777},
		"usr/":               {typ: tar.TypeDir, mode: 0o755},
		"usr/local/":         {typ: tar.TypeDir, mode: 0o755},
		"usr/local/bin/":     {typ: tar.TypeDir, mode: 0o755},
		"usr/local/bin/tool": {typ: tar.TypeReg, mode: 0o755, content: "tool"},
		"usr/share/":         {typ: tar.TypeDir, mode: 0o700},
	}
	if !reflect.DeepEqual(entries, want) {
		t.Errorf("layer 1:\n got %+v\nwant %+v", entries, want)
	}
	if want := []string{"tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/tool", "usr/share/"}; !reflect.DeepEqual(names, want) {
		t.Errorf("layer 1 order %q, want %q", names, want)
	}
	names, _ = readLayer(t, layers[1])
	if want := []string{"etc/", "etc/tool.conf"}; !reflect.DeepEqual(names, want) {
		t.Errorf("layer 2 %q, want %q", names, want)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if len(cf.History) != 2 || cf.History[0].CreatedBy != "one" || cf.History[1].CreatedBy != "two" {
		t.Errorf("history %+v", cf.History)
	}
	if cf.Config.Entrypoint != nil || cf.Config.Labels != nil {
		t.Errorf("config %+v, want no entrypoint or labels", cf.Config)
	}
}

// The zero Created is the Unix epoch, not year 1.
func TestZeroCreatedIsEpoch(t *testing.T) {
	img, err := Build(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Time.Equal(time.Unix(0, 0)) {
		t.Errorf("created %v, want the Unix epoch", cf.Created.Time)
	}
}

// The same rootfs gives the same bytes, whatever the host timestamps.
func TestReproducible(t *testing.T) {
	root := makeRootfs(t)
	tmp := t.TempDir()
	tag := mustTag(t, "registry.k8s.io/pause:3.10.1")
	a, b := filepath.Join(tmp, "a.tar"), filepath.Join(tmp, "b.tar")
	buildDir(t, root, a, tag)
	now := time.Now()
	for _, p := range []string{".", "bin", "bin/busybox", "etc/passwd", "tmp"} {
		if err := os.Chtimes(filepath.Join(root, p), now, now); err != nil {
			t.Fatal(err)
		}
	}
	buildDir(t, root, b, tag)
	ba, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ba, bb) {
		t.Errorf("two writes of the same rootfs differ (%d and %d bytes)", len(ba), len(bb))
	}
	// And the content is in it: changing a file changes the tarball.
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	buildDir(t, root, b, tag)
	if bc, err := os.ReadFile(b); err != nil || bytes.Equal(ba, bc) {
		t.Errorf("changed rootfs, same tarball (%v)", err)
	}
}

func TestInvalidInputs(t *testing.T) {
	src := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(src, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		files []File
		want  string
	}{
		{"relative", []File{{Path: "etc/x", Mode: 0o644, Src: src}}, "clean absolute path"},
		{"unclean", []File{{Path: "/etc/../x", Mode: 0o644, Src: src}}, "clean absolute path"},
		{"root", []File{{Path: "/", Mode: 0o755, Dir: true}}, "clean absolute path"},
		{"mode", []File{{Path: "/x", Mode: 0o10644, Src: src}}, "07777"},
		{"kind", []File{{Path: "/x", Mode: 0o644}}, "exactly one"},
		{"two kinds", []File{{Path: "/x", Mode: 0o644, Dir: true, Src: src}}, "exactly one"},
		{"duplicate", []File{{Path: "/x", Mode: 0o644, Src: src}, {Path: "/x", Mode: 0o755, Dir: true}}, "listed twice"},
		{"parent", []File{{Path: "/bin", Mode: 0o777, Link: "usr/bin"}, {Path: "/bin/sh", Mode: 0o755, Src: src}}, "not a directory"},
		{"missing", []File{{Path: "/x", Mode: 0o644, Src: src + ".missing"}}, "no such file"},
		{"not regular", []File{{Path: "/x", Mode: 0o644, Src: filepath.Dir(src)}}, "not a regular file"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Build(Config{}, []Layer{{Files: c.files}})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Build: %v, want an error with %q", err, c.want)
			}
		})
	}

	root := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := DirFiles(root); err == nil || !strings.Contains(err.Error(), "unsupported file type") {
		t.Errorf("DirFiles with a FIFO: %v, want an unsupported file type error", err)
	}

	img, err := Build(Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(t.TempDir(), "x.tar"), img); err == nil {
		t.Error("Write without a tag succeeded")
	}
}

// RefName spells references as containerd and kubelet do.
func TestRefName(t *testing.T) {
	for in, want := range map[string]string{
		"busybox:1.35":                 "docker.io/library/busybox:1.35",
		"docker.io/foo/bar:v1":         "docker.io/foo/bar:v1",
		"ghcr.io/gcsfuse-csi/x:sha-1":  "ghcr.io/gcsfuse-csi/x:sha-1",
		"registry.k8s.io/pause:3.10.1": "registry.k8s.io/pause:3.10.1",
		"localhost:5000/a/b:c":         "localhost:5000/a/b:c",
	} {
		if got := RefName(mustTag(t, in)); got != want {
			t.Errorf("RefName(%s) = %s, want %s", in, got, want)
		}
	}
}
