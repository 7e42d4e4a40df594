package mounter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// script writes an executable shell script standing in for gcsfuse: these
// tests are about process supervision, not FUSE.
func script(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "fake-gcsfuse")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func devFile(t *testing.T) *os.File {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	return r
}

func waitExited(t *testing.T, d *ProcessDaemon, id string) SessionStatus {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		st, err := d.Status(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if !st.Running {
			return st
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("session still running")
	return SessionStatus{}
}

func TestProcessDaemonReportsWhyGcsfuseDied(t *testing.T) {
	bin := script(t, `echo 'time="x" severity=INFO message="starting"'
echo 'time="x" severity=ERROR message="Error while mounting gcsfuse: bucket \"nope\" does not exist"'
exit 1`)
	d := NewProcessDaemon(bin, t.TempDir())
	dev := devFile(t)
	if err := d.Start(context.Background(), Session{ID: "s1", Bucket: "nope"}, dev); err != nil {
		t.Fatal(err)
	}
	if err := dev.Close(); err == nil {
		t.Error("Start left the FUSE fd open in the caller: a dead daemon would hang reads instead of failing")
	}
	st := waitExited(t, d, "s1")
	if st.Err == nil || !strings.Contains(st.Err.Error(), `bucket "nope" does not exist`) || !strings.Contains(st.Err.Error(), "exit status 1") {
		t.Errorf("status error %v: want the exit status and gcsfuse's error line", st.Err)
	}
	if err := d.Stop(context.Background(), "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Status(context.Background(), "s1"); err != ErrUnknownSession {
		t.Errorf("after Stop: %v, want ErrUnknownSession", err)
	}
}

func TestProcessDaemonPassesFdAndArgs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "argv")
	bin := script(t, `echo "$@" > `+out+`; [ -e /dev/fd/3 ] && echo fd3 >> `+out)
	d := NewProcessDaemon(bin, t.TempDir())
	if err := d.Start(context.Background(), Session{ID: "s", Bucket: "b", Args: []string{"--uid=7"}}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	waitExited(t, d, "s")
	got, _ := os.ReadFile(out)
	// No credentials given: the node's, served on the session's socket.
	if want := "--foreground --log-format=text --uid=7 --temp-dir=" + filepath.Join(d.WorkDir, "s", "tmp") + " --token-url=unix://" + filepath.Join(d.WorkDir, "s", "token.sock") + " b /dev/fd/3\nfd3\n"; string(got) != want {
		t.Errorf("gcsfuse saw %q, want %q", got, want)
	}
}

func TestProcessDaemonStopTerminatesAndReaps(t *testing.T) {
	bin := script(t, `trap 'exit 0' TERM; while :; do sleep 0.05; done`)
	d := NewProcessDaemon(bin, t.TempDir())
	if err := d.Start(context.Background(), Session{ID: "s", Bucket: "b"}, devFile(t)); err != nil {
		t.Fatal(err)
	}
	list, _ := d.List(context.Background())
	if len(list) != 1 || !list[0].Running || list[0].PID == 0 {
		t.Fatalf("List = %+v, want one running session", list)
	}
	pid := list[0].PID
	if err := d.Start(context.Background(), Session{ID: "s", Bucket: "b"}, devFile(t)); err == nil {
		t.Error("a second Start of a running session succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := d.Stop(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	// Reaped: the pid no longer exists (not even as a zombie).
	if err := syscall.Kill(pid, 0); err != syscall.ESRCH {
		t.Errorf("pid %d after Stop: kill(0) = %v, want ESRCH", pid, err)
	}
}
