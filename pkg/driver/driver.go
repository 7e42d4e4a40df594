// Package driver implements the CSI Identity and Node services, and the
// Controller service of `gcsfuse-csi controller` (controller.go).
package driver

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/kubernetes-csi/csi-lib-utils/protosanitizer"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/gcs"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/metrics"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// Version is the driver version, set at build time with -ldflags.
var Version = "dev"

// Driver serves the CSI Identity and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	opts    Options
	mounter *mounter.Mounter
	// ready reports whether the node can serve mounts (Probe).
	ready func() error

	targetLocks  tryLocks   // NodePublish/NodeUnpublish, by target path
	volumeLocks  tryLocks   // NodeStage/NodeUnstage, by volume id
	sessionLocks keyedMutex // inline sessions, by mount point
	stageCreds   stageCredentials
	metrics      *metrics.Node // nil without --metrics-address
}

// Deps are the OS-facing parts of the driver; nil fields get the real ones.
type Deps struct {
	Mount  mount.Interface
	FUSE   mounter.FUSE
	Daemon mounter.Daemon
	Check  mounter.BucketChecker
	Ready  func() error
	Clock  func() time.Time // crash-loop backoff; nil: time.Now
}

// New builds a node driver from validated options. It does no network I/O.
func New(opts Options, deps Deps) (*Driver, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	bin := opts.GCSFuseBinary
	if deps.Mount == nil {
		deps.Mount = mounter.NewSyscallMounter()
	}
	if deps.FUSE == nil {
		deps.FUSE = mounter.KernelFUSE{}
	}
	inProcess := false
	switch {
	case deps.Daemon != nil:
	case opts.MounterSocket != "":
		if err := prepareSocketDir(opts.MounterSocket, opts.MounterUID); err != nil {
			return nil, err
		}
		deps.Daemon = mounter.NewRemoteDaemon(opts.MounterSocket)
	default:
		path, err := exec.LookPath(bin)
		if err != nil {
			return nil, fmt.Errorf("--gcsfuse=%q: %w", bin, err)
		}
		bin = path
		// Sessions of an earlier driver process died with it.
		pd := mounter.NewProcessDaemon(bin, filepath.Join(opts.StateDir, "sessions"))
		if err := pd.CleanWorkDir(); err != nil {
			return nil, fmt.Errorf("--state-dir=%q: %w", opts.StateDir, err)
		}
		deps.Daemon, inProcess = pd, true
	}
	if deps.Check == nil {
		deps.Check = &gcs.Checker{Endpoint: opts.GCSEndpoint}
	}
	if deps.Ready == nil {
		gcsfuse := ""
		if inProcess {
			gcsfuse = bin
		}
		deps.Ready = func() error { return nodeReady(gcsfuse, opts.StateDir) }
	}
	if err := os.MkdirAll(filepath.Join(opts.StateDir, inlineDir), 0o700); err != nil {
		return nil, fmt.Errorf("--state-dir=%q: %w", opts.StateDir, err)
	}
	cfg := mounter.Config{
		StateDir:         opts.StateDir,
		Endpoint:         opts.GCSEndpoint,
		MaxRetryAttempts: opts.MaxRetryAttempts,
		AtomicRename:     opts.AtomicRename,
		MountTimeout:     opts.MountTimeout,
		Clock:            deps.Clock,
	}
	node := newMetrics(opts, &cfg)
	d := &Driver{
		opts:       opts,
		mounter:    mounter.New(cfg, deps.Mount, deps.FUSE, deps.Daemon, deps.Check),
		ready:      deps.Ready,
		stageCreds: stageCredentials{dir: filepath.Join(opts.StateDir, stagedDir)},
		metrics:    node,
	}
	if node != nil {
		node.Watch(d.mounter)
	}
	return d, nil
}

// nodeReady is true when this process can do its part of a mount right
// now: /dev/fuse opens, the state dir is writable, and (gcsfuse != "", when
// gcsfuse runs in-process) gcsfuse is executable. A separate mounter's
// health is deliberately not part of it: the liveness probe uses Probe, and
// restarting the driver cannot fix a mounter.
func nodeReady(gcsfuse, stateDir string) error {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("/dev/fuse: %w", err)
	}
	f.Close()
	if gcsfuse != "" {
		if fi, err := os.Stat(gcsfuse); err != nil || fi.Mode()&0o111 == 0 {
			return fmt.Errorf("gcsfuse binary %q is not executable: %v", gcsfuse, err)
		}
	}
	probe, err := os.CreateTemp(stateDir, ".probe-")
	if err != nil {
		return fmt.Errorf("state dir %q is not writable: %w", stateDir, err)
	}
	probe.Close()
	return os.Remove(probe.Name())
}

