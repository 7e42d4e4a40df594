package mounter

import (
	"strings"
	"testing"
)

func TestMountOptionsAccepted(t *testing.T) {
	tests := []struct {
		name    string
		opts    []string
		args    []string
		kernel  []string
		keyHint string
	}{
		{name: "bool flag bare", opts: []string{"implicit-dirs"}, args: []string{"--implicit-dirs=true"}},
		{name: "leading dashes", opts: []string{"--implicit-dirs=false"}, args: []string{"--implicit-dirs=false"}},
		{name: "ids and modes normalised", opts: []string{"uid=1000", "gid=2000", "file-mode=640", "dir-mode=0750"},
			args: []string{"--dir-mode=0750", "--file-mode=0640", "--gid=2000", "--uid=1000"}},
		{name: "size in MiB and as quantity", opts: []string{"stat-cache-max-size-mb=32", "file-cache-max-size-mb=1Gi"},
			args: []string{"--file-cache-max-size-mb=1024", "--stat-cache-max-size-mb=32"}},
		{name: "unlimited stat cache", opts: []string{"stat-cache-max-size-mb=-1"}, args: []string{"--stat-cache-max-size-mb=-1"}},
		{name: "kernel options bare and o=", opts: []string{"ro", "o=noexec", "noatime"}, kernel: []string{"noatime", "noexec", "ro"}},
		{name: "same value twice is fine", opts: []string{"uid=5", "uid=5"}, args: []string{"--uid=5"}},
		{name: "empty entries ignored", opts: []string{"", "implicit-dirs"}, args: []string{"--implicit-dirs=true"}},
		{name: "enum", opts: []string{"log-severity=warning"}, args: []string{"--log-severity=warning"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVolume("my-bucket", "volume_id")
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range tc.opts {
				if err := v.SetMountOption(o, "mount_flags"); err != nil {
					t.Fatalf("SetMountOption(%q): %v", o, err)
				}
			}
			if got := strings.Join(v.Args(), " "); got != strings.Join(tc.args, " ") {
				t.Errorf("Args() = %q, want %q", got, strings.Join(tc.args, " "))
			}
			if got := strings.Join(v.KernelOptions(), ","); got != strings.Join(tc.kernel, ",") {
				t.Errorf("KernelOptions() = %q, want %q", got, strings.Join(tc.kernel, ","))
			}
		})
	}
}

func TestMountOptionsRejected(t *testing.T) {
	tests := []struct {
		opt  string
		want string // substring of the error
	}{
		{"key-file=/etc/shadow", `"key-file" is not allowed: credentials`},
		{"config-file=/tmp/c.yaml", `"config-file" is not allowed`},
		{"log-file=/var/log/x", `"log-file" is not allowed`},
		{"cache-dir=/", `"cache-dir" is not allowed`},
		{"temp-dir=/", `"temp-dir" is not allowed`},
		{"token-url=http://x", `"token-url" is not allowed`},
		{"reuse-token-from-url=true", `"reuse-token-from-url" is not allowed`},
		{"custom-endpoint=http://evil", `"custom-endpoint" is not allowed`},
		{"foreground", `"foreground" is not allowed`},
		{"prometheus-port=9100", `"prometheus-port" is not allowed: it would open a port`},
		{"billing-project=p", `"billing-project" is not allowed`},
		{"o=allow_other", `"allow_other" is not allowed`},
		{"allow_other", `"allow_other" is not allowed`},
		{"o=suid", `"suid" is not allowed: the driver always mounts nosuid`},
		{"dev", `"dev" is not allowed`},
		{"o=max_read=4096", `kernel option "max_read=4096" is not allowed`},
		{"o=context=x", `kernel option "context=x" is not allowed`},
		{"nosuchflag=1", `unknown or unsupported mount option "nosuchflag"`},
		{"uid=-1", `uid="-1": want an integer from 0 to 2147483647`},
		{"uid=abc", `uid="abc"`},
		{"file-mode=0999", `file-mode="0999": want octal`},
		{"file-mode=01777", `file-mode="01777"`},
		{"uid", `mount option "uid" needs a value`},
		{"implicit-dirs=maybe", `"maybe" is not a boolean`},
		{"stat-cache-max-size-mb=-2", `stat-cache-max-size-mb="-2"`},
		{"file-cache-max-size-mb=-1", `file-cache-max-size-mb="-1"`},
		{"max-retry-attempts=0", `max-retry-attempts="0": want an integer from 1 to 30`},
		{"log-severity=loud", `want one of trace, debug`},
		{"only-dir=../etc", `path segments may not be empty, '.' or '..'`},
		{"only-dir=/abs", `without a leading '/'`},
		{"only-dir=a//b", `path segments may not be empty`},
	}
	for _, tc := range tests {
		t.Run(tc.opt, func(t *testing.T) {
			v, _ := NewVolume("my-bucket", "volume_id")
			err := v.SetMountOption(tc.opt, "volume_capability.mount.mount_flags")
			if err == nil {
				t.Fatalf("SetMountOption(%q) accepted; args %v", tc.opt, v.Args())
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "volume_capability.mount.mount_flags") {
				t.Errorf("error %q: want it to contain %q and name the field", err, tc.want)
			}
		})
	}
}

