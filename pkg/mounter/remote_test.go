package mounter

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
)

// startHost serves a ProcessDaemon running bin on a socket in a temp dir.
func startHost(t *testing.T, bin string, allowed func(uint32) bool) (*RemoteDaemon, *ProcessDaemon) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "mounter.sock")
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	pd := NewProcessDaemon(bin, filepath.Join(dir, "work"))
	done := make(chan error, 1)
	go func() { done <- (&Host{Daemon: pd, Allowed: allowed}).Serve(lis) }()
	t.Cleanup(func() {
		lis.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		pd.StopAll()
	})
	return NewRemoteDaemon(sock), pd
}

// The fd crosses the socket: gcsfuse (here a script) reads from fd 3 what
// the caller wrote into the pipe whose read end it handed over, and the
// caller's copy is closed.
func TestRemoteDaemonPassesTheFd(t *testing.T) {
	out := filepath.Join(t.TempDir(), "got")
	bin := script(t, `cat <&3 > `+out+`; echo "$@" >> `+out+`; while :; do sleep 0.05; done`)
	rd, pd := startHost(t, bin, nil)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	anon := &auth.Credentials{Mode: auth.ModeAnonymous}
	if err := rd.Start(ctx, Session{ID: "s1", Bucket: "bkt", Args: []string{"--implicit-dirs"}, FileCache: true, Credentials: anon}, r); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err == nil {
		t.Error("Start left the caller's copy of the fd open")
	}
	w.WriteString("through the socket\n")
	w.Close()
	var got []byte
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if got, _ = os.ReadFile(out); strings.Count(string(got), "\n") == 2 {
			break
		}
	}
	work := filepath.Join(pd.WorkDir, "s1")
	// Anonymous: no token socket.
	want := "through the socket\n--foreground --log-format=text --implicit-dirs --temp-dir=" + work + "/tmp --cache-dir=" + work + "/cache bkt /dev/fd/3\n"
	if string(got) != want {
		t.Errorf("gcsfuse got %q, want %q", got, want)
	}
	st, err := rd.Status(ctx, "s1")
	if err != nil || !st.Running || st.PID == 0 || st.Bucket != "bkt" || st.Identity != "anonymous" {
		t.Errorf("Status = %+v, %v; want running with a pid", st, err)
	}
	list, err := rd.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "s1" {
		t.Errorf("List = %+v, %v", list, err)
	}
	if _, err := rd.Status(ctx, "nope"); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("Status of an unknown session: %v, want ErrUnknownSession", err)
	}
	// Stop terminates a session that does not exit by itself, and its
	// work dir goes with it.
	sctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if err := rd.Stop(sctx, "s1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("session dir %s after stop: %v, want gone", work, err)
	}
	if list, _ := rd.List(ctx); len(list) != 0 {
		t.Errorf("List after Stop = %+v", list)
	}
}

func TestRemoteDaemonErrors(t *testing.T) {
	bin := script(t, `exit 3`)
	rd, _ := startHost(t, bin, func(uint32) bool { return false })
	err := rd.Start(context.Background(), Session{ID: "s", Bucket: "b"}, devFile(t))
	if err == nil || !strings.Contains(err.Error(), "may not use this mounter") {
		t.Errorf("a refused peer: %v", err)
	}

	rd, _ = startHost(t, bin, nil)
	if err := rd.Start(context.Background(), Session{ID: "../escape", Bucket: "b"}, devFile(t)); err == nil || !strings.Contains(err.Error(), "session id") {
		t.Errorf("a session id that is not a path component: %v", err)
	}

	down := NewRemoteDaemon(filepath.Join(t.TempDir(), "none.sock"))
	dev := devFile(t)
	err = down.Start(context.Background(), Session{ID: "s", Bucket: "b"}, dev)
	if !errors.Is(err, ErrDaemonUnavailable) || !strings.Contains(err.Error(), "none.sock") {
		t.Errorf("no mounter: %v, want ErrDaemonUnavailable naming the socket", err)
	}
	if err := dev.Close(); err == nil {
		t.Error("a failed Start left the caller's copy of the fd open")
	}
}
