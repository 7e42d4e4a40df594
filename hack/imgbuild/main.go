// Command imgbuild builds the node driver image as an image tarball, without
// a Docker engine or a registry: `make images` runs it, and
// `ctr -n k8s.io images import` (or `docker load`) accepts what it writes.
//
// The tarball is an OCI image layout (oci-layout, index.json, blobs/) that
// also has Docker's manifest.json, as `docker save` writes since Docker 25.
// containerd imports the OCI index and keeps the manifest as it is, so the
// digest printed here is the one `ctr images ls` shows; with only a Docker
// manifest.json it would write a manifest of its own, with another digest.
//
// The image has the runtime layout of the Dockerfile's final stage, built
// from the same inputs: static gcsfuse-csi and gcsfuse binaries, Debian's
// tini-static and CA bundle, and build/rootfs/etc. test/images checks that
// the Dockerfile and this program list the same paths.
//
//	imgbuild -driver bin/linux-amd64/gcsfuse-csi -gcsfuse bin/linux-amd64/gcsfuse \
//	  -version v0.1.0 -commit $(git rev-parse HEAD) -short-commit $(git rev-parse --short HEAD) \
//	  -o bin/images/gcsfuse-csi.tar
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Image metadata shared with the Dockerfile (test/images compares them).
var (
	entrypoint = []string{"/sbin/tini", "--", "/usr/local/bin/gcsfuse-csi"}
	cmd        = []string{"node"}
	env        = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
)

// file is one path of the image. Parent directories are added as 0755
// root:root, as a Dockerfile COPY creates them.
type file struct {
	path string // absolute path in the image
	mode int64  // permission bits (and sticky bit)
	dir  bool   // an empty directory; otherwise a regular file read from src
	src  string // host path of a regular file
}

// layer is one image layer and the history line `docker history` shows.
type layer struct {
	createdBy string
	files     []file
}

type options struct {
	driver, gcsfuse, tini, caCerts, rootfs string
	repo, version, commit, shortCommit     string
	source, out                            string
	created                                time.Time
}

func main() {
	o := options{}
	flag.StringVar(&o.driver, "driver", "", "static gcsfuse-csi binary (linux/amd64)")
	flag.StringVar(&o.gcsfuse, "gcsfuse", "", "static gcsfuse binary (linux/amd64)")
	flag.StringVar(&o.tini, "tini", "/usr/bin/tini-static", "static tini (Debian package tini)")
	flag.StringVar(&o.caCerts, "ca-certs", "/etc/ssl/certs/ca-certificates.crt", "CA bundle (Debian package ca-certificates)")
	flag.StringVar(&o.rootfs, "rootfs", "build/rootfs", "directory with etc/passwd, etc/group and etc/nsswitch.conf")
	flag.StringVar(&o.repo, "repo", "ghcr.io/gcsfuse-csi/gcsfuse-csi", "image repository")
	flag.StringVar(&o.version, "version", "", "driver version: the image tag and the version label")
	flag.StringVar(&o.commit, "commit", "", "full git commit: the revision label")
	flag.StringVar(&o.shortCommit, "short-commit", "", "abbreviated commit for the sha-<short> tag (default: 7 characters of -commit)")
	flag.StringVar(&o.source, "source", "https://github.com/gcsfuse-csi/gcsfuse-csi", "source label")
	flag.StringVar(&o.out, "o", "", "output tarball")
	epoch := flag.String("created", os.Getenv("SOURCE_DATE_EPOCH"), "image and file timestamps, Unix seconds (default $SOURCE_DATE_EPOCH, else 0): the same inputs give the same digest")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	if *epoch != "" {
		sec, err := strconv.ParseInt(*epoch, 10, 64)
		if err != nil {
			fail(fmt.Errorf("-created=%q: %w", *epoch, err))
		}
		o.created = time.Unix(sec, 0).UTC()
	} else {
		o.created = time.Unix(0, 0).UTC()
	}
	if err := run(o); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "imgbuild: %v\n", err)
	os.Exit(1)
}

var commitRE = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

