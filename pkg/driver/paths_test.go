package driver

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
)

// Paths outside kubelet's directory, inside the driver's state dir, or
// reached through a symlink that leads out are refused before anything is
// mounted or unmounted; the driver's own session mounts cannot be named.
func TestNodePathsAreConfined(t *testing.T) {
	e := newEnv(t)
	kubelet := e.dir
	outside := t.TempDir()
	if err := os.MkdirAll(filepath.Join(kubelet, "pods", "u"), 0o755); err != nil {
		t.Fatal(err)
	}
	// A symlink in kubelet's tree pointing out of it, and one pointing at
	// the state dir.
	if err := os.Symlink(outside, filepath.Join(kubelet, "pods", "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(kubelet, "state"), filepath.Join(kubelet, "pods", "state-link")); err != nil {
		t.Fatal(err)
	}
	// A target that is itself a symlink (to a directory inside kubelet's).
	if err := os.Symlink(filepath.Join(kubelet, "pods", "u"), filepath.Join(kubelet, "pods", "link-target")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, want string
	}{
		{"outside the kubelet dir", filepath.Join(outside, "t"), "outside the kubelet directory"},
		{"the kubelet dir itself", kubelet, "outside the kubelet directory"},
		{"a sibling with the same prefix", kubelet + "-other/t", "outside the kubelet directory"},
		{"inside the state dir", filepath.Join(kubelet, "state", "inline", "0123456789abcdef"), "inside the driver's state directory"},
		{"through a symlink out", filepath.Join(kubelet, "pods", "escape", "mount"), "leads through a symlink"},
		{"through a symlink to the state dir", filepath.Join(kubelet, "pods", "state-link", "inline"), "leads through a symlink"},
		{"a symlink itself", filepath.Join(kubelet, "pods", "link-target"), "is a symlink"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, e.publish("bkt", e.path("stage"), tc.path, false), codes.InvalidArgument, tc.want)
			wantCode(t, e.unpublish(tc.path), codes.InvalidArgument, tc.want)
			wantCode(t, e.stage("bkt", tc.path), codes.InvalidArgument, tc.want)
			wantCode(t, e.unstage("bkt", tc.path), codes.InvalidArgument, tc.want)
			if _, err := e.stats("bkt", tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("stats: %v, want NotFound saying %q", err, tc.want)
			}
		})
	}
	if e.daemon.Starts != 0 || len(e.fm.MountPoints) != 0 {
		t.Errorf("refused paths started %d gcsfuse and left mounts %v", e.daemon.Starts, e.mounts())
	}
	if _, err := os.Stat(filepath.Join(outside, "t")); err == nil {
		t.Error("a directory was created outside the kubelet dir")
	}

	// An inline session mount cannot be unpublished by naming it.
	target := filepath.Join(kubelet, "pods", "u", "mount")
	if err := e.publishInline(target, "bkt"); err != nil {
		t.Fatal(err)
	}
	var session string
	for _, mp := range e.fm.MountPoints {
		if strings.Contains(mp.Path, "/state/inline/") {
			session = mp.Path
		}
	}
	wantCode(t, e.unpublish(session), codes.InvalidArgument, "inside the driver's state directory")
	if e.daemon.Count() != 1 {
		t.Errorf("the session was torn down through its own mount point")
	}
	if err := e.unpublish(target); err != nil {
		t.Fatal(err)
	}
}
