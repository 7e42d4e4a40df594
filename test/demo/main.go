// Command demo mounts a sample bucket through the gcsfuse-csi driver on this
// machine, with no cloud account: a fake GCS server on 127.0.0.1 holds the
// bucket, the driver binary serves CSI on a unix socket, and the demo calls
// NodeStageVolume and NodePublishVolume on it the way kubelet does for a pod.
// It shows the mounted files, waits for Ctrl-C while you browse the mount
// from another shell, then unpublishes, unstages and checks that nothing is
// left mounted.
//
//	make demo                      # builds bin/, then go run ./test/demo
//	go run ./test/demo -once       # mount, show, clean up, exit
//	go run ./test/demo -dir /tmp/d # keep the socket, state and log in /tmp/d
//
// It needs root (mount(2) and /dev/fuse) and `make build` (bin/gcsfuse-csi,
// bin/gcsfuse; GCSFUSE_CSI_BIN and GCSFUSE_BIN override them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

const (
	bucket   = "demo-bucket"
	showFile = "README.md"
)

// objects is the sample bucket. The directories exist only as object-name
// prefixes, as in most real buckets; the volume mounts with implicit-dirs.
var objects = []fakestorage.Object{
	harness.Object(bucket, "README.md", "Hello from gcsfuse-csi!\n"+
		"This file is an object in gs://"+bucket+", served by a fake GCS on 127.0.0.1.\n"+
		"gcsfuse mounted the bucket (NodeStageVolume) and the driver bind-mounted it\n"+
		"here (NodePublishVolume), just as it would for a pod's volume.\n"),
	harness.Object(bucket, "notes/todo.txt", "- browse this mount from another shell\n- write a file: it becomes an object\n"),
	harness.Object(bucket, "notes/ideas.txt", "mount a bucket/dir volume: only that directory shows\n"),
	harness.Object(bucket, "notes/archive/2024.txt", "an older note, two levels down\n"),
}

type config struct {
	once bool   // clean up right after showing the mount
	dir  string // where everything goes; "" is a new temp dir, removed at the end
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.once, "once", false, "mount, show the files, clean up and exit without waiting for Ctrl-C")
	flag.StringVar(&cfg.dir, "dir", "", "directory for the socket, driver state, log and mount points (default: a new temp dir, removed at the end)")
	flag.Parse()
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	if err := run(cfg, os.Stdout, sigs); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