func run(o options) error {
	for flagName, v := range map[string]string{"-driver": o.driver, "-gcsfuse": o.gcsfuse, "-version": o.version, "-commit": o.commit, "-o": o.out} {
		if v == "" {
			return fmt.Errorf("%s is required", flagName)
		}
	}
	if !commitRE.MatchString(o.commit) {
		return fmt.Errorf("-commit=%q: want a hex git commit", o.commit)
	}
	if o.shortCommit == "" {
		o.shortCommit = o.commit[:7]
	}
	if !strings.HasPrefix(o.commit, o.shortCommit) || len(o.shortCommit) < 7 {
		return fmt.Errorf("-short-commit=%q: want an abbreviation of -commit=%q", o.shortCommit, o.commit)
	}
	tags := []string{o.repo + ":" + o.version, o.repo + ":sha-" + o.shortCommit}
	var parsed []name.Tag
	for _, t := range tags {
		tag, err := name.NewTag(t, name.StrictValidation)
		if err != nil {
			return fmt.Errorf("image tag %q: %w", t, err)
		}
		parsed = append(parsed, tag)
	}

	// Refuse inputs that would not run on a scratch base: dynamic binaries
	// need a loader and libraries the image does not have.
	for _, bin := range []string{o.driver, o.gcsfuse} {
		if err := checkStaticGo(bin); err != nil {
			return err
		}
	}
	if err := checkStaticELF(o.tini); err != nil {
		return fmt.Errorf("%w (apt-get install tini)", err)
	}
	if b, err := os.ReadFile(o.caCerts); err != nil {
		return fmt.Errorf("%w (apt-get install ca-certificates)", err)
	} else if !bytes.Contains(b, []byte("-----BEGIN CERTIFICATE-----")) {
		return fmt.Errorf("%s: no PEM certificates in it", o.caCerts)
	}

	layers := []layer{
		{
			createdBy: "COPY runtime files: passwd, group, nsswitch.conf, CA bundle, /tmp, tini",
			files: []file{
				{path: "/etc/passwd", mode: 0o644, src: filepath.Join(o.rootfs, "etc/passwd")},
				{path: "/etc/group", mode: 0o644, src: filepath.Join(o.rootfs, "etc/group")},
				{path: "/etc/nsswitch.conf", mode: 0o644, src: filepath.Join(o.rootfs, "etc/nsswitch.conf")},
				{path: "/etc/ssl/certs/ca-certificates.crt", mode: 0o644, src: o.caCerts},
				// World-writable and sticky, like any /tmp: the unprivileged
				// mounter (uid 65532, read-only root filesystem) writes only here.
				{path: "/tmp", mode: 0o1777, dir: true},
				{path: "/sbin/tini", mode: 0o755, src: o.tini},
			},
		},
		// gcsfuse changes less often than the driver: its own layer, below.
		{createdBy: "COPY gcsfuse /usr/local/bin/gcsfuse", files: []file{{path: "/usr/local/bin/gcsfuse", mode: 0o755, src: o.gcsfuse}}},
		{createdBy: "COPY gcsfuse-csi /usr/local/bin/gcsfuse-csi", files: []file{{path: "/usr/local/bin/gcsfuse-csi", mode: 0o755, src: o.driver}}},
	}

	img, err := build(o, layers)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	// Write next to the target and rename: an interrupted build never leaves
	// a truncated tarball behind for `ctr images import`.
	tmp := o.out + ".tmp"
	if err := writeArchive(tmp, img, parsed, o.created); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", o.out, err)
	}
	if err := os.Rename(tmp, o.out); err != nil {
		return err
	}

	digest, err := img.Digest()
	if err != nil {
		return err
	}
	id, err := img.ConfigName()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	var compressed int64
	for _, l := range m.Layers {
		compressed += l.Size
	}
	fi, err := os.Stat(o.out)
	if err != nil {
		return err
	}
	for _, t := range tags {
		fmt.Printf("image   %s\n", t)
	}
	fmt.Printf("digest  %s (manifest)\n", digest)
	fmt.Printf("id      %s (config: the image ID crictl and docker show)\n", id)
	fmt.Printf("size    %.1f MB compressed, %d layers\n", float64(compressed)/1e6, len(m.Layers))
	fmt.Printf("tarball %s (%.1f MB): ctr -n k8s.io images import %s\n", o.out, float64(fi.Size())/1e6, o.out)
	return nil
}

// build assembles the image: layers on an empty base, then the config.
func build(o options, layers []layer) (v1.Image, error) {
	cf, err := empty.Image.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: o.created}
	cf.Config = v1.Config{
		Entrypoint: entrypoint,
		Cmd:        cmd,
		Env:        env,
		Labels: map[string]string{
			"org.opencontainers.image.title":    "gcsfuse-csi",
			"org.opencontainers.image.source":   o.source,
			"org.opencontainers.image.version":  o.version,
			"org.opencontainers.image.revision": o.commit,
		},
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	for _, l := range layers {
		data, err := layerTar(l.files, o.created)
		if err != nil {
			return nil, err
		}
		// Compressed once here; LayerFromOpener sees gzip and keeps it as is.
		gz, err := gzipBytes(data)
		if err != nil {
			return nil, err
		}
		tl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(gz)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			return nil, err
		}
		adds = append(adds, mutate.Addendum{
			Layer:   tl,
			History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: l.createdBy, Comment: "hack/imgbuild"},
		})
	}
	return mutate.Append(img, adds...)
}

