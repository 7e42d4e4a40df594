package mounter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func volumeWith(t *testing.T, attrs map[string]string, opts ...string) (*Volume, error) {
	t.Helper()
	v, err := NewVolume("my-bucket", "volume_id")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{AttrProfile, "fileCacheCapacity", "kernelReader", "readAheadKB", "metadataListCacheTTLSeconds"} {
		if val, ok := attrs[k]; ok {
			if err := v.SetAttribute(k, val); err != nil {
				return nil, err
			}
		}
	}
	for _, o := range opts {
		if err := v.SetMountOption(o, "mount_flags"); err != nil {
			return nil, err
		}
	}
	return v, nil
}

// TestProfileExpansion: each profile expands to its vetted flag set, and the
// driver's own read-ahead applies only where gcsfuse does not ask (no
// kernel reader).
func TestProfileExpansion(t *testing.T) {
	const reader = "--enable-kernel-reader=true --fuse-max-request-size-kb=1024 --max-read-ahead-kb=4096"
	tests := []struct {
		profile   string // "" sets no attribute
		args      string
		reader    bool
		readAhead int
		fileCache bool
	}{
		{profile: "", args: reader, reader: true, readAhead: 1024},
		{profile: "default", args: reader, reader: true, readAhead: 1024},
		{profile: "read-mostly", args: "--enable-kernel-reader=true --experimental-enable-dentry-cache=true --experimental-enable-readdirplus=true --fuse-max-request-size-kb=1024 --kernel-list-cache-ttl-secs=60 --max-read-ahead-kb=4096", reader: true, readAhead: 1024},
		{profile: "file-cache", args: "--enable-kernel-reader=false --file-cache-enable-parallel-downloads=true --file-cache-max-size-mb=10240", readAhead: 1024, fileCache: true},
		{profile: "write-heavy", args: "--enable-kernel-reader=false --enable-streaming-writes=true", readAhead: 1024},
	}
	for _, tc := range tests {
		t.Run("profile="+tc.profile, func(t *testing.T) {
			attrs := map[string]string{}
			if tc.profile != "" {
				attrs[AttrProfile] = tc.profile
			}
			v, err := volumeWith(t, attrs)
			if err != nil {
				t.Fatal(err)
			}
			tu := v.Tuning()
			if got := strings.Join(tu.Args(), " "); got != tc.args {
				t.Errorf("args = %q, want %q", got, tc.args)
			}
			if tu.KernelReader != tc.reader || tu.ReadAheadKB != tc.readAhead || tu.FileCache() != tc.fileCache {
				t.Errorf("reader=%t readAhead=%d fileCache=%t, want %t %d %t", tu.KernelReader, tu.ReadAheadKB, tu.FileCache(), tc.reader, tc.readAhead, tc.fileCache)
			}
			// A profile never ships what PERF.md says never to ship.
			for _, bad := range []string{"--metadata-cache-ttl-secs=0", "--stat-cache-max-size-mb=0", "--enable-buffered-read=true"} {
				if strings.Contains(" "+tc.args+" ", " "+bad+" ") {
					t.Errorf("profile ships %s", bad)
				}
			}
		})
	}
}

