// Command imgtool writes a single-layer container image as a docker-archive
// tarball (the `docker save` layout, which `ctr images import` reads) from a
// root filesystem directory: no base image, no registry, no Docker.
//
//	imgtool -rootfs DIR -ref NAME:TAG [-entrypoint /a,b] [-cmd /c,d] -o out.tar
package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// epoch keeps the layer (and so the image ID) reproducible.
var epoch = time.Unix(0, 0).UTC()

// layerTar archives root with every entry owned by 0:0.
func layerTar(root string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
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
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			h.Name += "/"
		}
		h.Uid, h.Gid, h.Uname, h.Gname = 0, 0, "", ""
		h.ModTime, h.AccessTime, h.ChangeTime = epoch, time.Time{}, time.Time{}
		h.Format = tar.FormatPAX
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func split(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func main() {
	rootfs := flag.String("rootfs", "", "root filesystem directory")
	ref := flag.String("ref", "", "image reference, NAME:TAG")
	entrypoint := flag.String("entrypoint", "", "comma-separated entrypoint")
	cmd := flag.String("cmd", "", "comma-separated cmd")
	out := flag.String("o", "", "output tarball")
	flag.Parse()
	if *rootfs == "" || *ref == "" || *out == "" {
		flag.Usage()
		os.Exit(2)
	}
	if i := strings.LastIndex(*ref, ":"); i < 0 || strings.Contains((*ref)[i:], "/") {
		log.Fatalf("ref %q has no tag", *ref)
	}

	layer, err := layerTar(*rootfs)
	if err != nil {
		log.Fatal(err)
	}
	diffID := "sha256:" + sum(layer)
	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			"Entrypoint": split(*entrypoint),
			"Cmd":        split(*cmd),
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{diffID}},
		"history": []map[string]any{{"created": epoch.Format(time.RFC3339), "created_by": "imgtool"}},
	}
	cfg, err := json.Marshal(config)
	if err != nil {
		log.Fatal(err)
	}
	cfgName := sum(cfg) + ".json"
	layerName := sum(layer) + "/layer.tar"
	manifest, err := json.Marshal([]map[string]any{{
		"Config": cfgName, "RepoTags": []string{*ref}, "Layers": []string{layerName},
	}})
	if err != nil {
		log.Fatal(err)
	}

	f, err := os.Create(*out + ".tmp")
	if err != nil {
		log.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, e := range []struct {
		name string
		data []byte
	}{{cfgName, cfg}, {layerName, layer}, {"manifest.json", manifest}} {
		if strings.Contains(e.name, "/") {
			dir := e.name[:strings.Index(e.name, "/")+1]
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
				log.Fatal(err)
			}
		}
		h := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}
		if err := tw.WriteHeader(h); err != nil {
			log.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			log.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		log.Fatal(err)
	}
	if err := f.Close(); err != nil {
		log.Fatal(err)
	}
	if err := os.Rename(*out+".tmp", *out); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s (layer %s, %d bytes)\n", *out, *ref, diffID, len(layer))
}
