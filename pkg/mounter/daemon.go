package mounter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/klog/v2"
)

// Session is one gcsfuse process serving one FUSE connection.
type Session struct {
	ID     string   // SessionID of the mount
	Bucket string   // bucket to serve
	Args   []string // gcsfuse flags, without the bucket and mount point
}

// SessionStatus is what a Daemon knows about a session.
type SessionStatus struct {
	Running bool
	// Err says why an exited session stopped: its exit status and the last
	// lines gcsfuse logged.
	Err error
}

// Daemon hosts FUSE daemons (gcsfuse) on connections the privileged side has
// already mounted. It needs no privilege: it only serves file descriptors it
// is handed. The node driver talks to it only through this interface, so it
// can live in the driver process or in a separate one.
type Daemon interface {
	// Start runs gcsfuse for s on the FUSE connection dev, which Start owns
	// from then on: it is closed before Start returns, in every case, so that
	// the daemon holds the only copy (a copy left behind turns a dead daemon
	// into hanging reads instead of ENOTCONN).
	Start(ctx context.Context, s Session, dev *os.File) error
	// Status reports on session id; an unknown id is an error.
	Status(id string) (SessionStatus, error)
	// Stop waits for the session's daemon to exit (it exits once its mount is
	// gone), terminates it if ctx ends first, and forgets it. Stopping an
	// unknown id is not an error.
	Stop(ctx context.Context, id string) error
}

// ErrUnknownSession is returned by Daemon.Status for ids it does not host.
var ErrUnknownSession = errors.New("no such gcsfuse session")

// ProcessDaemon runs each session as a child gcsfuse process.
type ProcessDaemon struct {
	Binary string // gcsfuse
	// Logf receives every line gcsfuse logs, with its severity. Nil: klog.
	Logf func(id, severity, line string)

	mu       sync.Mutex
	sessions map[string]*proc
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd.Wait returned
	err  error         // Wait's result, valid after done
	tail *tail
}

// NewProcessDaemon returns a Daemon running gcsfuse from binary.
func NewProcessDaemon(binary string) *ProcessDaemon {
	return &ProcessDaemon{Binary: binary, sessions: map[string]*proc{}}
}

// Start implements Daemon.
func (d *ProcessDaemon) Start(ctx context.Context, s Session, dev *os.File) error {
	defer dev.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	if p, ok := d.sessions[s.ID]; ok {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("gcsfuse session %s is already running (pid %d)", s.ID, p.cmd.Process.Pid)
		}
	}
	args := append(append([]string{"--foreground", "--log-format=text"}, s.Args...), s.Bucket, "/dev/fd/3")
	cmd := exec.Command(d.Binary, args...)
	cmd.ExtraFiles = []*os.File{dev} // fd 3 in the child
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/nonexistent"}
	// Own process group: a Ctrl-C or SIGTERM aimed at the driver's group
	// must not kill gcsfuse before the driver unmounts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start gcsfuse: %w", err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{}), tail: &tail{max: 8}}
	d.sessions[s.ID] = p
	logf := d.Logf
	if logf == nil {
		logf = klogLine
	}
	go func() {
		p.tail.copyLines(out, func(line, sev string) { logf(s.ID, sev, line) })
		p.err = cmd.Wait() // reaps: no zombies
		close(p.done)
		klog.V(2).InfoS("gcsfuse exited", "session", s.ID, "pid", cmd.Process.Pid, "status", errString(p.err))
	}()
	klog.V(2).InfoS("gcsfuse started", "session", s.ID, "bucket", s.Bucket, "pid", cmd.Process.Pid, "args", strings.Join(s.Args, " "))
	return nil
}

// Status implements Daemon.
func (d *ProcessDaemon) Status(id string) (SessionStatus, error) {
	d.mu.Lock()
	p, ok := d.sessions[id]
	d.mu.Unlock()
	if !ok {
		return SessionStatus{}, ErrUnknownSession
	}
	select {
	case <-p.done:
		return SessionStatus{Err: fmt.Errorf("gcsfuse exited (%s): %s", errString(p.err), p.tail.String())}, nil
	default:
		return SessionStatus{Running: true}, nil
	}
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
	klog.InfoS("gcsfuse did not exit after unmount; terminating", "session", id, "pid", p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	_ = p.cmd.Process.Kill()
	<-p.done
	return nil
}

// Pids returns the gcsfuse process ids by session, for tests and metrics.
func (d *ProcessDaemon) Pids() map[string]int {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]int{}
	for id, p := range d.sessions {
		out[id] = p.cmd.Process.Pid
	}
	return out
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
