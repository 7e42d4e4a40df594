package mounter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// Session is one gcsfuse process serving one FUSE connection.
type Session struct {
	ID     string   // SessionID of the mount
	Bucket string   // bucket to serve
	Args   []string // gcsfuse flags, without the bucket and mount point
	// FileCache asks for a --cache-dir. The daemon host picks where the
	// session's temp dir and cache live: it owns and cleans them.
	FileCache bool
	// Credentials gcsfuse authenticates with. Unless anonymous, the daemon
	// host serves their tokens to gcsfuse on a socket in the session's
	// directory (--token-url); nil is the node's own credentials.
	Credentials *auth.Credentials `json:"credentials,omitempty"`
	// Metrics asks the daemon host to collect gcsfuse's own metrics for
	// this session (MetricsSource): the node driver serves metrics.
	Metrics bool `json:"metrics,omitempty"`
	// KernelParams asks gcsfuse to write the kernel settings it wants for
	// its mount to a file in the session's directory (kernel_linux.go);
	// Status returns them.
	KernelParams bool `json:"kernelParams,omitempty"`
}

// SessionStatus is what a Daemon knows about a session.
type SessionStatus struct {
	ID      string
	Bucket  string
	PID     int
	Started time.Time
	Exited  time.Time // zero while running
	Running bool
	// Identity is who the session authenticates as (auth.Credentials'
	// Identity): never a secret.
	Identity string
	// Err says why an exited session stopped: its exit status and the last
	// lines gcsfuse logged.
	Err error
	// KernelParams are the kernel settings gcsfuse asked for, once it has
	// written them (Session.KernelParams).
	KernelParams []KernelParam
}

// Daemon hosts FUSE daemons (gcsfuse) on connections the privileged side has
// already mounted. It needs no privilege: it only serves file descriptors it
// is handed. The node driver talks to it only through this interface, so it
// can live in the driver process (ProcessDaemon) or in a separate one
// (RemoteDaemon, talking to `gcsfuse-csi mounter`).
type Daemon interface {
	// Start runs gcsfuse for s on the FUSE connection dev, which Start owns
	// from then on: it is closed before Start returns, in every case, so that
	// the daemon holds the only copy (a copy left behind turns a dead daemon
	// into hanging reads instead of ENOTCONN).
	Start(ctx context.Context, s Session, dev *os.File) error
	// Status reports on session id; an unknown id is ErrUnknownSession.
	Status(ctx context.Context, id string) (SessionStatus, error)
	// Stop waits for the session's daemon to exit (it exits once its mount is
	// gone), terminates it if ctx ends first, and forgets it. Stopping an
	// unknown id is not an error.
	Stop(ctx context.Context, id string) error
	// List reports every session the daemon hosts, running or exited and
	// not yet stopped.
	List(ctx context.Context) ([]SessionStatus, error)
	// Refresh gives a running session fresh credentials of the same
	// identity (a pod token kubelet renewed); its next token uses them.
	Refresh(ctx context.Context, id string, c *auth.Credentials) error
}

// ErrUnknownSession is returned by Daemon.Status for ids it does not host.
var ErrUnknownSession = errors.New("no such gcsfuse session")

// ProcessDaemon runs each session as a child gcsfuse process. Children die
// with it (SIGKILL on parent death): a gcsfuse nobody supervises would
// serve a mount nobody can stop or report on.
type ProcessDaemon struct {
	Binary string // gcsfuse
	// WorkDir holds a directory per session (temp files, file cache),
	// created 0700 at start and removed when the session's gcsfuse exits.
	WorkDir string
	// Logf receives every line gcsfuse logs, with its severity. Nil: klog.
	Logf func(id, severity, line string)

	mu       sync.Mutex
	sessions map[string]*proc
	counters daemonMetrics
}

type proc struct {
	cmd      *exec.Cmd
	bucket   string
	identity string
	started  time.Time
	done     chan struct{} // closed when cmd.Wait returned
	err      error         // Wait's result, valid after done
	exited   time.Time     // valid after done
	tail     *tail
	tokens   *tokenServer  // nil for anonymous sessions
	metrics  *otlpReceiver // nil unless Session.Metrics
	stopping atomic.Bool   // Stop or StopAll is ending it
	params   string        // gcsfuse's kernel parameters file; "" if not asked for
}

// NewProcessDaemon returns a Daemon running gcsfuse from binary, with
// per-session directories under workDir.
func NewProcessDaemon(binary, workDir string) *ProcessDaemon {
	return &ProcessDaemon{Binary: binary, WorkDir: workDir, sessions: map[string]*proc{}}
}

