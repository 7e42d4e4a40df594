package mounter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// The mounter protocol: one request per connection on a unix stream socket.
// The client writes one JSON request (for "start", with the FUSE fd attached
// to its first byte as SCM_RIGHTS), shuts down its write side, and reads one
// JSON response until EOF. Requests are small and rare (a mount, a stop, a
// status poll while a mount waits for gcsfuse), so a connection each keeps
// both sides stateless across restarts of either.

// maxStopWait bounds how long a stop waits for gcsfuse to exit by itself.
const maxStopWait = 10 * time.Minute

// maxMessage bounds a request or response.
const maxMessage = 4 << 20

type wireRequest struct {
	Op      string   `json:"op"` // start, status, stop, list, refresh, metrics
	Session *Session `json:"session,omitempty"`
	ID      string   `json:"id,omitempty"`
	// StopTimeoutMS is how long stop waits for gcsfuse to exit by itself.
	StopTimeoutMS int64 `json:"stopTimeoutMs,omitempty"`
}

type wireResponse struct {
	Error    string       `json:"error,omitempty"`
	Unknown  bool         `json:"unknown,omitempty"` // ErrUnknownSession
	Sessions []wireStatus `json:"sessions,omitempty"`
	// Metrics answers "metrics" (gcsfuse_metrics.go).
	Metrics []MetricFamily `json:"metrics,omitempty"`
}

type wireStatus struct {
	ID      string    `json:"id"`
	Bucket  string    `json:"bucket"`
	PID     int       `json:"pid"`
	Started time.Time `json:"started"`
	Exited  time.Time `json:"exited"`
	Running bool      `json:"running"`
	// Identity is who the session authenticates as: never a secret.
	Identity string `json:"identity,omitempty"`
	Err      string `json:"err,omitempty"`
	// KernelParams: SessionStatus.KernelParams.
	KernelParams []KernelParam `json:"kernelParams,omitempty"`
}

func toWire(s SessionStatus) wireStatus {
	w := wireStatus{ID: s.ID, Bucket: s.Bucket, PID: s.PID, Started: s.Started, Exited: s.Exited, Running: s.Running, Identity: s.Identity, KernelParams: s.KernelParams}
	if s.Err != nil {
		w.Err = s.Err.Error()
	}
	return w
}

func fromWire(w wireStatus) SessionStatus {
	s := SessionStatus{ID: w.ID, Bucket: w.Bucket, PID: w.PID, Started: w.Started, Exited: w.Exited, Running: w.Running, Identity: w.Identity, KernelParams: w.KernelParams}
	if w.Err != "" {
		s.Err = errors.New(w.Err)
	}
	return s
}

// ErrDaemonUnavailable: the FUSE daemon host (the mounter) cannot be reached.
var ErrDaemonUnavailable = errors.New("FUSE daemon host unavailable")

// RemoteDaemon is a Daemon served by a `gcsfuse-csi mounter` process over a
// unix socket. The node driver can then restart without taking a single
// gcsfuse (and so a single mount) down.
type RemoteDaemon struct {
	Socket string
	// Timeout bounds a call whose context has no deadline.
	Timeout time.Duration
}

// NewRemoteDaemon returns a Daemon talking to the mounter at socket.
func NewRemoteDaemon(socket string) *RemoteDaemon {
	return &RemoteDaemon{Socket: socket, Timeout: 10 * time.Second}
}

// Start implements Daemon.
func (r *RemoteDaemon) Start(ctx context.Context, s Session, dev *os.File) error {
	defer dev.Close()
	_, err := r.call(ctx, wireRequest{Op: "start", Session: &s}, dev)
	return err
}

