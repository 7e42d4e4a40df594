package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// fakeGCSModule is the fake GCS the bench runs, at the version go.mod pins.
const fakeGCSModule = "github.com/fsouza/fake-gcs-server"

// FakeGCSProc is fake-gcs-server run as its own process on 127.0.0.1, as
// PERF.md measured it: in the bench process it would compete with the
// bench's reader for CPU and GC, and distort every ratio to the raw GET.
type FakeGCSProc struct {
	Cmd      *exec.Cmd
	Endpoint string // http://127.0.0.1:<port>/storage/v1/
	base     string // http://127.0.0.1:<port>
	client   *http.Client
	done     chan struct{}
	err      error
}

// buildFakeGCS returns the fake-gcs-server binary: $FAKE_GCS_SERVER_BIN if
// set, else `go build` of the module's pinned version into dir.
func buildFakeGCS(ctx context.Context, dir string) (string, error) {
	if p := os.Getenv("FAKE_GCS_SERVER_BIN"); p != "" {
		return p, nil
	}
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "fake-gcs-server")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, fakeGCSModule)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w: %s", fakeGCSModule, err, bytes.TrimSpace(out))
	}
	return bin, nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// StartFakeGCSProc runs bin on a free port of 127.0.0.1 (memory backend),
// its output appended to logPath, and waits until it answers.
func StartFakeGCSProc(bin, logPath string) (*FakeGCSProc, error) {
	var last error
	for range 3 { // the port may be taken between freePort and the bind
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		f, err := startFakeGCSOn(bin, logPath, port)
		if err == nil {
			return f, nil
		}
		last = err
	}
	return nil, last
}

func startFakeGCSOn(bin, logPath string, port int) (*FakeGCSProc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	hostPort := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command(bin, "-scheme", "http", "-host", "127.0.0.1", "-port", strconv.Itoa(port),
		"-public-host", hostPort, "-external-url", "http://"+hostPort, "-backend", "memory", "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group: a Ctrl-C reaches the bench, which stops it by PID
	// after unmounting.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	f := &FakeGCSProc{Cmd: cmd, Endpoint: "http://" + hostPort + "/storage/v1/", base: "http://" + hostPort,
		client: &http.Client{Timeout: 5 * time.Minute}, done: make(chan struct{})}
	go func() { f.err = cmd.Wait(); logf.Close(); close(f.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := f.client.Get(f.Endpoint + "b")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return f, nil
			}
			err = fmt.Errorf("GET %sb: %s", f.Endpoint, resp.Status)
		}
		select {
		case <-f.done:
			return nil, fmt.Errorf("fake-gcs-server exited before it answered: %v (log: %s)", f.err, logPath)
		default:
		}
		if time.Now().After(deadline) {
			_ = f.Stop()
			return nil, fmt.Errorf("fake-gcs-server did not answer within 30 s: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Pid is the fake's process id.
func (f *FakeGCSProc) Pid() int { return f.Cmd.Process.Pid }

// Stop sends SIGTERM to the fake's PID and waits; SIGKILL after 10 s.
func (f *FakeGCSProc) Stop() error {
	f.client.CloseIdleConnections()
	_ = f.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	if err := f.Cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill fake-gcs-server pid %d: %w", f.Pid(), err)
	}
	<-f.done
	return fmt.Errorf("fake-gcs-server pid %d did not stop on SIGTERM; killed", f.Pid())
}

func (f *FakeGCSProc) do(method, u, contentType string, body []byte) error {
	req, err := http.NewRequest(method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := f.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// CreateBucket creates a bucket through the JSON API.
func (f *FakeGCSProc) CreateBucket(name string) error {
	b, _ := json.Marshal(map[string]string{"name": name})
	return f.do(http.MethodPost, f.Endpoint+"b", "application/json", b)
}

// Upload stores an object with a simple media upload.
func (f *FakeGCSProc) Upload(bucket, name string, content []byte) error {
	u := f.base + "/upload/storage/v1/b/" + url.PathEscape(bucket) + "/o?uploadType=media&name=" + url.QueryEscape(name)
	return f.do(http.MethodPost, u, "application/octet-stream", content)
}
