// Command imgtool writes a single-layer linux/amd64 image from a root
// filesystem directory (no base image, no registry, no Docker) as an image
// tarball that `ctr images import` reads: the format of hack/imgbuild, both
// written by internal/ociimage. Files are root-owned with their modes, and
// timestamps are the Unix epoch, so the same rootfs gives the same image.
//
//	imgtool -rootfs DIR -ref NAME:TAG [-entrypoint /a,b] [-cmd /c,d] -o out.tar
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"strings"

	"github.com/gcsfuse-csi/gcsfuse-csi/internal/ociimage"
	"github.com/google/go-containerregistry/pkg/name"
)

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func main() {
	rootfs := flag.String("rootfs", "", "root filesystem directory")
	ref := flag.String("ref", "", "image reference, NAME:TAG")
	entrypoint := flag.String("entrypoint", "", "comma-separated entrypoint")
	cmd := flag.String("cmd", "", "comma-separated cmd")
	out := flag.String("o", "", "output tarball")
	flag.Parse()
	if *rootfs == "" || *ref == "" || *out == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	log.SetFlags(0)
	log.SetPrefix("imgtool: ")
	if i := strings.LastIndex(*ref, ":"); i < 0 || strings.Contains((*ref)[i:], "/") {
		log.Fatalf("-ref=%q has no tag", *ref)
	}
	tag, err := name.NewTag(*ref)
	if err != nil {
		log.Fatalf("-ref: %v", err)
	}
	files, err := ociimage.DirFiles(*rootfs)
	if err != nil {
		log.Fatal(err)
	}
	img, err := ociimage.Build(ociimage.Config{
		Entrypoint: split(*entrypoint),
		Cmd:        split(*cmd),
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Comment:    "test/k8s/imgtool",
	}, []ociimage.Layer{{CreatedBy: "imgtool -rootfs", Files: files}})
	if err != nil {
		log.Fatal(err)
	}
	if err := ociimage.Write(*out, img, tag); err != nil {
		log.Fatalf("write %s: %v", *out, err)
	}
	digest, err := img.Digest()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s (%s, %d files)\n", *out, ociimage.RefName(tag), digest, len(files))
}
