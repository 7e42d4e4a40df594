package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestKernelTuning: after a publish, the mount's own kernel settings are
// the ones its profile asks for, applied by the node driver: with the
// kernel reader, what gcsfuse wrote to its --kernel-params-file (read by
// the unprivileged mounter, applied by the root driver); without it, the
// driver's own read-ahead. Read from sysfs for the mount's FUSE connection,
// found in /proc/self/mountinfo.
func TestKernelTuning(t *testing.T) {
	e := newEnv(t)
	// gcsfuse v3.13.0's max_background for a flat bucket: min(max(12,
	// 2*CPUs), 96); congestion_threshold 3/4 of it.
	maxBG := min(max(12, 2*runtime.NumCPU()), 96)
	tests := []struct {
		name       string
		attrs      map[string]string
		readAhead  int
		maxBG      int // 0: not checked (the kernel's default)
		args, nope []string
	}{
		{name: "default", attrs: nil, readAhead: 4096, maxBG: maxBG,
			args: []string{"--enable-kernel-reader=true", "--fuse-max-request-size-kb=1024", "--max-read-ahead-kb=4096", "--kernel-params-file="}},
		{name: "read-ahead attribute", attrs: map[string]string{"readAheadKB": "8192"}, readAhead: 8192, maxBG: maxBG,
			args: []string{"--enable-kernel-reader=true", "--max-read-ahead-kb=8192"}},
		{name: "file-cache profile", attrs: map[string]string{"profile": "file-cache"}, readAhead: 1024,
			args: []string{"--enable-kernel-reader=false", "--file-cache-max-size-mb=10240", "--cache-dir="},
			nope: []string{"--kernel-params-file=", "--max-read-ahead-kb="}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stage, target := e.path(fmt.Sprintf("stage-%d", i)), e.path(fmt.Sprintf("target-%d", i))
			e.mustStage(t, bucket, stage, rwx, tc.attrs)
			req := persistent(bucket, stage, target, rwx, false)
			req.VolumeContext = tc.attrs // kubelet sends the PV's attributes to both
			e.mustPublish(t, req)
			if got, err := os.ReadFile(filepath.Join(target, "a/x.txt")); err != nil || string(got) != fixture["a/x.txt"] {
				t.Fatalf("read through the mount: %q, %v", got, err)
			}
			minor := fuseMinor(t, stage)
			if got := sysInt(t, fmt.Sprintf("/sys/class/bdi/0:%d/read_ahead_kb", minor)); got != tc.readAhead {
				t.Errorf("read_ahead_kb = %d, want %d", got, tc.readAhead)
			}
			if tc.maxBG > 0 {
				if got := sysInt(t, fmt.Sprintf("/sys/fs/fuse/connections/%d/max_background", minor)); got != tc.maxBG {
					t.Errorf("max_background = %d, want %d (from gcsfuse's kernel parameters)", got, tc.maxBG)
				}
				if got := sysInt(t, fmt.Sprintf("/sys/fs/fuse/connections/%d/congestion_threshold", minor)); got != tc.maxBG*3/4 {
					t.Errorf("congestion_threshold = %d, want %d", got, tc.maxBG*3/4)
				}
			}
			argv := e.sessionArgv(t, stage)
			for _, a := range tc.args {
				if !slices.ContainsFunc(argv, func(s string) bool { return strings.HasPrefix(s, a) }) {
					t.Errorf("gcsfuse args lack %s: %q", a, argv)
				}
			}
			for _, a := range tc.nope {
				if slices.ContainsFunc(argv, func(s string) bool { return strings.HasPrefix(s, a) }) {
					t.Errorf("gcsfuse args have %s: %q", a, argv)
				}
			}
		})
	}
	// The node-wide FUSE request limit is never touched.
	if got := sysInt(t, "/proc/sys/fs/fuse/max_pages_limit"); got > 256 {
		t.Logf("max_pages_limit is %d on this machine (someone raised it; the driver does not)", got)
	}
}

// fuseMinor returns the device minor of the FUSE mount at path (its
// connection number), from /proc/self/mountinfo: no stat of the mount.
func fuseMinor(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	minor := -1
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 5 || f[4] != path {
			continue
		}
		maj, mnr, _ := strings.Cut(f[2], ":")
		if maj != "0" {
			t.Fatalf("%s: device %s is not a FUSE connection", path, f[2])
		}
		if minor, err = strconv.Atoi(mnr); err != nil {
			t.Fatal(err)
		}
	}
	if minor < 0 {
		t.Fatalf("%s is not in the mount table", path)
	}
	return minor
}

func sysInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

// sessionArgv is the command line of the gcsfuse serving the mount at path
// (its session id is in the mount source, and in its --temp-dir).
func (e *env) sessionArgv(t *testing.T, path string) []string {
	t.Helper()
	src := ""
	for s, paths := range e.mountsBySource(t) {
		if slices.Contains(paths, path) {
			src = s
		}
	}
	_, sid, ok := strings.Cut(src, ":")
	if !ok {
		t.Fatalf("no session mounted at %s", path)
	}
	for _, pid := range e.gcsfuse(t) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		argv := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if slices.ContainsFunc(argv, func(a string) bool { return strings.HasPrefix(a, "--temp-dir=") && strings.Contains(a, "/"+sid+"/") }) {
			return argv
		}
	}
	t.Fatalf("no gcsfuse serves session %s", sid)
	return nil
}
