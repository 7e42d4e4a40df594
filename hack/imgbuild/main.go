// Command imgbuild builds the node driver image as an image tarball, without
// a Docker engine or a registry: `make images` runs it, and
// `ctr -n k8s.io images import` (or `docker load`) accepts what it writes.
//
// The tarball is an OCI image layout that also has Docker's manifest.json
// (internal/ociimage writes it), so the digest printed here is the one
// `ctr images ls` shows.
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
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/internal/ociimage"
	"github.com/google/go-containerregistry/pkg/name"
)

// Image metadata shared with the Dockerfile (test/images compares them).
var (
	entrypoint = []string{"/sbin/tini", "--", "/usr/local/bin/gcsfuse-csi"}
	cmd        = []string{"node"}
	env        = []string{"PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
)

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

	layers := []ociimage.Layer{
		{
			CreatedBy: "COPY runtime files: passwd, group, nsswitch.conf, CA bundle, /tmp, tini",
			Files: []ociimage.File{
				{Path: "/etc/passwd", Mode: 0o644, Src: filepath.Join(o.rootfs, "etc/passwd")},
				{Path: "/etc/group", Mode: 0o644, Src: filepath.Join(o.rootfs, "etc/group")},
				{Path: "/etc/nsswitch.conf", Mode: 0o644, Src: filepath.Join(o.rootfs, "etc/nsswitch.conf")},
				{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Src: o.caCerts},
				// World-writable and sticky, like any /tmp: the unprivileged
				// mounter (uid 65532, read-only root filesystem) writes only here.
				{Path: "/tmp", Mode: 0o1777, Dir: true},
				{Path: "/sbin/tini", Mode: 0o755, Src: o.tini},
			},
		},
		// gcsfuse changes less often than the driver: its own layer, below.
		{CreatedBy: "COPY gcsfuse /usr/local/bin/gcsfuse", Files: []ociimage.File{{Path: "/usr/local/bin/gcsfuse", Mode: 0o755, Src: o.gcsfuse}}},
		{CreatedBy: "COPY gcsfuse-csi /usr/local/bin/gcsfuse-csi", Files: []ociimage.File{{Path: "/usr/local/bin/gcsfuse-csi", Mode: 0o755, Src: o.driver}}},
	}

	img, err := ociimage.Build(ociimage.Config{
		Entrypoint: entrypoint,
		Cmd:        cmd,
		Env:        env,
		Labels: map[string]string{
			"org.opencontainers.image.title":    "gcsfuse-csi",
			"org.opencontainers.image.source":   o.source,
			"org.opencontainers.image.version":  o.version,
			"org.opencontainers.image.revision": o.commit,
		},
		Created: o.created,
		Comment: "hack/imgbuild",
	}, layers)
	if err != nil {
		return err
	}
	if err := ociimage.Write(o.out, img, parsed...); err != nil {
		return fmt.Errorf("write %s: %w", o.out, err)
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
