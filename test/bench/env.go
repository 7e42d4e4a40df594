package main

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// Names in the fake GCS.
const (
	readBucket   = "bench-read"
	stagedBucket = "bench-staged"
	objectName   = "large.bin"
)

// Env is a running fake GCS and driver, with the object to read uploaded.
// It remembers everything that may be mounted so Close can undo it.
type Env struct {
	cfg      Config
	progress io.Writer

	Dir     string       // work dir: driver state, socket, logs, kubelet-like paths
	GCS     *FakeGCSProc // fake-gcs-server, a process of its own
	Driver  *harness.Driver
	GCSFuse string // bin/gcsfuse
	Data    []byte // the object's content

	// directArgs are the gcsfuse flags the driver ran its gcsfuse with
	// (captured from /proc), --temp-dir moved to a bench directory, plus
	// -o allow_other; directEnv is that process's environment.
	directArgs []string
	directEnv  []string
	// defaultArgs are directArgs without the driver's tuning: gcsfuse's own
	// defaults, with the same endpoint, identity and paths.
	defaultArgs []string
	// bigRequests: max_pages_limit allows 4 MiB FUSE requests, so the
	// 4 MiB-request candidate runs (Run raises it around the read trials).
	bigRequests bool

	// What may be mounted right now (added before the call that may mount,
	// removed after the call that unmounts succeeds).
	staged    map[string]string // staging path -> volume id
	published map[string]string // target path -> volume id
	binds     map[string]bool   // bind mounts the bench made itself
	direct    *GCSFuse          // a gcsfuse the bench runs itself
	seq       int               // makes bucket and path names unique
}

func (e *Env) logf(format string, args ...any) {
	if e.progress != nil {
		fmt.Fprintf(e.progress, "bench: "+format+"\n", args...)
	}
}

// Setup starts the fake GCS (with the object to read) and the driver, and
// runs one untimed stage+publish to warm the driver up and to capture the
// exact gcsfuse command line it uses, for the direct-mount baseline.
func Setup(ctx context.Context, cfg Config, progress io.Writer) (_ *Env, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("needs root: the driver mounts FUSE and bind mounts for real")
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode()&os.ModeDevice == 0 {
		return nil, fmt.Errorf("needs /dev/fuse: %v", err)
	}
	driverBin, err := harness.Binary("gcsfuse-csi", "GCSFUSE_CSI_BIN")
	if err != nil {
		return nil, err
	}
	gcsfuseBin, err := harness.Binary("gcsfuse", "GCSFUSE_BIN")
	if err != nil {
		return nil, err
	}
	// Short: the driver's unix socket lives here (paths are limited to
	// ~107 bytes).
	dir, err := os.MkdirTemp("", "bench")
	if err != nil {
		return nil, err
	}
	e := &Env{cfg: cfg, progress: progress, Dir: dir, GCSFuse: gcsfuseBin,
		staged: map[string]string{}, published: map[string]string{}, binds: map[string]bool{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.Close())
		}
	}()

	fakeBin, err := buildFakeGCS(ctx, dir)
	if err != nil {
		return e, err
	}
	e.logf("work dir %s; fake-gcs-server in its own process; uploading %d MiB of random bytes", dir, cfg.ObjectMiB)
	if e.GCS, err = StartFakeGCSProc(fakeBin, filepath.Join(dir, "fake-gcs-server.log")); err != nil {
		return e, fmt.Errorf("start fake GCS: %w", err)
	}
	e.Data = make([]byte, cfg.ObjectMiB<<20)
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return e, err
	}
	if _, err := rand.NewChaCha8(seed).Read(e.Data); err != nil {
		return e, err
	}
	for _, b := range []string{readBucket, stagedBucket} {
		if err := e.GCS.CreateBucket(b); err != nil {
			return e, err
		}
	}
	if err := e.GCS.Upload(readBucket, objectName, e.Data); err != nil {
		return e, err
	}
	if err := e.GCS.Upload(stagedBucket, "hello.txt", []byte("hello")); err != nil {
		return e, err
	}

	e.Driver, err = harness.StartDriver(driverBin, filepath.Join(dir, "csi.sock"), filepath.Join(dir, "driver.log"),
		"--gcsfuse="+gcsfuseBin, "--gcs-endpoint="+e.GCS.Endpoint, "--anonymous", "--atomic-rename=false",
		"--state-dir="+filepath.Join(dir, "state"), "--kubelet-dir="+dir, "--node-id=bench", "-v="+strconv.Itoa(cfg.DriverV))
	if err != nil {
		return e, err
	}
	if err := ctx.Err(); err != nil {
		return e, err
	}
	return e, e.warmUp(ctx)
}

