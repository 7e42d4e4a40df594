package mounter

import (
	"context"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Fuzz targets for what reaches the mounter from outside: volume settings
// (volume_context, mount flags, fsGroup, the volume handle's directory) and
// the mounter protocol's requests. `go test` runs their seeds and
// testdata/fuzz; `make fuzz` explores.

// setOps applies ops to v: tab-separated steps, each an op letter and its
// argument ("a" name=value: SetAttribute, "m": SetMountOption, "g":
// SetMountGroup, "d": SetOnlyDir, "r": SetReadOnly). A tab is a control
// character, which no accepted value may hold, so nothing is lost by
// splitting on it. It stops at the first error, which must start with the
// request field it came from; the caller discards v then, as parseVolume
// does.
func setOps(t *testing.T, v *Volume, ops string) error {
	t.Helper()
	for _, op := range strings.Split(ops, "\t") {
		if op == "" {
			continue
		}
		var err error
		var field string
		switch arg := op[1:]; op[0] {
		case 'a':
			name, value, _ := strings.Cut(arg, "=")
			field = "volume_context." + FieldName(name)
			err = v.SetAttribute(name, value)
		case 'm':
			field = "volume_capability.mount.mount_flags"
			err = v.SetMountOption(arg, field)
		case 'g':
			field = "volume_capability.mount.volume_mount_group"
			err = v.SetMountGroup(arg, field)
		case 'd':
			field = "volume_id"
			err = v.SetOnlyDir(arg, field)
		case 'r':
			v.SetReadOnly()
		}
		if err != nil {
			if !strings.HasPrefix(err.Error(), field) {
				t.Fatalf("op %q: error %q does not start with the field %q", op, err, field)
			}
			return err
		}
	}
	return nil
}

// checkArgs asserts what makes a Volume safe to hand to gcsfuse: every
// argument is an allow-listed, never a denied, flag with a canonical valid
// value, without control characters; only-dir cannot leave the bucket.
func checkArgs(t *testing.T, v *Volume) {
	t.Helper()
	var names []string
	for _, a := range v.Args() {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") {
			t.Fatalf("arg %q: want --name=value", a)
		}
		names = append(names, name)
		i := slices.IndexFunc(allowList, func(s flagSpec) bool { return s.flag == name })
		if i < 0 {
			t.Fatalf("arg %q: flag not in the allow-list", a)
		}
		if reason, ok := denied[name]; ok {
			t.Fatalf("arg %q: denied flag (%s)", a, reason)
		}
		if norm, err := allowList[i].normalize(value); err != nil || norm != value {
			t.Fatalf("arg %q: value is not canonical: normalize = %q, %v", a, norm, err)
		}
		if strings.ContainsFunc(value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("arg %q: control character in the value", a)
		}
		if got, _ := v.Flag(name); got != value {
			t.Fatalf("arg %q but Flag(%q) = %q", a, name, got)
		}
		if name == "only-dir" {
			if value == "" || strings.HasPrefix(value, "/") || path.Clean(value) != value || slices.Contains(strings.Split(value, "/"), "..") {
				t.Fatalf("only-dir %q: want a non-empty, relative, clean directory without '..'", value)
			}
			if p := path.Join("/bucket", value); !strings.HasPrefix(p, "/bucket/") {
				t.Fatalf("only-dir %q escapes the bucket root: %q", value, p)
			}
		}
	}
	if !slices.IsSorted(names) || len(slices.Compact(slices.Clone(names))) != len(names) {
		t.Fatalf("Args %q: want sorted, one per flag", v.Args())
	}
	for _, k := range v.KernelOptions() {
		if !slices.Contains(kernelOptions, k) {
			t.Fatalf("kernel option %q is not an allowed one", k)
		}
	}
	if !slices.IsSorted(v.KernelOptions()) {
		t.Fatalf("KernelOptions %q: want sorted", v.KernelOptions())
	}
	if v.ReadOnly() != slices.Contains(v.KernelOptions(), "ro") {
		t.Fatalf("ReadOnly() = %t with kernel options %q", v.ReadOnly(), v.KernelOptions())
	}
}

