// Package harness starts the real parts the tests, the demo and the
// benchmarks run against: fake-gcs-server on 127.0.0.1, the driver binary,
// and a CSI client speaking to it the way kubelet does. Everything it starts
// is stopped by PID (or by closing its listener), never by name.
package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"cloud.google.com/go/storage"
	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
)

// FakeGCS is fake-gcs-server (memory backend) on a loopback port.
type FakeGCS struct {
	Server *fakestorage.Server
	// Endpoint is the JSON API endpoint for gcsfuse --custom-endpoint and
	// the driver's --gcs-endpoint.
	Endpoint string
	// Client talks to the fake through cloud.google.com/go/storage.
	Client *storage.Client
	http   *http.Server
}

// StartFakeGCS serves a fake GCS holding objects (and their buckets) on
// 127.0.0.1 at a free port. Stop it with Stop.
func StartFakeGCS(objects []fakestorage.Object) (*FakeGCS, error) {
	return StartFakeGCSWrapped(objects, nil)
}

// Stop closes the listener and the server.
func (f *FakeGCS) Stop() {
	if f.Client != nil {
		f.Client.Close()
	}
	f.http.Close()
	f.Server.Stop()
}

// Object is a shorthand for a fake object with string content.
func Object(bucket, name, content string) fakestorage.Object {
	return fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name}, Content: []byte(content)}
}

// RepoRoot finds the module root (the directory holding go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Binary returns the path of a binary `make build` put in bin/, or the
// value of the environment variable env if set.
func Binary(name, env string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found (%v): run `make build` first, or set %s", p, err, env)
	}
	return p, nil
}

// Driver is a running driver process.
type Driver struct {
	Cmd      *exec.Cmd
	Endpoint string // unix://...
	Conn     *grpc.ClientConn
	Identity csi.IdentityClient
	Node     csi.NodeClient
	done     chan error

	// What Restart starts again.
	bin, socket, logPath string
	args                 []string
}

// StartDriver runs `bin node args...` with its output to logPath, waits until
// Probe answers ready, and returns a connected client. socket is the unix
// socket path; it is added as --endpoint.
func StartDriver(bin, socket, logPath string, args ...string) (*Driver, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	endpoint := "unix://" + socket
	cmd := exec.Command(bin, append([]string{"node", "--endpoint=" + endpoint}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C at the terminal reaches the caller, which
	// then unpublishes and stops the driver in order, not the driver first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	d := &Driver{Cmd: cmd, Endpoint: endpoint, done: make(chan error, 1), bin: bin, socket: socket, logPath: logPath, args: args}
	go func() { d.done <- cmd.Wait(); logf.Close() }()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()),
		// The socket appears a few ms after start: retry fast, not after 1 s.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, MaxDelay: 100 * time.Millisecond}, MinConnectTimeout: time.Second}))
	if err != nil {
		d.Stop()
		return nil, err
	}
	d.Conn, d.Identity, d.Node = conn, csi.NewIdentityClient(conn), csi.NewNodeClient(conn)
	if err := d.waitReady(30 * time.Second); err != nil {
		d.Stop()
		return nil, fmt.Errorf("%w (driver log: %s)", err, logPath)
	}
	return d, nil
}

func (d *Driver) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-d.done:
			d.done <- err
			return fmt.Errorf("driver exited before it was ready: %v", err)
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := d.Identity.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && resp.GetReady().GetValue() {
			return nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("driver not ready after %s: %v", timeout, last)
}

// Pid is the driver's process id.
func (d *Driver) Pid() int { return d.Cmd.Process.Pid }

// Stop sends SIGTERM to the driver's PID and waits; SIGKILL after 10 s.
func (d *Driver) Stop() error {
	if d.Conn != nil {
		d.Conn.Close()
	}
	_ = d.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
		return nil
	case <-time.After(10 * time.Second):
		if err := killAndWait(d.Cmd.Process, d.done, "driver"); err != nil {
			return err
		}
		return fmt.Errorf("driver did not stop on SIGTERM; killed")
	}
}

// Kill sends SIGKILL to the driver's PID and waits until it has exited: a
// crash, with no chance to clean up. Its client connection stays open (calls
// on it fail with Unavailable); Stop closes it.
func (d *Driver) Kill() error {
	return killAndWait(d.Cmd.Process, d.done, "driver")
}

// Restart starts the driver again with the same binary, socket, log file and
// arguments, once this one has exited (after Kill or Stop), and returns the
// new one when Probe answers ready.
func (d *Driver) Restart() (*Driver, error) {
	select {
	case err := <-d.done:
		d.done <- err
	default:
		return nil, fmt.Errorf("driver pid %d is still running: Kill or Stop it first", d.Pid())
	}
	return StartDriver(d.bin, d.socket, d.logPath, d.args...)
}

// killAndWait SIGKILLs p and waits up to 10 s for its Wait (in done) to return.
func killAndWait(p *os.Process, done chan error, what string) error {
	if err := p.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s pid %d: %w", what, p.Pid, err)
	}
	select {
	case err := <-done:
		done <- err
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s pid %d still running 10 s after SIGKILL", what, p.Pid)
	}
}

// Mounter is a running `gcsfuse-csi mounter` process: the unprivileged FUSE
// daemon host whose children are the gcsfuse processes.
type Mounter struct {
	Cmd    *exec.Cmd
	Socket string
	done   chan error

	// What Restart starts again.
	bin, workDir, logPath string
	cred                  *syscall.Credential
	args                  []string
}