// prepareSocketDir creates the mounter socket's directory, owned by uid
// (when >= 0) and mode 0700: only root and the mounter can reach it.
func prepareSocketDir(socket string, uid int) error {
	dir := filepath.Dir(socket)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("--mounter-socket=%q: %w", socket, err)
	}
	if uid < 0 {
		return nil
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		return fmt.Errorf("--mounter-uid=%d: chown %q: %w", uid, dir, err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("--mounter-socket=%q: chmod: %w", socket, err)
	}
	return nil
}

// Reconcile makes the node consistent after a restart (see
// mounter.Reconcile). Run calls it before serving.
func (d *Driver) Reconcile(ctx context.Context) {
	start := time.Now()
	rep, err := d.mounter.Reconcile(ctx, filepath.Join(d.opts.StateDir, inlineDir))
	if err != nil {
		klog.ErrorS(err, "reconcile")
		return
	}
	klog.InfoS("reconciled mounts with the mount table and the FUSE daemon host",
		"healthy", rep.Healthy, "dead", rep.Dead, "unusedInlineReleased", len(rep.Released),
		"orphanSessionsStopped", len(rep.StoppedSessions), "daemonUnreachable", rep.DaemonUnreachable,
		"duration", time.Since(start).Round(time.Millisecond))
}

// Run serves CSI on the endpoint until ctx ends, then stops gracefully.
// Mounts are left in place: stopping the driver never unmounts a volume.
func (d *Driver) Run(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	d.Reconcile(rctx)
	cancel()
	sock, _ := d.opts.socketPath()
	if err := os.MkdirAll(filepath.Dir(sock), 0o750); err != nil {
		return fmt.Errorf("create socket dir: %w", err)
	}
	if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale socket %q: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", sock, err)
	}
	stopMetrics, err := d.serveMetrics()
	if err != nil {
		lis.Close()
		return err
	}
	defer stopMetrics()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(d.interceptors()...))
	csi.RegisterIdentityServer(srv, d)
	csi.RegisterNodeServer(srv, d)
	servers := []*grpc.Server{srv}
	errc := make(chan error, 2)
	go func() { errc <- srv.Serve(lis) }()
	klog.InfoS("serving CSI", "driver", d.opts.DriverName, "version", Version, "node", d.opts.NodeID, "endpoint", d.opts.Endpoint)
	if d.opts.RegistrationDir != "" {
		// Registration goes last: kubelet calls the CSI socket right after.
		reg, err := listenRegistration(d.opts.RegistrationDir, d.opts.DriverName)
		if err != nil {
			srv.Stop()
			return err
		}
		rs := d.registrationServer()
		servers = append(servers, rs)
		go func() { errc <- rs.Serve(reg) }()
		klog.InfoS("serving kubelet plugin registration", "dir", d.opts.RegistrationDir, "kubeletRegistrationPath", d.opts.KubeletRegistrationPath)
	}

	var runErr error
	select {
	case err := <-errc:
		runErr = fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	for _, s := range servers {
		stopped := make(chan struct{})
		go func() { s.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			s.Stop()
		}
	}
	klog.InfoS("stopped serving CSI")
	return runErr
}

// logCalls logs every call at V(4), payloads at V(5) with secrets stripped,
// and every failure with its code.
func logCalls(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	if klog.V(5).Enabled() {
		klog.InfoS("call", "method", info.FullMethod, "request", protosanitizer.StripSecrets(redactTokens(req)))
	}
	resp, err := handler(ctx, req)
	if err != nil {
		st := status.Convert(err)
		klog.ErrorS(nil, "call failed", "method", info.FullMethod, "code", st.Code(), "message", st.Message(), "duration", time.Since(start))
	} else {
		klog.V(4).InfoS("call", "method", info.FullMethod, "duration", time.Since(start))
	}
	return resp, err
}