// warmUp stages and publishes the read volume once, untimed: the driver's
// first mount pays one-off costs (GCS client, systemd detection by
// mount-utils). It records the gcsfuse command line and environment the
// driver used, and checks the target serves the object.
func (e *Env) warmUp(ctx context.Context) error {
	stage, target := e.paths(e.name("warmup"))
	if err := e.stage(ctx, readBucket, stage); err != nil {
		return fmt.Errorf("warm-up stage: %w", err)
	}
	if err := e.publish(ctx, readBucket, stage, target); err != nil {
		return fmt.Errorf("warm-up publish: %w", err)
	}
	pids, _, err := harness.Children(e.Driver.Pid(), "gcsfuse")
	if err != nil || len(pids) != 1 {
		return fmt.Errorf("want exactly one gcsfuse child of the driver, found %v (%v)", pids, err)
	}
	argv, err := procStrings(pids[0], "cmdline")
	if err != nil {
		return err
	}
	if e.directEnv, err = procStrings(pids[0], "environ"); err != nil {
		return err
	}
	if e.directArgs, err = directFlags(argv, readBucket, filepath.Join(e.Dir, "direct-tmp")); err != nil {
		return err
	}
	e.defaultArgs = gcsfuseDefaults(e.directArgs)
	if err := os.MkdirAll(filepath.Join(e.Dir, "direct-tmp"), 0o700); err != nil {
		return err
	}
	if err := checkHead(filepath.Join(target, objectName), e.Data); err != nil {
		return fmt.Errorf("warm-up read: %w", err)
	}
	if err := e.unpublish(ctx, readBucket, target); err != nil {
		return err
	}
	return e.unstage(ctx, readBucket, stage)
}

// directFlags turns the driver's gcsfuse argv (flags, bucket, /dev/fd/3)
// into the flags for running gcsfuse on a plain directory: the same flags,
// --temp-dir moved to tmp, and -o allow_other (the driver's mount(2) sets
// allow_other itself).
func directFlags(argv []string, bucket, tmp string) ([]string, error) {
	if len(argv) < 3 {
		return nil, fmt.Errorf("unexpected gcsfuse command line %q", argv)
	}
	var flags, positional []string
	for _, a := range argv[1:] {
		switch {
		case strings.HasPrefix(a, "--temp-dir="):
			flags = append(flags, "--temp-dir="+tmp)
		case strings.HasPrefix(a, "--kernel-params-file="):
			// The driver's session file; run directly, gcsfuse applies
			// its kernel settings itself (it is root here).
		case strings.HasPrefix(a, "-"):
			flags = append(flags, a)
		default:
			positional = append(positional, a)
		}
	}
	if !slices.Equal(positional, []string{bucket, "/dev/fd/3"}) {
		return nil, fmt.Errorf("unexpected gcsfuse arguments %q (want flags in --name=value form, then %s /dev/fd/3)", argv, bucket)
	}
	return append(flags, "-o", "allow_other"), nil
}

// DirectCommand is the gcsfuse command line of the direct-mount baseline.
func (e *Env) DirectCommand() string {
	return "gcsfuse " + strings.Join(e.directArgs, " ") + " " + readBucket + " <dir>"
}

func procStrings(pid int, file string) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return nil, err
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), nil
}

// paths returns a kubelet-like staging path (created, as kubelet does) and
// target path (its parent created; the driver creates the target) for name.
func (e *Env) paths(name string) (stage, target string) {
	stage = filepath.Join(e.Dir, "kubelet", "plugins", name, "globalmount")
	target = filepath.Join(e.Dir, "kubelet", "pods", name, "volumes", "mount")
	_ = os.MkdirAll(stage, 0o750)
	_ = os.MkdirAll(filepath.Dir(target), 0o750)
	return stage, target
}