// checkBucket re-states the GCS naming rules validBucket must enforce.
func checkBucket(t *testing.T, b string) {
	t.Helper()
	ok := len(b) >= 3 && len(b) <= 222 && (len(b) <= 63 || strings.Contains(b, "."))
	ok = ok && !strings.ContainsFunc(b, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	})
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
	ok = ok && alnum(b[0]) && alnum(b[len(b)-1])
	for _, part := range strings.Split(b, ".") {
		ok = ok && part != "" && len(part) <= 63
	}
	if !ok {
		t.Fatalf("NewVolume accepted the invalid bucket name %q", b)
	}
}

func FuzzVolumeSetters(f *testing.F) {
	for _, s := range []struct{ bucket, ops, ops2 string }{
		{"bkt", "auid=1000\tagid=2000\tafileMode=640\tadirMode=0750", "muid=1000\tmgid=2000\tmfile-mode=0640\tm--dir-mode=750"},
		{"bkt", "mimplicit-dirs\tmro\tmo=noexec\tmnoatime", "aimplicitDirs=true\tamountOptions=ro, noexec,noatime"},
		{"bkt", "g1000\tafileMode=0600", "afileMode=0600\tg1000"},
		{"my.bucket-1", "dsub/dir/\taonlyDir=sub/dir", "aonlyDir=sub/dir\tdsub/dir"},
		{"bkt", "ametadataStatCacheCapacity=1Gi\tafileCacheCapacity=512Ki\tametadataTypeCacheCapacity=-1", "mstat-cache-max-size-mb=1024\tmfile-cache-max-size-mb=1"},
		{"bkt", "agcsfuseLoggingSeverity=trace\taskipBucketAccessCheck=yes\tabucketName=bkt", "r\tmrw"},
		{"bkt", "mro\tmrw", "mexec\tmo=noexec"},
		{"bkt", "mkey-file=/etc/shadow", "akey-file=/x\tmconfig-file=/x\tm-o=allow_other\tmo=rootmode=040000"},
		{"bkt", "d../x", "aonlyDir=/abs\tdx/./y\tdx//y\tda,b\tda\nb"},
		{"bkt", "auid=-1\tagid=2147483648\tafileMode=01777\tametadataCacheTTLSeconds=-2", "mmax-retry-attempts=0\tmsequential-read-size-mb=2048\tmuid"},
		{"bkt", "acsi.storage.k8s.io/pod.name=p\taunknown=1\tabucketName=other", "auid=1\tmuid=2"},
		{"Bad_Bucket", "", ""},
		{"b..c", "", ""},
		{"a.b", "", ""},
	} {
		f.Add(s.bucket, s.ops, s.ops2)
	}
	f.Fuzz(func(t *testing.T, bucket, ops, ops2 string) {
		v, err := NewVolume(bucket, "volume_id")
		if err != nil {
			if !strings.HasPrefix(err.Error(), "volume_id: ") {
				t.Fatalf("NewVolume error %q does not name the field", err)
			}
			return
		}
		checkBucket(t, bucket)
		if err := setOps(t, v, ops); err != nil {
			// The caller discards v, yet what it holds must still be safe.
			checkArgs(t, v)
			return
		}
		checkArgs(t, v)
		for _, pair := range [][2]string{{"ro", "rw"}, {"exec", "noexec"}} {
			if k := v.KernelOptions(); slices.Contains(k, pair[0]) && slices.Contains(k, pair[1]) {
				t.Fatalf("accepted contradicting kernel options %q", k)
			}
		}
		// The same settings make the same key and session.
		again, _ := NewVolume(bucket, "volume_id")
		if err := setOps(t, again, ops); err != nil {
			t.Fatalf("replaying %q failed: %v", ops, err)
		}
		const mp = "/var/lib/kubelet/plugins/kubernetes.io/csi/gcsfuse.csi/abc/globalmount"
		if v.Key() != again.Key() || SessionID(mp, v) != SessionID(mp, again) {
			t.Fatalf("same settings, keys %q and %q", v.Key(), again.Key())
		}
		if sid := SessionID(mp, v); !sessionIDRE.MatchString(sid) {
			t.Fatalf("SessionID %q is refused by the daemon", sid)
		}
		// Different settings make different keys: equal keys share one
		// gcsfuse, so a collision serves one volume with another's flags.
		other, _ := NewVolume(bucket, "volume_id")
		if setOps(t, other, ops2) != nil {
			return
		}
		checkArgs(t, other)
		same := slices.Equal(v.Args(), other.Args()) && slices.Equal(v.KernelOptions(), other.KernelOptions())
		if (v.Key() == other.Key()) != same {
			t.Fatalf("Key collision or split: %q %q -> %q\nvs %q %q -> %q", v.Args(), v.KernelOptions(), v.Key(), other.Args(), other.KernelOptions(), other.Key())
		}
	})
}