// StartMounter runs `bin mounter --socket=socket --work-dir=workDir args...`
// (args carries --gcsfuse) with its output appended to logPath, as cred
// (nil: as this process's user), and waits until the socket accepts a
// connection. The socket's directory and workDir must be writable by cred's
// uid. The mounter runs in its own process group with "/" as its working
// directory; as another user, HOME is workDir.
func StartMounter(bin, socket, workDir, logPath string, cred *syscall.Credential, args ...string) (*Mounter, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, append([]string{"mounter", "--socket=" + socket, "--work-dir=" + workDir}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	if cred != nil {
		cmd.Env = append(os.Environ(), "HOME="+workDir)
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	m := &Mounter{Cmd: cmd, Socket: socket, done: make(chan error, 1), bin: bin, workDir: workDir, logPath: logPath, cred: cred, args: args}
	go func() { m.done <- cmd.Wait(); logf.Close() }()
	if err := m.waitReady(30 * time.Second); err != nil {
		m.Stop()
		return nil, fmt.Errorf("%w (mounter log: %s)", err, logPath)
	}
	return m, nil
}

func (m *Mounter) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		select {
		case err := <-m.done:
			m.done <- err
			return fmt.Errorf("mounter exited before its socket %s accepted a connection: %v", m.Socket, err)
		default:
		}
		conn, err := net.DialTimeout("unix", m.Socket, time.Second)
		if err == nil {
			conn.Close()
			return nil
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("mounter socket %s not accepting connections after %s: %v", m.Socket, timeout, last)
}

// Pid is the mounter's process id.
func (m *Mounter) Pid() int { return m.Cmd.Process.Pid }

// Stop sends SIGTERM to the mounter's PID and waits; SIGKILL after 10 s.
func (m *Mounter) Stop() error {
	_ = m.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-m.done:
		m.done <- err
		return nil
	case <-time.After(10 * time.Second):
		if err := killAndWait(m.Cmd.Process, m.done, "mounter"); err != nil {
			return err
		}
		return fmt.Errorf("mounter did not stop on SIGTERM; killed")
	}
}

// Kill sends SIGKILL to the mounter's PID and waits until it has exited.
func (m *Mounter) Kill() error {
	return killAndWait(m.Cmd.Process, m.done, "mounter")
}

// Restart starts the mounter again with the same binary, socket, work dir,
// log file, identity and arguments, once this one has exited.
func (m *Mounter) Restart() (*Mounter, error) {
	select {
	case err := <-m.done:
		m.done <- err
	default:
		return nil, fmt.Errorf("mounter pid %d is still running: Kill or Stop it first", m.Pid())
	}
	return StartMounter(m.bin, m.Socket, m.workDir, m.logPath, m.cred, m.args...)
}

// ProcStatus returns the fields of /proc/PID/status (Uid, Gid, CapEff, ...),
// each value with its whitespace collapsed to single spaces.
func ProcStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if ok {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out, nil
}

// Mount is one line of /proc/self/mounts.
type Mount struct{ Source, Path, Type, Options string }

// FUSEMounts lists the fuse.gcsfuse mounts whose path is under prefix.
func FUSEMounts(prefix string) ([]Mount, error) {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Mount
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 || fields[2] != "fuse.gcsfuse" || !strings.HasPrefix(fields[1], prefix) {
			continue
		}
		out = append(out, Mount{Source: fields[0], Path: fields[1], Type: fields[2], Options: fields[3]})
	}
	return out, sc.Err()
}

// Children returns the pids of ppid's direct children whose command name
// (/proc/PID/comm) is comm, and how many of them are zombies.
func Children(ppid int, comm string) (pids []int, zombies int, err error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, 0, err
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		rest := strings.Fields(s[close+1:])
		if len(rest) < 2 || s[open+1:close] != comm {
			continue
		}
		if p, _ := strconv.Atoi(rest[1]); p != ppid {
			continue
		}
		pids = append(pids, pid)
		if rest[0] == "Z" {
			zombies++
		}
	}
	return pids, zombies, nil
}

// Memory returns a process's VmRSS and VmHWM (peak) in KiB.
func Memory(pid int) (rss, hwm int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss, _ = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			hwm, _ = strconv.ParseInt(f[1], 10, 64)
		}
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
	}
	return rss, hwm, nil
}

// DetachAll lazily unmounts every fuse.gcsfuse mount under dir, newest first
// (bind mounts before the FUSE mounts they show), and returns what it found.
// It is the last-resort cleanup after a failed test; a clean run finds none.
func DetachAll(dir string) ([]Mount, error) {
	mounts, err := FUSEMounts(strings.TrimSuffix(dir, "/") + "/")
	if err != nil {
		return nil, err
	}
	var errs []error
	for i := len(mounts) - 1; i >= 0; i-- {
		if err := syscall.Unmount(mounts[i].Path, syscall.MNT_DETACH); err != nil && err != syscall.EINVAL && err != syscall.ENOENT {
			errs = append(errs, fmt.Errorf("detach %s: %w", mounts[i].Path, err))
		}
	}
	return mounts, errors.Join(errs...)
}

// WaitNoChildren waits up to timeout until ppid has no child named comm, and
// returns those still there (pids, and how many are zombies).
func WaitNoChildren(ppid int, comm string, timeout time.Duration) ([]int, int, error) {
	deadline := time.Now().Add(timeout)
	for {
		pids, zombies, err := Children(ppid, comm)
		if err != nil || len(pids) == 0 || time.Now().After(deadline) {
			return pids, zombies, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}