// name returns prefix-N, unique in this Env (a valid bucket name for a
// valid prefix).
func (e *Env) name(prefix string) string {
	e.seq++
	return fmt.Sprintf("%s-%03d", prefix, e.seq)
}

func capability() *csi.VolumeCapability {
	return harness.MountCapability(harness.RWX, "")
}

func (e *Env) stage(ctx context.Context, volumeID, path string) error {
	return e.stageWith(ctx, volumeID, path, nil)
}

func (e *Env) stageWith(ctx context.Context, volumeID, path string, attrs map[string]string) error {
	e.staged[path] = volumeID
	_, err := e.Driver.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: volumeID, StagingTargetPath: path, VolumeCapability: capability(), VolumeContext: attrs})
	return err
}

func (e *Env) unstage(ctx context.Context, volumeID, path string) error {
	if _, err := e.Driver.Node.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: path}); err != nil {
		return err
	}
	delete(e.staged, path)
	return nil
}

func (e *Env) publish(ctx context.Context, volumeID, stage, target string) error {
	return e.publishWith(ctx, volumeID, stage, target, nil)
}

func (e *Env) publishWith(ctx context.Context, volumeID, stage, target string, attrs map[string]string) error {
	e.published[target] = volumeID
	_, err := e.Driver.Node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: volumeID, StagingTargetPath: stage, TargetPath: target, VolumeCapability: capability(), VolumeContext: attrs})
	return err
}

func (e *Env) unpublish(ctx context.Context, volumeID, target string) error {
	if _, err := e.Driver.Node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target}); err != nil {
		return err
	}
	delete(e.published, target)
	return nil
}