// fuzzHost is a Host serving a ProcessDaemon (gcsfuse is `exit 0`) on a
// socket in base; base/work is its WorkDir.
type fuzzHost struct {
	root, base, sock string
	pd               *ProcessDaemon
}

func startFuzzHost(f *testing.F) *fuzzHost {
	bin := filepath.Join(f.TempDir(), "fake-gcsfuse")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 0\n"), 0o755); err != nil {
		f.Fatal(err)
	}
	h := &fuzzHost{root: f.TempDir()}
	h.base = filepath.Join(h.root, "a", "b")
	h.sock = filepath.Join(h.base, "m.sock")
	if err := os.MkdirAll(h.base, 0o700); err != nil {
		f.Fatal(err)
	}
	lis, err := net.ListenUnix("unix", &net.UnixAddr{Name: h.sock, Net: "unix"})
	if err != nil {
		f.Fatal(err)
	}
	h.pd = NewProcessDaemon(bin, filepath.Join(h.base, "work"))
	h.pd.Logf = func(string, string, string) {}
	done := make(chan error, 1)
	go func() { done <- (&Host{Daemon: h.pd}).Serve(lis) }()
	f.Cleanup(func() {
		lis.Close()
		if err := <-done; err != nil {
			f.Errorf("Serve: %v", err)
		}
		h.pd.StopAll()
	})
	return h
}

// send writes req (with a pipe's read end attached when withFD) and returns
// the raw answer.
func (h *fuzzHost) send(t *testing.T, req []byte, withFD bool) []byte {
	t.Helper()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: h.sock, Net: "unix"})
	if err != nil {
		t.Fatalf("the host stopped accepting: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var oob []byte
	if withFD {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		oob = unix.UnixRights(int(r.Fd()))
		if len(req) == 0 {
			// Rights need at least one byte to ride on; whitespace keeps
			// the JSON meaning.
			req = []byte(" ")
		}
	}
	if _, _, err := c.WriteMsgUnix(req, oob, nil); err != nil {
		t.Fatalf("send: %v", err)
	}
	_ = c.CloseWrite()
	body, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	return body
}

// tree lists every path under root, relative to it.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil && !os.IsNotExist(err) {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func openFDs(t *testing.T) int {
	t.Helper()
	e, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(e)
}