// CleanWorkDir removes what earlier processes left in WorkDir: their
// sessions died with them. Call it before the first Start.
func (d *ProcessDaemon) CleanWorkDir() error {
	if err := os.MkdirAll(d.WorkDir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(d.WorkDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(d.WorkDir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

var sessionIDRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Start implements Daemon.
func (d *ProcessDaemon) Start(ctx context.Context, s Session, dev *os.File) error {
	defer dev.Close()
	if !sessionIDRE.MatchString(s.ID) {
		return fmt.Errorf("session id %q: want 1-64 letters, digits, '-' or '_'", s.ID)
	}
	if s.Bucket == "" {
		return errors.New("session bucket is required")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.sessions[s.ID]; ok {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("gcsfuse session %s is already running (pid %d)", s.ID, p.cmd.Process.Pid)
		}
	}
	dir := filepath.Join(d.WorkDir, s.ID)
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o700); err != nil {
		return fmt.Errorf("create session dir: %w", err)
	}
	args := append([]string{"--foreground", "--log-format=text"}, s.Args...)
	args = append(args, "--temp-dir="+filepath.Join(dir, "tmp"))
	if s.FileCache {
		if err := os.MkdirAll(filepath.Join(dir, "cache"), 0o700); err != nil {
			return fmt.Errorf("create file cache dir: %w", err)
		}
		args = append(args, "--cache-dir="+filepath.Join(dir, "cache"))
	}
	var tokens *tokenServer
	if !s.Credentials.Anonymous() {
		creds := s.Credentials
		if creds == nil {
			creds = &auth.Credentials{Mode: auth.ModeNode}
		}
		sock := filepath.Join(dir, "token.sock")
		var err error
		if tokens, err = startTokenServer(sock, s.ID, creds); err != nil {
			_ = os.RemoveAll(dir)
			return fmt.Errorf("serve tokens to gcsfuse: %w", err)
		}
		args = append(args, "--token-url=unix://"+sock)
	}
	params := ""
	if s.KernelParams {
		params = filepath.Join(dir, kernelParamsName)
		args = append(args, "--kernel-params-file="+params)
	}
	var metrics *otlpReceiver
	if s.Metrics {
		var margs []string
		var err error
		if metrics, margs, err = metricsArgs(s); err != nil {
			tokens.close()
			_ = os.RemoveAll(dir)
			return err
		}
		args = append(args, margs...)
	}
	args = append(args, s.Bucket, "/dev/fd/3")
	cmd := exec.Command(d.Binary, args...)
	cmd.ExtraFiles = []*os.File{dev} // fd 3 in the child
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent"}
	// Own process group: a Ctrl-C or SIGTERM aimed at the driver's group
	// must not kill gcsfuse before the driver unmounts. Pdeathsig: gcsfuse
	// does not outlive its supervisor.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tokens.close()
		metrics.close()
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := spawn(cmd); err != nil {
		tokens.close()
		metrics.close()
		_ = os.RemoveAll(dir)
		return fmt.Errorf("start gcsfuse: %w", err)
	}
	p := &proc{cmd: cmd, bucket: s.Bucket, identity: s.Credentials.Identity(), started: time.Now(), done: make(chan struct{}), tail: &tail{max: 8}, tokens: tokens, metrics: metrics, params: params}
	d.sessions[s.ID] = p
	logf := d.Logf
	if logf == nil {
		logf = klogLine
	}
	go func() {
		p.tail.copyLines(out, func(line, sev string) { logf(s.ID, sev, line) })
		p.err = cmd.Wait() // reaps: no zombies
		p.exited = time.Now()
		p.tokens.close()
		p.metrics.close()
		if p.err != nil && !p.stopping.Load() {
			d.counters.deaths.Add(1)
		}
		if err := os.RemoveAll(dir); err != nil {
			klog.ErrorS(err, "removing session dir", "session", s.ID)
		}
		close(p.done)
		klog.V(2).InfoS("gcsfuse exited", "session", s.ID, "pid", cmd.Process.Pid, "status", errString(p.err))
	}()
	klog.V(2).InfoS("gcsfuse started", "session", s.ID, "bucket", s.Bucket, "identity", s.Credentials, "pid", cmd.Process.Pid, "args", strings.Join(s.Args, " "))
	return nil
}

// spawnc hands every exec to one goroutine locked to its OS thread for the
// life of the process. Pdeathsig fires when the *thread* that forked the
// child exits, and Go may retire threads; this one never is. The thread
// also sets no_new_privs (a per-thread attribute that children inherit):
// gcsfuse never needs to gain a privilege through a setuid binary or file
// capability, so it cannot.
var (
	spawnOnce sync.Once
	spawnc    chan spawnReq
)

type spawnReq struct {
	cmd  *exec.Cmd
	done chan error
}

func spawn(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnc = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives forever
			if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
				klog.ErrorS(err, "set no_new_privs for gcsfuse")
			}
			for r := range spawnc {
				r.done <- r.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnc <- spawnReq{cmd, done}
	return <-done
}

func (p *proc) status(id string) SessionStatus {
	st := SessionStatus{ID: id, Bucket: p.bucket, Identity: p.identity, PID: p.cmd.Process.Pid, Started: p.started, Running: true}
	select {
	case <-p.done:
		st.Running = false
		st.Exited = p.exited
		st.Err = fmt.Errorf("gcsfuse exited (%s): %s", errString(p.err), p.tail.String())
	default:
		if p.params != "" {
			var err error
			if st.KernelParams, err = readKernelParams(p.params); err != nil {
				klog.V(4).InfoS("reading gcsfuse's kernel parameters", "session", id, "err", err)
			}
		}
	}
	return st
}

// Status implements Daemon.
func (d *ProcessDaemon) Status(_ context.Context, id string) (SessionStatus, error) {
	d.mu.Lock()
	p, ok := d.sessions[id]
	d.mu.Unlock()
	if !ok {
		return SessionStatus{}, ErrUnknownSession
	}
	return p.status(id), nil
}

// Refresh implements Daemon.
func (d *ProcessDaemon) Refresh(_ context.Context, id string, c *auth.Credentials) error {
	d.mu.Lock()
	p, ok := d.sessions[id]
	d.mu.Unlock()
	if !ok {
		return ErrUnknownSession
	}
	if p.tokens == nil {
		if c.Anonymous() {
			return nil
		}
		return fmt.Errorf("session %s is anonymous; it cannot take %s", id, c)
	}
	return p.tokens.update(c)
}

// List implements Daemon.
func (d *ProcessDaemon) List(context.Context) ([]SessionStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]SessionStatus, 0, len(d.sessions))
	for id, p := range d.sessions {
		out = append(out, p.status(id))
	}
	slices.SortFunc(out, func(a, b SessionStatus) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// Stop implements Daemon.
func (d *ProcessDaemon) Stop(ctx context.Context, id string) error {
	d.mu.Lock()
	p, ok := d.sessions[id]
	d.mu.Unlock()
	if !ok {
		return nil
	}
	defer func() {
		d.mu.Lock()
		if d.sessions[id] == p {
			delete(d.sessions, id)
		}
		d.mu.Unlock()
	}()
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
	}
	// Still serving after its mount went away: terminate, then kill.
	p.stopping.Store(true)
	klog.InfoS("gcsfuse did not exit after unmount; terminating", "session", id, "pid", p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	// A stopped process (SIGSTOP, a debugger) acts on TERM only once it
	// runs again.
	_ = p.cmd.Process.Signal(syscall.SIGCONT)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return nil
}

// StopAll kills every session (the host is going away) and waits for them.
func (d *ProcessDaemon) StopAll() {
	d.mu.Lock()
	procs := maps.Clone(d.sessions)
	d.mu.Unlock()
	for _, p := range procs {
		p.stopping.Store(true)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func errString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

var severityRE = regexp.MustCompile(`severity=([A-Z]+)`)
var messageRE = regexp.MustCompile(`message="((?:[^"\\]|\\.)*)"`)

func klogLine(id, severity, line string) {
	switch severity {
	case "ERROR", "WARNING":
		klog.InfoS("gcsfuse: "+line, "session", id, "severity", severity)
	default:
		klog.V(4).InfoS("gcsfuse: "+line, "session", id, "severity", severity)
	}
}

// tail keeps the last max lines of warning-or-worse gcsfuse output, for
// error messages that say why a session died.
type tail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tail) copyLines(r io.Reader, each func(line, severity string)) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		sev := "INFO"
		if m := severityRE.FindStringSubmatch(line); m != nil {
			sev = m[1]
		} else if strings.TrimSpace(line) == "" {
			continue
		} else if strings.HasPrefix(line, "Error") || strings.Contains(line, "error") {
			sev = "ERROR"
		}
		msg := line
		if m := messageRE.FindStringSubmatch(line); m != nil {
			msg = strings.TrimSpace(strings.NewReplacer(`\n`, " ", `\"`, `"`, `\\`, `\`).Replace(m[1]))
		}
		each(msg, sev)
		if sev == "ERROR" || sev == "WARNING" {
			t.mu.Lock()
			t.lines = append(t.lines, msg)
			if len(t.lines) > t.max {
				t.lines = t.lines[1:]
			}
			t.mu.Unlock()
		}
	}
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "no warnings or errors logged"
	}
	return strings.Join(t.lines, "; ")
}