// Status implements Daemon.
func (r *RemoteDaemon) Status(ctx context.Context, id string) (SessionStatus, error) {
	resp, err := r.call(ctx, wireRequest{Op: "status", ID: id}, nil)
	if err != nil {
		return SessionStatus{}, err
	}
	if len(resp.Sessions) != 1 {
		return SessionStatus{}, fmt.Errorf("mounter answered status of %s with %d sessions", id, len(resp.Sessions))
	}
	return fromWire(resp.Sessions[0]), nil
}

// Stop implements Daemon.
func (r *RemoteDaemon) Stop(ctx context.Context, id string) error {
	wait := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		// Leave the mounter time to answer after its own wait ends.
		wait = time.Until(dl) - time.Second
	}
	if wait < 0 {
		wait = 0
	}
	// The mounter may TERM then KILL after the wait: give the call room.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), wait+10*time.Second)
	defer cancel()
	_, err := r.call(ctx, wireRequest{Op: "stop", ID: id, StopTimeoutMS: wait.Milliseconds()}, nil)
	return err
}

// Refresh implements Daemon.
func (r *RemoteDaemon) Refresh(ctx context.Context, id string, c *auth.Credentials) error {
	_, err := r.call(ctx, wireRequest{Op: "refresh", Session: &Session{ID: id, Credentials: c}}, nil)
	return err
}

// List implements Daemon.
func (r *RemoteDaemon) List(ctx context.Context) ([]SessionStatus, error) {
	resp, err := r.call(ctx, wireRequest{Op: "list"}, nil)
	if err != nil {
		return nil, err
	}
	out := make([]SessionStatus, 0, len(resp.Sessions))
	for _, w := range resp.Sessions {
		out = append(out, fromWire(w))
	}
	return out, nil
}

// Ping checks that the mounter answers.
func (r *RemoteDaemon) Ping(ctx context.Context) error {
	_, err := r.call(ctx, wireRequest{Op: "list"}, nil)
	return err
}

func (r *RemoteDaemon) call(ctx context.Context, req wireRequest, dev *os.File) (*wireResponse, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.Timeout)
		defer cancel()
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", r.Socket)
	if err != nil {
		return nil, fmt.Errorf("the mounter at %s is not reachable (is the mounter running?): %v: %w", r.Socket, err, ErrDaemonUnavailable)
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	payload, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	var oob []byte
	if dev != nil {
		oob = unix.UnixRights(int(dev.Fd()))
	}
	if _, _, err := conn.WriteMsgUnix(payload, oob, nil); err != nil {
		return nil, fmt.Errorf("send %s to the mounter at %s: %v: %w", req.Op, r.Socket, err, ErrDaemonUnavailable)
	}
	_ = conn.CloseWrite()
	body, err := io.ReadAll(io.LimitReader(conn, maxMessage))
	if err != nil || len(body) == 0 {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("no answer to %s from the mounter at %s: %v: %w", req.Op, r.Socket, err, ErrDaemonUnavailable)
	}
	var resp wireResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("bad answer to %s from the mounter at %s: %w", req.Op, r.Socket, err)
	}
	if resp.Unknown {
		return nil, ErrUnknownSession
	}
	if resp.Error != "" {
		return nil, errors.New(resp.Error)
	}
	return &resp, nil
}

// Host serves a ProcessDaemon to node drivers over a unix socket: the
// `gcsfuse-csi mounter` mode. It needs no privilege: it never opens
// /dev/fuse or mounts anything, it only runs gcsfuse on fds it is given.
type Host struct {
	Daemon *ProcessDaemon
	// Allowed reports whether a peer uid may use the host. Nil: uid 0 and
	// the host's own uid.
	Allowed func(uid uint32) bool
}

// Serve answers connections on lis until it is closed.
func (h *Host) Serve(lis *net.UnixListener) error {
	allowed := h.Allowed
	if allowed == nil {
		self := uint32(os.Getuid())
		allowed = func(uid uint32) bool { return uid == 0 || uid == self }
	}
	for {
		c, err := lis.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		go h.handle(c, allowed)
	}
}