func FuzzHostRequest(f *testing.F) {
	for _, s := range []struct {
		req    string
		withFD bool
	}{
		{`{"op":"list"}`, false},
		{`{"op":"status","id":"s1"}`, false},
		{`{"op":"stop","id":"s1","stopTimeoutMs":10}`, false},
		{`{"op":"start","session":{"ID":"s1","Bucket":"bkt","Args":["--implicit-dirs"]}}`, false},
		{`{"op":"start","session":{"ID":"s1","Bucket":"bkt","Args":["--implicit-dirs"],"FileCache":true}}`, true},
		{`{"op":"start","session":{"ID":"../x","Bucket":"bkt"}}`, true},
		{`{"op":"start","session":{"ID":"..","Bucket":"bkt","FileCache":true}}`, true},
		{`{"op":"start","session":{"ID":"s2","Bucket":""}}`, true},
		{`{"op":"start"}`, true},
		{`{"op":"stop","id":"../../a","stopTimeoutMs":-9223372036854775808}`, false},
		{`{"op":"status","id":"s1"}`, true},
		{`{"op":"reboot"}`, false},
		{`{"op":1}`, false},
		{`not json`, false},
		{``, false},
		{`{"op":"list"}{"op":"stop"}`, false},
	} {
		f.Add([]byte(s.req), s.withFD)
	}
	h := startFuzzHost(f)
	work := h.pd.WorkDir
	f.Fuzz(func(t *testing.T, req []byte, withFD bool) {
		fds := openFDs(t)
		body := h.send(t, req, withFD)
		var resp wireResponse
		if len(body) == 0 || json.Unmarshal(body, &resp) != nil {
			t.Fatalf("answer %q to %q: want one JSON response", body, req)
		}
		var want wireRequest
		decodes := json.Unmarshal(req, &want) == nil
		switch {
		case !decodes:
			if !strings.HasPrefix(resp.Error, "bad request") && !(len(req) == 0 && strings.HasPrefix(resp.Error, "read request")) {
				t.Fatalf("answer %+v to the undecodable %q: want a bad request", resp, req)
			}
		case want.Op == "start" && (!withFD || want.Session == nil):
			if !strings.Contains(resp.Error, "FUSE fd") {
				t.Fatalf("start %q without an fd or a session: answered %+v", req, resp)
			}
		case want.Op == "start":
			// No session runs between inputs: a valid one starts, no
			// other does.
			valid := sessionIDRE.MatchString(want.Session.ID) && want.Session.Bucket != ""
			if valid != (resp.Error == "") {
				t.Fatalf("start of the session %+v answered %+v", want.Session, resp)
			}
		case want.Op != "start" && want.Op != "status" && want.Op != "stop" && want.Op != "list":
			if !strings.Contains(resp.Error, "unknown op") {
				t.Fatalf("op %q answered %+v", want.Op, resp)
			}
		}
		// The host keeps serving.
		var list wireResponse
		if b := h.send(t, []byte(`{"op":"list"}`), false); json.Unmarshal(b, &list) != nil || list.Error != "" {
			t.Fatalf("list after %q: %q", req, b)
		}
		// Nothing is created outside WorkDir, and inside it only a
		// directory per session (with tmp, cache and the token socket).
		for _, p := range tree(t, h.root) {
			switch p {
			case ".", "a", "a/b", "a/b/m.sock", "a/b/work":
				continue
			}
			rel, err := filepath.Rel(filepath.Join(h.root, "a/b/work"), filepath.Join(h.root, p))
			parts := strings.Split(rel, "/")
			if err != nil || !sessionIDRE.MatchString(parts[0]) || len(parts) > 2 || len(parts) == 2 && parts[1] != "tmp" && parts[1] != "cache" && parts[1] != "token.sock" {
				t.Fatalf("after %q: %s exists", req, p)
			}
		}
		// Sessions end (gcsfuse is `exit 0`) and take their directory along.
		ss, _ := h.pd.List(context.Background())
		for _, s := range ss {
			_ = h.pd.Stop(context.Background(), s.ID)
		}
		if e, _ := os.ReadDir(work); len(e) != 0 {
			t.Fatalf("after %q and every session stopped, WorkDir holds %v", req, e)
		}
		if n := openFDs(t); n != fds {
			t.Fatalf("after %q: %d open fds, %d before", req, n, fds)
		}
	})
}