// retryAborted repeats a CSI call that lost a race with an operation still
// running in the driver (an interrupted call goes on server-side).
func retryAborted(timeout time.Duration, call func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := call(ctx)
		if status.Code(err) != codes.Aborted || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close undoes everything, in order: the bench's own gcsfuse and bind
// mounts, the driver's publishes and stages (through CSI), the driver, any
// mount still left under the work dir (detached, reported as an error),
// the gcsfuse processes the driver left, and the fake GCS. The work dir is
// removed only when nothing is mounted under it. It never kills by name.
func (e *Env) Close() error {
	var errs []error
	if e.direct != nil {
		if err := e.direct.Stop(); err != nil {
			errs = append(errs, err)
		}
		e.direct = nil
	}
	for target := range e.binds {
		if err := unmountPath(target); err != nil {
			errs = append(errs, err)
		}
		delete(e.binds, target)
	}
	if e.Driver != nil {
		for target, vol := range e.published {
			if err := retryAborted(15*time.Second, func(ctx context.Context) error { return e.unpublish(ctx, vol, target) }); err != nil {
				errs = append(errs, fmt.Errorf("cleanup: unpublish %s: %w", target, err))
			}
		}
		for path, vol := range e.staged {
			if err := retryAborted(15*time.Second, func(ctx context.Context) error { return e.unstage(ctx, vol, path) }); err != nil {
				errs = append(errs, fmt.Errorf("cleanup: unstage %s: %w", path, err))
			}
		}
		if err := e.Driver.Stop(); err != nil {
			errs = append(errs, err)
		}
		e.Driver = nil
	}
	// The driver leaves mounts (and their gcsfuse) in place when it stops
	// or dies: find gcsfuse processes still serving this work dir (their
	// --temp-dir is under it), then unmount what is left.
	orphans := gcsfuseServing(e.Dir)
	leaked, err := harness.DetachAll(e.Dir)
	if err != nil {
		errs = append(errs, err)
	}
	if len(leaked) > 0 {
		errs = append(errs, fmt.Errorf("cleanup: %d mount(s) were still there and were detached: %+v", len(leaked), leaked))
	}
	if err := waitGone(orphans, 10*time.Second); err != nil {
		errs = append(errs, err)
	}
	if e.GCS != nil {
		if err := e.GCS.Stop(); err != nil {
			errs = append(errs, err)
		}
		e.GCS = nil
	}
	if e.Dir != "" {
		if left, err := harness.FUSEMounts(e.Dir + "/"); err != nil || len(left) > 0 {
			errs = append(errs, fmt.Errorf("cleanup: not removing %s: still mounted under it: %v %v", e.Dir, left, err))
		} else if e.cfg.KeepDir || len(errs) > 0 {
			e.logf("kept work dir %s (driver.log, gcsfuse-direct.log)", e.Dir)
		} else if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waitGone waits for processes that are not the bench's children to exit
// (the driver's gcsfuse exits once its mount is gone), then SIGTERMs those
// still there by PID, if they still are gcsfuse.
func waitGone(pids []int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(pids) > 0 {
		pids = slices.DeleteFunc(pids, func(pid int) bool { return !isGCSFuse(pid) })
		if len(pids) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	if len(pids) > 0 {
		return fmt.Errorf("cleanup: gcsfuse %v did not exit after its mount was gone; sent SIGTERM", pids)
	}
	return nil
}

// gcsfuseServing lists gcsfuse processes with an argument under dir (the
// driver's and the bench's own have their --temp-dir there).
func gcsfuseServing(dir string) []int {
	if dir == "" {
		return nil
	}
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, ent := range entries {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil || !isGCSFuse(pid) {
			continue
		}
		argv, _ := procStrings(pid, "cmdline")
		if slices.ContainsFunc(argv, func(a string) bool { return strings.Contains(a, dir+"/") }) {
			out = append(out, pid)
		}
	}
	return out
}

func isGCSFuse(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return strings.Contains(s, "(gcsfuse)") && i > 0 && len(s) > i+2 && s[i+2] != 'Z'
}

// unmountPath unmounts path with umount(2), detaching if it is busy.
func unmountPath(path string) error {
	err := unix.Unmount(path, 0)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	if derr := unix.Unmount(path, unix.MNT_DETACH); derr != nil {
		return fmt.Errorf("unmount %s: %w (detach: %v)", path, err, derr)
	}
	return nil
}

// checkHead reads the first bytes of path and compares them with want.
func checkHead(path string, want []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, min(4096, len(want)))
	if _, err := io.ReadFull(f, buf); err != nil {
		return err
	}
	if !bytes.Equal(buf, want[:len(buf)]) {
		return fmt.Errorf("%s: content differs from the uploaded object", path)
	}
	return nil
}

// GCSFuse is a gcsfuse the bench runs itself on a plain directory.
type GCSFuse struct {
	Cmd  *exec.Cmd
	Dir  string
	done chan struct{}
	err  error
}

// StartGCSFuse runs `bin args... bucket dir` in its own process group, with
// env, its output appended to logPath.
func StartGCSFuse(bin string, args, env []string, bucket, dir, logPath string) (*GCSFuse, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append(slices.Clone(args), bucket, dir)...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	g := &GCSFuse{Cmd: cmd, Dir: dir, done: make(chan struct{})}
	go func() { g.err = cmd.Wait(); logf.Close(); close(g.done) }()
	return g, nil
}

// WaitMounted returns once dir is a FUSE mount whose root answers.
func (g *GCSFuse) WaitMounted(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var st unix.Statfs_t
		if err := unix.Statfs(g.Dir, &st); err == nil && st.Type == unix.FUSE_SUPER_MAGIC {
			return nil
		}
		select {
		case <-g.done:
			return fmt.Errorf("gcsfuse exited before mounting %s: %v", g.Dir, g.err)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gcsfuse did not mount %s within %s", g.Dir, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// Stop unmounts the directory (umount(2), then fusermount3 -u, then a
// detach) and waits for gcsfuse by PID: SIGTERM after 10 s, SIGKILL after
// 5 more.
func (g *GCSFuse) Stop() error {
	var errs []error
	if err := unix.Unmount(g.Dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		if out, ferr := exec.Command("fusermount3", "-u", g.Dir).CombinedOutput(); ferr != nil {
			if derr := unix.Unmount(g.Dir, unix.MNT_DETACH); derr != nil && !errors.Is(derr, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("unmount %s: %v; fusermount3: %v %s; detach: %v", g.Dir, err, ferr, bytes.TrimSpace(out), derr))
			}
		}
	}
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		_ = g.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-g.done:
		case <-time.After(5 * time.Second):
			_ = g.Cmd.Process.Kill()
			<-g.done
		}
		errs = append(errs, fmt.Errorf("gcsfuse (pid %d) did not exit after unmount; terminated", g.Cmd.Process.Pid))
	}
	return errors.Join(errs...)
}