func (h *Host) handle(c *net.UnixConn, allowed func(uint32) bool) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	resp := h.answer(c, allowed)
	body, _ := json.Marshal(resp)
	// A request that started gcsfuse stands even if its caller is gone.
	_, _ = c.Write(body)
}

func (h *Host) answer(c *net.UnixConn, allowed func(uint32) bool) wireResponse {
	buf := make([]byte, 64*1024)
	oob := make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return wireResponse{Error: "read request: " + err.Error()}
	}
	fds, err := parseRights(oob[:oobn])
	if err != nil {
		return wireResponse{Error: err.Error()}
	}
	var dev *os.File
	for i, fd := range fds {
		if i == 0 {
			dev = os.NewFile(uintptr(fd), "fuse")
		} else {
			unix.Close(fd) // more than asked for: never keep a stray copy
		}
	}
	defer func() {
		if dev != nil {
			dev.Close()
		}
	}()
	rest, err := io.ReadAll(io.LimitReader(c, maxMessage))
	if err != nil {
		return wireResponse{Error: "read request: " + err.Error()}
	}
	// Checked after reading, so the refusal reaches the peer instead of a
	// reset; a refused peer's fds are closed unused.
	if uid, err := peerUID(c); err != nil || !allowed(uid) {
		klog.InfoS("refused a connection", "peerUID", uid, "err", err)
		return wireResponse{Error: fmt.Sprintf("uid %d may not use this mounter (only root and uid %d may)", uid, os.Getuid())}
	}
	var req wireRequest
	if err := json.Unmarshal(append(buf[:n], rest...), &req); err != nil {
		return wireResponse{Error: "bad request: " + err.Error()}
	}
	ctx := context.Background()
	switch req.Op {
	case "start":
		if req.Session == nil || dev == nil {
			return wireResponse{Error: "start needs a session and a FUSE fd"}
		}
		d := dev
		dev = nil // Start owns it now
		if err := h.Daemon.Start(ctx, *req.Session, d); err != nil {
			return wireResponse{Error: err.Error()}
		}
		return wireResponse{}
	case "status":
		st, err := h.Daemon.Status(ctx, req.ID)
		if errors.Is(err, ErrUnknownSession) {
			return wireResponse{Unknown: true}
		}
		return wireResponse{Sessions: []wireStatus{toWire(st)}}
	case "stop":
		// Bounded: a huge value would overflow into a negative duration.
		wait := time.Duration(min(max(req.StopTimeoutMS, 0), maxStopWait.Milliseconds())) * time.Millisecond
		ctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		if err := h.Daemon.Stop(ctx, req.ID); err != nil {
			return wireResponse{Error: err.Error()}
		}
		return wireResponse{}
	case "refresh":
		if req.Session == nil || req.Session.Credentials == nil {
			return wireResponse{Error: "refresh needs a session id and credentials"}
		}
		err := h.Daemon.Refresh(ctx, req.Session.ID, req.Session.Credentials)
		if errors.Is(err, ErrUnknownSession) {
			return wireResponse{Unknown: true}
		}
		if err != nil {
			return wireResponse{Error: err.Error()}
		}
		return wireResponse{}
	case "metrics":
		fams, err := h.Daemon.Metrics(ctx)
		if err != nil {
			return wireResponse{Error: err.Error()}
		}
		return wireResponse{Metrics: fams}
	case "list":
		list, _ := h.Daemon.List(ctx)
		out := make([]wireStatus, 0, len(list))
		for _, s := range list {
			out = append(out, toWire(s))
		}
		return wireResponse{Sessions: out}
	default:
		return wireResponse{Error: fmt.Sprintf("unknown op %q: want start, status, stop, list, refresh or metrics", req.Op)}
	}
}

func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return 0, err
	}
	if serr != nil {
		return 0, serr
	}
	return cred.Uid, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parse control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		fds = append(fds, rights...)
	}
	return fds, nil
}