func TestAttributes(t *testing.T) {
	v, _ := NewVolume("my-bucket", "volume_id")
	attrs := map[string]string{
		"onlyDir": "data/2024/", "implicitDirs": "true", "uid": "1001", "gid": "2002", "fileMode": "0640", "dirMode": "0750",
		"metadataCacheTTLSeconds": "60", "metadataStatCacheCapacity": "32Mi", "metadataTypeCacheCapacity": "4Mi",
		"fileCacheCapacity": "10Gi", "gcsfuseLoggingSeverity": "error", "mountOptions": "rename-dir-limit=100, o=noatime",
		"bucketName": "my-bucket", "csi.storage.k8s.io/pod.name": "p", "skipBucketAccessCheck": "true",
	}
	for k, val := range attrs {
		if err := v.SetAttribute(k, val); err != nil {
			t.Fatalf("SetAttribute(%q, %q): %v", k, val, err)
		}
	}
	want := "--dir-mode=0750 --file-cache-max-size-mb=10240 --file-mode=0640 --gid=2002 --implicit-dirs=true --log-severity=error " +
		"--metadata-cache-ttl-secs=60 --only-dir=data/2024 --rename-dir-limit=100 --stat-cache-max-size-mb=32 --type-cache-max-size-mb=4 --uid=1001"
	if got := strings.Join(v.Args(), " "); got != want {
		t.Errorf("Args() =\n %s\nwant\n %s", got, want)
	}
	if !v.SkipAccessCheck || strings.Join(v.KernelOptions(), ",") != "noatime" {
		t.Errorf("SkipAccessCheck=%t kernel=%v", v.SkipAccessCheck, v.KernelOptions())
	}
}

