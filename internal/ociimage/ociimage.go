// Package ociimage builds linux/amd64 container images from host files and
// writes them as image tarballs, without a Docker engine or a registry:
// `ctr images import` and `docker load` accept what it writes. hack/imgbuild
// (the driver image) and test/k8s/imgtool (the e2e pause and busybox images)
// use it.
//
// The tarball is an OCI image layout (oci-layout, index.json, blobs/) that
// also has Docker's manifest.json, as `docker save` writes since Docker 25.
// containerd imports the OCI index and keeps the manifest as it is, so
// [v1.Image.Digest] is the digest `ctr images ls` shows; with only a Docker
// manifest.json it would write a manifest of its own, with another digest.
//
// Output is reproducible: every entry is root-owned and has the image's
// creation time, entries are sorted, and the same inputs give the same bytes.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one path of a layer: a directory, a symbolic link or a regular
// file. Parent directories not listed are added as 0755, as a Dockerfile
// COPY creates them. Every entry is owned by root:root.
type File struct {
	Path string // absolute path in the image
	Mode int64  // permission bits, with setuid, setgid and sticky (0o7777)
	Dir  bool   // a directory
	Link string // a symbolic link with this target
	Src  string // otherwise a regular file, read from this host path
}

// Layer is one image layer and the history line `docker history` shows.
type Layer struct {
	CreatedBy string
	Files     []File
}

// Config is the image configuration.
type Config struct {
	Entrypoint, Cmd, Env []string
	Labels               map[string]string
	// Created is the image's creation time and every file's modification
	// time, in whole seconds; the zero Time means the Unix epoch.
	Created time.Time
	// Comment is the history comment of every layer, such as the tool that
	// built it.
	Comment string
}

// DirFiles lists the tree under root (not root itself) as image files
// with their modes: directories, symbolic links and regular files, which
// are read when the layer is built. Other file types are an error; hard
// links become separate copies.
func DirFiles(root string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		f := File{Path: "/" + filepath.ToSlash(rel), Mode: mode(fi.Mode())}
		switch fi.Mode().Type() {
		case fs.ModeDir:
			f.Dir = true
		case fs.ModeSymlink:
			if f.Link, err = os.Readlink(p); err != nil {
				return err
			}
		case 0:
			f.Src = p
		default:
			return fmt.Errorf("%s: unsupported file type %s", p, fi.Mode().Type())
		}
		files = append(files, f)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return files, nil
}

// mode returns the tar mode bits of m.
func mode(m fs.FileMode) int64 {
	bits := int64(m.Perm())
	for flag, b := range map[fs.FileMode]int64{fs.ModeSetuid: 0o4000, fs.ModeSetgid: 0o2000, fs.ModeSticky: 0o1000} {
		if m&flag != 0 {
			bits |= b
		}
	}
	return bits
}

// Build assembles a linux/amd64 image: the layers on an empty base, then
// the config. Layers are gzip-compressed with OCI media types.
func Build(c Config, layers []Layer) (v1.Image, error) {
	created := c.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC().Truncate(time.Second)
	cf, err := empty.Image.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, Labels: c.Labels}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.ConfigFile(base, cf)
	if err != nil {
		return nil, err
	}
	var adds []mutate.Addendum
	for _, l := range layers {
		data, err := layerTar(l.Files, created)
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
			History: v1.History{Created: v1.Time{Time: created}, CreatedBy: l.CreatedBy, Comment: c.Comment},
		})
	}
	return mutate.Append(img, adds...)
}

// layerTar returns an uncompressed layer: the files, their parent
// directories first, root-owned, with the given timestamp.
func layerTar(files []File, mtime time.Time) ([]byte, error) {
	listed := map[string]File{}
	for _, f := range files {
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			return nil, fmt.Errorf("%q: want a clean absolute path other than /", f.Path)
		}
		if f.Mode&^0o7777 != 0 {
			return nil, fmt.Errorf("%s: mode %#o has bits other than 07777", f.Path, f.Mode)
		}
		if f.Dir && (f.Link != "" || f.Src != "") || f.Link != "" && f.Src != "" || !f.Dir && f.Link == "" && f.Src == "" {
			return nil, fmt.Errorf("%s: want exactly one of a directory, a link target or a source file", f.Path)
		}
		if _, dup := listed[f.Path]; dup {
			return nil, fmt.Errorf("%s: listed twice", f.Path)
		}
		listed[f.Path] = f
	}
	dirs := map[string]bool{}
	for _, f := range files {
		for d := path.Dir(f.Path); d != "/"; d = path.Dir(d) {
			if p, ok := listed[d]; ok && !p.Dir {
				return nil, fmt.Errorf("%s: parent %s is not a directory", f.Path, d)
			}
			dirs[d] = true
		}
	}
	for _, f := range files {
		if f.Dir {
			delete(dirs, f.Path) // listed with its own mode
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
		name := strings.TrimPrefix(f.Path, "/")
		switch {
		case f.Dir:
			entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: f.Mode}})
			continue
		case f.Link != "":
			entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: f.Link, Mode: f.Mode}})
			continue
		}
		fi, err := os.Stat(f.Src)
		if err != nil {
			return nil, err
		}
		if !fi.Mode().IsRegular() {
			return nil, fmt.Errorf("%s: not a regular file", f.Src)
		}
		entries = append(entries, entry{hdr: &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: f.Mode, Size: fi.Size()}, src: f.Src})
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

// RefName is the image name Write records for tag: the full reference, as
// containerd names images (Docker Hub as docker.io, not index.docker.io).
func RefName(tag name.Tag) string {
	if tag.RegistryStr() == name.DefaultRegistry {
		return "docker.io/" + tag.RepositoryStr() + ":" + tag.TagStr()
	}
	return tag.Name()
}

// Write writes img to the tarball out, creating its directory: an OCI
// image layout with one index entry per tag (named with the annotations
// containerd reads), plus Docker's manifest.json for `docker load` and
// go-containerregistry's tarball package. Every tar entry has the image's
// creation time. It writes out.tmp and renames it, so an interrupted write
// never leaves a truncated tarball at out.
func Write(out string, img v1.Image, tags ...name.Tag) error {
	if len(tags) == 0 {
		return errors.New("no image tag")
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	if err := writeArchive(tmp, img, tags); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, out)
}

func writeArchive(out string, img v1.Image, tags []name.Tag) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	mtime := cf.Created.Time
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
			Platform:  &v1.Platform{OS: cf.OS, Architecture: cf.Architecture},
			Annotations: map[string]string{
				"io.containerd.image.name":          RefName(tag),
				"org.opencontainers.image.ref.name": tag.TagStr(),
			},
		})
		docker[0].RepoTags = append(docker[0].RepoTags, RefName(tag))
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