// TestProfileOverrides: explicit attributes and mount options win over the
// profile; a file cache and the kernel reader exclude each other.
func TestProfileOverrides(t *testing.T) {
	tests := []struct {
		name      string
		attrs     map[string]string
		opts      []string
		args      string // "" with wantErr
		readAhead int
		wantErr   string
	}{
		{name: "explicit read-ahead overrides the profile's",
			attrs: map[string]string{"readAheadKB": "16384"},
			args:  "--enable-kernel-reader=true --fuse-max-request-size-kb=1024 --max-read-ahead-kb=16384", readAhead: 1024},
		{name: "explicit list cache overrides read-mostly's",
			attrs: map[string]string{AttrProfile: "read-mostly", "metadataListCacheTTLSeconds": "5"},
			args:  "--enable-kernel-reader=true --experimental-enable-dentry-cache=true --experimental-enable-readdirplus=true --fuse-max-request-size-kb=1024 --kernel-list-cache-ttl-secs=5 --max-read-ahead-kb=4096", readAhead: 1024},
		{name: "mount option turns the kernel reader off; its read-ahead goes to the driver",
			opts: []string{"enable-kernel-reader=false", "max-read-ahead-kb=2048"},
			args: "--enable-kernel-reader=false", readAhead: 2048},
		{name: "a file cache on the default profile drops the kernel reader",
			attrs: map[string]string{"fileCacheCapacity": "1Gi"},
			args:  "--enable-kernel-reader=false --file-cache-max-size-mb=1024", readAhead: 1024},
		{name: "a file cache as a mount option on read-mostly keeps its metadata caching, drops the kernel reader",
			attrs: map[string]string{AttrProfile: "read-mostly"}, opts: []string{"file-cache-max-size-mb=64"},
			args: "--enable-kernel-reader=false --experimental-enable-dentry-cache=true --experimental-enable-readdirplus=true --file-cache-max-size-mb=64 --kernel-list-cache-ttl-secs=60", readAhead: 1024},
		{name: "file-cache profile with its capacity overridden",
			attrs: map[string]string{AttrProfile: "file-cache", "fileCacheCapacity": "2Gi"},
			args:  "--enable-kernel-reader=false --file-cache-enable-parallel-downloads=true --file-cache-max-size-mb=2048", readAhead: 1024},
		{name: "explicit kernel reader on the file-cache profile drops the profile's file cache",
			attrs: map[string]string{AttrProfile: "file-cache", "kernelReader": "true"},
			args:  "--enable-kernel-reader=true", readAhead: 1024},
		{name: "file cache explicitly off on the file-cache profile",
			attrs: map[string]string{AttrProfile: "file-cache", "fileCacheCapacity": "0"},
			args:  "--enable-kernel-reader=false --file-cache-enable-parallel-downloads=true --file-cache-max-size-mb=0", readAhead: 1024},
		{name: "explicit kernel reader and explicit file cache: refused",
			attrs: map[string]string{"fileCacheCapacity": "1Gi", "kernelReader": "true"}, wantErr: "exclude each other"},
		{name: "the same, the other way round",
			attrs: map[string]string{"kernelReader": "true"}, opts: []string{"file-cache-max-size-mb=10"}, wantErr: "exclude each other"},
		{name: "unknown profile", attrs: map[string]string{AttrProfile: "fast"}, wantErr: `profile="fast": want one of default, read-mostly, file-cache, write-heavy`},
		{name: "request size above the kernel's default max_pages_limit",
			opts: []string{"fuse-max-request-size-kb=4096"}, wantErr: "want an integer from 4 to 1024"},
		{name: "read-ahead out of range", attrs: map[string]string{"readAheadKB": "-1"}, wantErr: "want an integer from 0 to 131072"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := volumeWith(t, tc.attrs, tc.opts...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tu := v.Tuning()
			if got := strings.Join(tu.Args(), " "); got != tc.args {
				t.Errorf("args = %q, want %q", got, tc.args)
			}
			if tu.ReadAheadKB != tc.readAhead {
				t.Errorf("ReadAheadKB = %d, want %d", tu.ReadAheadKB, tc.readAhead)
			}
			if tu.KernelReader && tu.FileCache() {
				t.Errorf("kernel reader and file cache both on: %v", tu.Args())
			}
		})
	}
}

// TestProfileKey: a non-default profile is a different session; naming the
// default profile, or none, keeps the session id volumes had before
// profiles existed.
func TestProfileKey(t *testing.T) {
	key := func(profile string) string {
		attrs := map[string]string{}
		if profile != "" {
			attrs[AttrProfile] = profile
		}
		v, err := volumeWith(t, attrs)
		if err != nil {
			t.Fatal(err)
		}
		return v.Key()
	}
	if key("") != "my-bucket o=" || key("default") != key("") {
		t.Errorf("default keys %q, %q: want %q", key(""), key("default"), "my-bucket o=")
	}
	if key("read-mostly") == key("") || key("read-mostly") == key("write-heavy") {
		t.Errorf("profiles share a key: %q %q", key("read-mostly"), key("write-heavy"))
	}
}

