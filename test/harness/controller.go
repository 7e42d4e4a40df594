package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// Controller is a running `gcsfuse-csi controller` process: the CSI
// Identity and Controller services, as the chart's controller Deployment
// runs them behind the provisioner sidecar.
type Controller struct {
	Cmd        *exec.Cmd
	Endpoint   string // unix://...
	Conn       *grpc.ClientConn
	Identity   csi.IdentityClient
	Controller csi.ControllerClient
	done       chan error
}

// StartController runs `bin controller --endpoint=unix://socket args...`
// with its output appended to logPath, waits until Probe answers ready,
// and returns a connected client. Stop it with Stop.
func StartController(bin, socket, logPath string, args ...string) (*Controller, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	endpoint := "unix://" + socket
	cmd := exec.Command(bin, append([]string{"controller", "--endpoint=" + endpoint}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	c := &Controller{Cmd: cmd, Endpoint: endpoint, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait(); logf.Close() }()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		c.Stop()
		return nil, err
	}
	c.Conn, c.Identity, c.Controller = conn, csi.NewIdentityClient(conn), csi.NewControllerClient(conn)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-c.done:
			c.done <- err
			c.Conn.Close()
			return nil, fmt.Errorf("controller exited before it was ready: %v (log: %s)", err, logPath)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := c.Identity.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && resp.GetReady().GetValue() {
			return c, nil
		}
		if time.Now().After(deadline) {
			c.Stop()
			return nil, fmt.Errorf("controller not ready after 30s: %v (log: %s)", err, logPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the controller's process id.
func (c *Controller) Pid() int { return c.Cmd.Process.Pid }

// Stop sends SIGTERM to the controller's PID and waits; SIGKILL after 10 s.
func (c *Controller) Stop() error {
	if c.Conn != nil {
		c.Conn.Close()
	}
	_ = c.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-c.done:
		c.done <- err
		return nil
	case <-time.After(10 * time.Second):
		if err := killAndWait(c.Cmd.Process, c.done, "controller"); err != nil {
			return err
		}
		return fmt.Errorf("controller did not stop on SIGTERM; killed")
	}
}
