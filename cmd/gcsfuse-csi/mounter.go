package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/driver"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// runMounter is the FUSE daemon host: it serves the node driver on a unix
// socket, receives FUSE fds, and runs gcsfuse on them. It needs no
// capability and should run as a non-root uid. Its gcsfuse processes die
// with it, so it is restarted only deliberately (its DaemonSet is OnDelete).
func runMounter(args []string) error {
	fs := flag.NewFlagSet("gcsfuse-csi mounter", flag.ContinueOnError)
	socket := fs.String("socket", "/var/lib/gcsfuse-csi-mounter/mounter.sock", "unix socket the node driver connects to (its directory must be writable by this process)")
	gcsfuse := fs.String("gcsfuse", "gcsfuse", "gcsfuse binary (path, or name looked up in PATH)")
	workDir := fs.String("work-dir", "/tmp/gcsfuse-csi", "where each session's temp files and file cache live (under <work-dir>/sessions)")
	addKlogFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if !filepath.IsAbs(*socket) {
		return fmt.Errorf("--socket=%q: want an absolute path", *socket)
	}
	if !filepath.IsAbs(*workDir) {
		return fmt.Errorf("--work-dir=%q: want an absolute path", *workDir)
	}
	// Neither this process nor gcsfuse ever needs to gain privileges:
	// no setuid binary or file capability may raise them (inherited by
	// every gcsfuse).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	bin, err := exec.LookPath(*gcsfuse)
	if err != nil {
		return fmt.Errorf("--gcsfuse=%q: %w", *gcsfuse, err)
	}
	d := mounter.NewProcessDaemon(bin, filepath.Join(*workDir, "sessions"))
	// Sessions of an earlier mounter died with it.
	if err := d.CleanWorkDir(); err != nil {
		return fmt.Errorf("--work-dir=%q: %w", *workDir, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lis, err := listenWhenWritable(ctx, *socket)
	if err != nil {
		return err
	}
	klog.InfoS("serving the FUSE daemon host", "socket", *socket, "gcsfuse", bin, "uid", os.Getuid(), "version", driver.Version)
	errc := make(chan error, 1)
	go func() { errc <- (&mounter.Host{Daemon: d}).Serve(lis) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	lis.Close()
	list, _ := d.List(context.Background())
	klog.InfoS("stopping: the gcsfuse sessions of this host end with it, and their mounts stop answering", "sessions", len(list))
	d.StopAll()
	return nil
}

// listenWhenWritable listens on socket, waiting for its directory to become
// writable: in Kubernetes the privileged node driver creates it for us.
func listenWhenWritable(ctx context.Context, socket string) (*net.UnixListener, error) {
	var last error
	for i := 0; ; i++ {
		if err := os.Remove(socket); err != nil && !os.IsNotExist(err) {
			last = err
		} else {
			lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
			if err == nil {
				lis.SetUnlinkOnClose(true)
				if err := os.Chmod(socket, 0o600); err != nil {
					lis.Close()
					return nil, err
				}
				return lis, nil
			}
			last = err
		}
		if i%50 == 0 {
			klog.InfoS("waiting to create the socket (its directory must exist and be writable by this uid)", "socket", socket, "uid", os.Getuid(), "err", last)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("--socket=%q: %w", socket, last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}