// TestSessionArgsUseProfile: what gcsfuse is started with is the tuned flag
// set plus the driver's own flags; the kernel-params request follows the
// kernel reader.
func TestSessionArgsUseProfile(t *testing.T) {
	m := &Mounter{cfg: Config{MaxRetryAttempts: 5, AtomicRename: true}}
	v, err := volumeWith(t, map[string]string{AttrProfile: "file-cache"}, "uid=1000")
	if err != nil {
		t.Fatal(err)
	}
	tu := v.Tuning()
	got := strings.Join(m.sessionArgs(v, tu), " ")
	want := "--enable-kernel-reader=false --file-cache-enable-parallel-downloads=true --file-cache-max-size-mb=10240 --uid=1000 --gid=0 --max-retry-attempts=5 --trace-exporters="
	if got != want {
		t.Errorf("sessionArgs = %q\nwant %q", got, want)
	}
	if !tu.FileCache() || tu.KernelReader {
		t.Errorf("file-cache profile: FileCache=%t KernelReader=%t", tu.FileCache(), tu.KernelReader)
	}
}

// TestKernelTunerApply: validated values go to the connection's own sysfs
// files; node-wide settings, unknown names and bad values do not.
func TestKernelTunerApply(t *testing.T) {
	dir := t.TempDir()
	bdi, ctl := filepath.Join(dir, "bdi"), filepath.Join(dir, "ctl")
	for _, d := range []string{filepath.Join(bdi, "0:77"), filepath.Join(ctl, "77")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{filepath.Join(bdi, "0:77", "read_ahead_kb"), filepath.Join(ctl, "77", "max_background"), filepath.Join(ctl, "77", "congestion_threshold")} {
		if err := os.WriteFile(f, []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tu := &kernelTuner{bdiDir: bdi, ctlDir: func() (string, error) { return ctl, nil }}
	applied, err := tu.apply(fuseConn{ID: 77, MountPoint: "/m"}, []KernelParam{
		{Name: paramCongestion, Value: "9"}, {Name: paramMaxBackground, Value: "12"}, {Name: paramReadAhead, Value: "4096"},
		{Name: paramMaxPages, Value: "4096"}, {Name: paramHugePages, Value: "always"},
		{Name: "made-up", Value: "1"},
	})
	if got := strings.Join(applied, " "); got != "max-read-ahead-kb=4096 fuse-max-background-requests=12 fuse-congestion-window-threshold=9" {
		t.Errorf("applied %q", got)
	}
	for _, want := range []string{"fuse-max-pages-limit=4096 not applied: it is node-wide", "transparent-hugepages=always not applied", `unknown kernel parameter "made-up"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want it to contain %q", err, want)
		}
	}
	for f, want := range map[string]string{filepath.Join(bdi, "0:77", "read_ahead_kb"): "4096\n", filepath.Join(ctl, "77", "max_background"): "12\n", filepath.Join(ctl, "77", "congestion_threshold"): "9\n"} {
		if b, _ := os.ReadFile(f); string(b) != want {
			t.Errorf("%s = %q, want %q", f, b, want)
		}
	}
	for _, bad := range []KernelParam{{paramReadAhead, "131073"}, {paramReadAhead, "x"}, {paramMaxBackground, "0"}, {paramCongestion, "100000"}} {
		applied, err := tu.apply(fuseConn{ID: 77}, []KernelParam{bad})
		if len(applied) != 0 || err == nil || !strings.Contains(err.Error(), "ignored: want an integer") {
			t.Errorf("%v: applied %v, err %v; want it refused", bad, applied, err)
		}
	}
}

// TestReadKernelParams reads the file format gcsfuse v3.13.0 writes
// (internal/kernelparams.ApplyGKE).
func TestReadKernelParams(t *testing.T) {
	p := filepath.Join(t.TempDir(), kernelParamsName)
	if got, err := readKernelParams(p); got != nil || err != nil {
		t.Fatalf("missing file: %v %v, want nothing", got, err)
	}
	body := `{"request_id":"0b6d","timestamp":"2026-01-12T16:23:05.636831Z","parameters":[{"name":"max-read-ahead-kb","value":"4096"},{"name":"fuse-congestion-window-threshold","value":"9"},{"name":"fuse-max-background-requests","value":"12"}]}`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readKernelParams(p)
	if err != nil || len(got) != 3 || got[0] != (KernelParam{paramReadAhead, "4096"}) || got[2] != (KernelParam{paramMaxBackground, "12"}) {
		t.Fatalf("readKernelParams = %v, %v", got, err)
	}
	if err := os.WriteFile(p, []byte(`{"parameters":[`+strings.Repeat(`{"name":"x","value":"1"},`, 5000)+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := readKernelParams(p); err == nil {
		t.Error("an oversized file was accepted")
	}
}