func TestAttributesRejected(t *testing.T) {
	tests := []struct {
		attrs map[string]string
		want  string
	}{
		{map[string]string{"keyFile": "/x"}, "volume_context.keyFile: unknown volume attribute; allowed: bucketName"},
		{map[string]string{"bucketName": "other"}, `volume_context.bucketName="other" does not match the volume's bucket "my-bucket"`},
		{map[string]string{"mountOptions": "implicit-dirs,key-file=/x"}, `volume_context.mountOptions: mount option "key-file" is not allowed`},
		{map[string]string{"uid": "1", "mountOptions": "uid=2"}, "volume_context.uid already set it to 1"},
		{map[string]string{"fileCacheCapacity": "lots"}, `volume_context.fileCacheCapacity: file-cache-max-size-mb="lots"`},
		{map[string]string{"skipBucketAccessCheck": "perhaps"}, `volume_context.skipBucketAccessCheck: "perhaps" is not a boolean`},
		{map[string]string{"mountOptions": "ro,rw"}, `"ro" and "rw" contradict`},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			v, _ := NewVolume("my-bucket", "volume_id")
			var err error
			for _, k := range []string{"uid", "bucketName", "keyFile", "fileCacheCapacity", "skipBucketAccessCheck", "mountOptions"} {
				if val, ok := tc.attrs[k]; ok && err == nil {
					err = v.SetAttribute(k, val)
				}
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestMountGroup(t *testing.T) {
	v, _ := NewVolume("b-1", "volume_id")
	if err := v.SetMountGroup("3000", "volume_mount_group"); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(v.Args(), " "); got != "--dir-mode=0775 --file-mode=0664 --gid=3000" {
		t.Errorf("fsGroup args = %q", got)
	}
	v, _ = NewVolume("b-1", "volume_id")
	_ = v.SetMountOption("file-mode=0600", "mount_flags")
	_ = v.SetMountGroup("3000", "volume_mount_group")
	if got, _ := v.Flag("file-mode"); got != "0600" {
		t.Errorf("explicit file-mode overridden by fsGroup: %s", got)
	}
	v, _ = NewVolume("b-1", "volume_id")
	_ = v.SetMountOption("gid=1", "mount_flags")
	if err := v.SetMountGroup("3000", "volume_mount_group"); err == nil || !strings.Contains(err.Error(), "mount_flags already set it to 1") {
		t.Errorf("conflicting gid and fsGroup: %v", err)
	}
}

func TestBucketNames(t *testing.T) {
	for _, ok := range []string{"abc", "my-bucket_1", "a.b.c", "x1" + strings.Repeat("y", 60)} {
		if _, err := NewVolume(ok, "volume_id"); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "ab", "UPPER", "-lead", "trail-", "a..b", "has/slash", "sp ace", strings.Repeat("a", 64), "a." + strings.Repeat("b", 64)} {
		if _, err := NewVolume(bad, "volume_id"); err == nil || !strings.Contains(err.Error(), "volume_id: invalid bucket name") {
			t.Errorf("%q: got %v, want invalid bucket name naming volume_id", bad, err)
		}
	}
}

func TestSessionIDsDiffer(t *testing.T) {
	a, _ := NewVolume("b-1", "v")
	b, _ := NewVolume("b-1", "v")
	_ = b.SetMountOption("implicit-dirs", "f")
	if SessionID("/m", a) == SessionID("/m", b) {
		t.Error("different options share a session id")
	}
	if SessionID("/m", a) == SessionID("/n", a) {
		t.Error("different mount points share a session id")
	}
	c, _ := NewVolume("b-1", "v")
	if SessionID("/m", a) != SessionID("/m", c) {
		t.Error("same volume and mount point give different session ids")
	}
}

func TestDurationAttribute(t *testing.T) {
	for _, tc := range []struct{ in, want, err string }{
		{"90s", "--http-client-timeout=1m30s", ""},
		{"2m", "--http-client-timeout=2m0s", ""},
		{"0", "--http-client-timeout=0s", ""},
		{"500ms", "", "want 0 (no limit) or a duration from 1s to 1h"},
		{"2h", "", "want 0 (no limit) or a duration from 1s to 1h"},
		{"30", "", "want 0 (no limit) or a duration from 1s to 1h"},
		{"-5s", "", "want 0 (no limit) or a duration from 1s to 1h"},
	} {
		v, _ := NewVolume("bkt", "volume_id")
		err := v.SetAttribute("httpClientTimeout", tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), "volume_context.httpClientTimeout") {
				t.Errorf("%q: error %v, want one naming the field and saying %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || strings.Join(v.Args(), " ") != tc.want {
			t.Errorf("%q: args %v, %v; want %s", tc.in, v.Args(), err, tc.want)
		}
	}
}