// layerTar returns an uncompressed layer: the files, their parent
// directories first, root-owned, with the given timestamp.
func layerTar(files []file, mtime time.Time) ([]byte, error) {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.path); d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	for _, f := range files {
		if f.dir {
			delete(dirs, f.path) // listed with its own mode
		}
	}
	type entry struct {
		hdr *tar.Header
		src string
	}
	var entries []entry
	for d := range dirs {
		entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755}})
	}
	for _, f := range files {
		if f.dir {
			entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(f.path, "/") + "/", Mode: f.mode}})
			continue
		}
		fi, err := os.Stat(f.src)
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file", f.src)
		}
		entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.path, "/"), Mode: f.mode, Size: fi.Size()}, src: f.src})
	}
	// Sorted by name, so a parent always precedes its children and the
	// same inputs give byte-identical layers.
	sort.Slice(entries, func(i, j int) bool { return entries[i].hdr.Name < entries[j].hdr.Name })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		e.hdr.ModTime = mtime
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(e.hdr); err != nil {
			return nil, err
		}
		if e.src == "" {
			continue
		}
		f, err := os.Open(e.src)
		if err != nil {
			return nil, err
		}
		n, err := io.Copy(tw, f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.src, err)
		}
		if n != e.hdr.Size {
			return nil, fmt.Errorf("%s changed while it was read", e.src)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeArchive writes img as an OCI image layout tarball with one index
// entry per tag (named with the annotations containerd reads), plus Docker's
// manifest.json for `docker load` and go-containerregistry's tarball package.
func writeArchive(out string, img v1.Image, tags []name.Tag, mtime time.Time) error {
	rawManifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	rawConfig, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	blob := func(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

	index := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	docker := tarball.Manifest{{Config: blob(m.Config.Digest)}}
	for _, tag := range tags {
		index.Manifests = append(index.Manifests, v1.Descriptor{
			MediaType: mt,
			Size:      int64(len(rawManifest)),
			Digest:    digest,
			Platform:  &v1.Platform{OS: "linux", Architecture: "amd64"},
			Annotations: map[string]string{
				"io.containerd.image.name":          tag.Name(), // the full reference
				"org.opencontainers.image.ref.name": tag.TagStr(),
			},
		})
		docker[0].RepoTags = append(docker[0].RepoTags, tag.Name())
	}
	for _, l := range m.Layers {
		docker[0].Layers = append(docker[0].Layers, blob(l.Digest))
	}
	rawIndex, err := json.Marshal(index)
	if err != nil {
		return err
	}
	rawDocker, err := json.Marshal(docker)
	if err != nil {
		return err
	}

	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	put := func(name string, size int64, r io.Reader) error {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: size, ModTime: mtime, Format: tar.FormatPAX}
		if r == nil {
			hdr = &tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime, Format: tar.FormatPAX}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if r != nil {
			if n, err := io.Copy(tw, r); err != nil {
				return err
			} else if n != size {
				return fmt.Errorf("%s: wrote %d bytes, want %d", name, n, size)
			}
		}
		return nil
	}
	putBytes := func(name string, b []byte) error { return put(name, int64(len(b)), bytes.NewReader(b)) }

	if err := putBytes("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := put("blobs/", 0, nil); err != nil {
		return err
	}
	if err := put("blobs/sha256/", 0, nil); err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		err = put(blob(d), size, rc)
		rc.Close()
		if err != nil {
			return err
		}
	}
	for _, b := range []struct {
		name string
		data []byte
	}{
		{blob(m.Config.Digest), rawConfig},
		{blob(digest), rawManifest},
		{"index.json", rawIndex},
		{"manifest.json", rawDocker},
	} {
		if err := putBytes(b.name, b.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

func gzipBytes(data []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	if err != nil {
		return nil, err
	}
	if _, err := zw.Write(data); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// checkStaticELF fails unless p is an x86-64 ELF executable without a
// program interpreter (PT_INTERP): it runs with no dynamic loader.
func checkStaticELF(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s: %s %s, want an x86-64 executable", p, f.Class, f.Machine)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return fmt.Errorf("%s: ELF type %s, want an executable", p, f.Type)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("%s: dynamically linked (has an ELF interpreter); build it with CGO_ENABLED=0", p)
		}
	}
	return nil
}

// checkStaticGo adds to checkStaticELF what the Go build info records.
func checkStaticGo(p string) error {
	if err := checkStaticELF(p); err != nil {
		return err
	}
	bi, err := buildinfo.ReadFile(p)
	if err != nil {
		return fmt.Errorf("%s: not a Go binary: %w", p, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	var errs []error
	for k, want := range map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "GOARCH": "amd64", "-trimpath": "true"} {
		if settings[k] != want {
			errs = append(errs, fmt.Errorf("%s=%q, want %q", k, settings[k], want))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: built with %w", p, err)
	}
	return nil
}