// run does the whole demo, writing what it does to out. Unless cfg.once, it
// waits for a signal on sigs before cleaning up. Cleanup runs on every path.
func run(cfg config, out io.Writer, sigs <-chan os.Signal) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("the demo mounts a FUSE filesystem, which needs root: run it as root (e.g. sudo make demo)")
	}
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		return fmt.Errorf("the demo needs /dev/fuse (modprobe fuse, or run the container with --device /dev/fuse): %w", err)
	} else {
		f.Close()
	}
	driverBin, err := harness.Binary("gcsfuse-csi", "GCSFUSE_CSI_BIN")
	if err != nil {
		return err
	}
	gcsfuseBin, err := harness.Binary("gcsfuse", "GCSFUSE_BIN")
	if err != nil {
		return err
	}

	// Everything started is undone in reverse order, errors collected.
	var undo []func() error
	defer func() {
		for i := len(undo) - 1; i >= 0; i-- {
			err = errors.Join(err, undo[i]())
		}
	}()

	dir, removeDir, err := workDir(cfg.dir)
	if err != nil {
		return err
	}
	logPath := filepath.Join(dir, "driver.log")
	undo = append(undo, func() error {
		// Last: only an unmounted directory is ever removed.
		mounts, err := harness.FUSEMounts(dir + "/")
		if err != nil || len(mounts) != 0 {
			return fmt.Errorf("still mounted under %s: %+v %v (left in place; the driver log is %s)", dir, mounts, err, logPath)
		}
		fmt.Fprintln(out, "  check      nothing left mounted")
		if removeDir {
			return os.RemoveAll(dir)
		}
		return nil
	})

	fmt.Fprintln(out, "gcsfuse-csi demo")
	gcs, err := harness.StartFakeGCS(objects)
	if err != nil {
		return fmt.Errorf("start fake GCS: %w", err)
	}
	undo = append(undo, func() error { gcs.Stop(); fmt.Fprintln(out, "  fake GCS   stopped"); return nil })
	fmt.Fprintf(out, "  fake GCS   gs://%s (%d objects) at %s\n", bucket, len(objects), gcs.Endpoint)

	drv, err := harness.StartDriver(driverBin, filepath.Join(dir, "csi.sock"), logPath,
		"--gcsfuse="+gcsfuseBin, "--gcs-endpoint="+gcs.Endpoint, "--anonymous", "--atomic-rename=false",
		"--state-dir="+filepath.Join(dir, "state"), "--kubelet-dir="+dir, "--node-id=demo-node")
	if err != nil {
		return err
	}
	undo = append(undo, func() error {
		var errs []error
		if pids, zombies, err := harness.Children(drv.Pid(), "gcsfuse"); err != nil || len(pids) != 0 || zombies != 0 {
			errs = append(errs, fmt.Errorf("gcsfuse processes left: %v (%d zombies) %v", pids, zombies, err))
		}
		if err := drv.Stop(); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(out, "  driver     pid %d stopped\n", drv.Pid())
		}
		return errors.Join(errs...)
	})
	fmt.Fprintf(out, "  driver     pid %d serving CSI on unix://%s\n", drv.Pid(), filepath.Join(dir, "csi.sock"))

	// What kubelet sends for a PersistentVolume with volumeHandle demo-bucket
	// and mountOptions [implicit-dirs], used by a pod.
	const volumeID = bucket
	staging, target := filepath.Join(dir, "staging"), filepath.Join(dir, "mnt")
	capability := harness.MountCapability(harness.RWX, "", "implicit-dirs")
	undo = append(undo, func() error {
		fmt.Fprintln(out, "\ncleaning up")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := drv.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target}); err != nil {
			return fmt.Errorf("NodeUnpublishVolume: %w (driver log: %s)", err, logPath)
		}
		fmt.Fprintln(out, "  unpublish  NodeUnpublishVolume ok")
		if _, err := drv.Node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: staging}); err != nil {
			return fmt.Errorf("NodeUnstageVolume: %w (driver log: %s)", err, logPath)
		}
		fmt.Fprintln(out, "  unstage    NodeUnstageVolume ok")
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := os.MkdirAll(staging, 0o755); err != nil { // kubelet creates the staging dir
		return err
	}
	if _, err := drv.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, VolumeCapability: capability,
	}); err != nil {
		return fmt.Errorf("NodeStageVolume: %w (driver log: %s)", err, logPath)
	}
	pids, _, _ := harness.Children(drv.Pid(), "gcsfuse")
	fmt.Fprintf(out, "  stage      NodeStageVolume   -> %s (gcsfuse pid %s)\n", staging, joinInts(pids))
	if _, err := drv.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: staging, TargetPath: target, VolumeCapability: capability,
	}); err != nil {
		return fmt.Errorf("NodePublishVolume: %w (driver log: %s)", err, logPath)
	}
	fmt.Fprintf(out, "  publish    NodePublishVolume -> %s\n", target)

	fmt.Fprintf(out, "\n$ ls -lR %s\n", target)
	if err := listTree(out, target); err != nil {
		return err
	}
	content, err := os.ReadFile(filepath.Join(target, showFile))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n$ cat %s\n%s", filepath.Join(target, showFile), content)

	fmt.Fprintf(out, "\nThe bucket is mounted at:\n\n    %s\n\n", target)
	if cfg.once {
		fmt.Fprintln(out, "(-once: cleaning up right away)")
		return nil
	}
	fmt.Fprintln(out, "Browse it from another shell (ls, cat; a file you write becomes an object in the fake bucket).")
	fmt.Fprintln(out, "Press Ctrl-C to unmount and clean up.")
	<-sigs
	go func() { // a second Ctrl-C must not cut the cleanup short
		for range sigs {
			fmt.Fprintln(out, "  (still cleaning up; please wait)")
		}
	}()
	return nil
}

// workDir returns the demo's directory, made traversable (0755) so that
// other users can browse the mount too, and whether to remove it at the end.
func workDir(dir string) (string, bool, error) {
	remove := false
	if dir == "" {
		d, err := os.MkdirTemp("", "gcsfuse-csi-demo-")
		if err != nil {
			return "", false, err
		}
		dir, remove = d, true
	} else {
		d, err := filepath.Abs(dir)
		if err != nil {
			return "", false, err
		}
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", false, err
		}
		dir = d
	}
	return dir, remove, os.Chmod(dir, 0o755)
}

// listTree prints dir like `ls -lR`: each directory's entries, then its
// subdirectories in turn.
func listTree(out io.Writer, dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s:\n", dir)
	var subdirs []string
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			return err
		}
		owner, group := "?", "?"
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			owner, group = userName(st.Uid), groupName(st.Gid)
		}
		fmt.Fprintf(out, "%s %-6s %-6s %6d %s %s\n", fi.Mode(), owner, group, fi.Size(), fi.ModTime().Format("Jan _2 15:04"), e.Name())
		if e.IsDir() {
			subdirs = append(subdirs, filepath.Join(dir, e.Name()))
		}
	}
	for _, sub := range subdirs {
		fmt.Fprintln(out)
		if err := listTree(out, sub); err != nil {
			return err
		}
	}
	return nil
}

func userName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return id
}

func groupName(gid uint32) string {
	id := strconv.FormatUint(uint64(gid), 10)
	if g, err := user.LookupGroupId(id); err == nil {
		return g.Name
	}
	return id
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}
