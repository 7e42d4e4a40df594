package driver

import (
	"fmt"
	"maps"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
)

// Fuzz targets for the parsers of what kubelet sends (NodeStage and
// NodePublish requests, paths) and of the volume_condition this driver
// writes for kubelet to read. `go test` runs their seeds and testdata/fuzz;
// `make fuzz` explores.

// fuzzContext reads a volume_context written as "key=value" lines.
func fuzzContext(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// fuzzCapability builds a mount (or, with block, a block) capability; each
// line of flags is one mount_flags entry.
func fuzzCapability(flags, group, fsType string, mode int32, block bool) *csi.VolumeCapability {
	vc := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_Mode(mode)}}
	if block {
		vc.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		return vc
	}
	m := &csi.VolumeCapability_MountVolume{FsType: fsType, VolumeMountGroup: group}
	if flags != "" {
		m.MountFlags = strings.Split(flags, "\n")
	}
	vc.AccessType = &csi.VolumeCapability_Mount{Mount: m}
	return vc
}

// checkInvalid asserts a refusal is InvalidArgument and starts with the
// request field to fix; a volume_context field must be one of attrs' keys.
func checkInvalid(t *testing.T, err error, attrs map[string]string, ephemeral bool) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("error %v: want InvalidArgument", err)
	}
	msg := st.Message()
	// Fields a request may lack: its secrets, and what kubelet or the
	// driver's flags would fill in.
	for _, field := range []string{"volume_id", "staging_target_path", "target_path", "volume_capability", "secrets",
		"volume_context." + mounter.AttrTokens, "volume_context." + mounter.AttrProvider} {
		if strings.HasPrefix(msg, field) {
			return
		}
	}
	if ephemeral && strings.HasPrefix(msg, "volume_context.bucketName") {
		return
	}
	for k := range attrs {
		if strings.HasPrefix(msg, "volume_context."+mounter.FieldName(k)) {
			return
		}
	}
	t.Fatalf("error %q does not start with the request field to fix (volume_context keys %q)", msg, slices.Sorted(maps.Keys(attrs)))
}

// checkPath asserts what every accepted node path must be.
func checkPath(t *testing.T, field, p string) {
	t.Helper()
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.ContainsRune(p, 0) || slices.Contains(strings.Split(p, "/"), "..") {
		t.Fatalf("%s=%q accepted: want absolute, clean, no '..', no NUL", field, p)
	}
}

// checkVolume asserts what makes a parsed Volume safe to hand to gcsfuse,
// through the exported API only (package mounter's own fuzz test checks
// the allow-list tables themselves).
func checkVolume(t *testing.T, v *mounter.Volume, volumeID string, attrs map[string]string, mode int32, ephemeral bool) {
	t.Helper()
	if _, err := mounter.NewVolume(v.Bucket, "bucket"); err != nil {
		t.Fatalf("parsed an invalid bucket: %v", err)
	}
	if ephemeral {
		if v.Bucket != attrs[mounter.AttrBucketName] {
			t.Fatalf("inline volume serves bucket %q, volume_context.bucketName is %q", v.Bucket, attrs[mounter.AttrBucketName])
		}
	} else {
		bucket, dir, _ := strings.Cut(volumeID, "/")
		if v.Bucket != bucket {
			t.Fatalf("volume_id %q serves bucket %q", volumeID, v.Bucket)
		}
		if got, _ := v.Flag("only-dir"); dir != "" && got != strings.TrimSuffix(dir, "/") {
			t.Fatalf("volume_id %q serves directory %q", volumeID, got)
		}
	}
	allowed := mounter.MountOptionNames()
	rebuilt, _ := mounter.NewVolume(v.Bucket, "bucket")
	for _, a := range v.Args() {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !ok || !strings.HasPrefix(a, "--") || !slices.Contains(allowed, name) {
			t.Fatalf("arg %q: want --name=value with an allowed name", a)
		}
		if strings.ContainsFunc(value, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("arg %q: control character in the value", a)
		}
		if name == "only-dir" && (value == "" || path.IsAbs(value) || path.Clean(value) != value || slices.Contains(strings.Split(value, "/"), "..")) {
			t.Fatalf("only-dir %q: want a non-empty, relative, clean directory without '..'", value)
		}
		// Canonical: the arg, given back as a mount option, means itself.
		if err := rebuilt.SetMountOption(a, "arg"); err != nil {
			t.Fatalf("arg %q is refused as a mount option: %v", a, err)
		}
	}
	if !slices.Equal(rebuilt.Args(), v.Args()) {
		t.Fatalf("args %q read back as %q", v.Args(), rebuilt.Args())
	}
	k := v.KernelOptions()
	for _, o := range k {
		if !slices.Contains(allowed, o) || strings.ContainsRune(o, '=') {
			t.Fatalf("kernel option %q is not an allowed one", o)
		}
	}
	if slices.Contains(k, "ro") && slices.Contains(k, "rw") || slices.Contains(k, "exec") && slices.Contains(k, "noexec") {
		t.Fatalf("contradicting kernel options %q accepted", k)
	}
	if slices.Contains(readerOnly, csi.VolumeCapability_AccessMode_Mode(mode)) && !v.ReadOnly() {
		t.Fatalf("access mode %d is reader-only but the volume is writable", mode)
	}
}

func FuzzParseStage(f *testing.F) {
	ctx := "implicitDirs=true\nuid=1000\nmountOptions=gid=2000,file-mode=0640\nskipBucketAccessCheck=false\ncsi.storage.k8s.io/pvc/name=p"
	for _, s := range []struct {
		volumeID, staging, ctx, flags, group, fsType string
		mode                                         int32
		block                                        bool
	}{
		{"bkt", "/var/lib/kubelet/plugins/kubernetes.io/csi/gcsfuse.csi/abc/globalmount", "", "", "", "", 1, false},
		{"my.bucket/sub/dir/", "/stage/", ctx, "implicit-dirs,ro\nuid=1000", "3000", "fuse", 5, false},
		{"bkt", "/stage", "onlyDir=a/b\nbucketName=bkt", "--max-retry-attempts=3\no=noexec", "", "gcsfuse", 7, false},
		{"bkt", "/stage", "", "", "", "ext4", 1, false},
		{"bkt", "/stage", "", "", "", "", 1, true},
		{"bkt", "/stage", "", "", "", "", 0, false},
		{"bkt", "/stage", "", "", "", "", 99, false},
		{"", "/stage", "", "", "", "", 1, false},
		{"bkt", "", "", "", "", "", 1, false},
		{"bkt", "stage", "", "", "", "", 1, false},
		{"bkt", "/a/../stage", "", "", "", "", 1, false},
		{"bkt", "/a/./stage", "", "", "", "", 1, false},
		{"bkt", "/a\x00b", "", "", "", "", 1, false},
		{"bkt/../x", "/stage", "", "", "", "", 1, false},
		{"bkt//x", "/stage", "", "", "", "", 1, false},
		{"Bkt", "/stage", "", "", "", "", 1, false},
		{"bkt", "/stage", "key-file=/etc/shadow", "", "", "", 1, false},
		{"bkt", "/stage", "mountOptions=config-file=/x", "", "", "", 1, false},
		{"bkt", "/stage", "bucketName=other", "", "", "", 1, false},
		{"bkt", "/stage", "uid=1", "uid=2", "", "", 1, false},
		{"bkt", "/stage", "", "ro\nrw", "", "", 1, false},
		{"bkt", "/stage", "fileMode=0600", "", "-1", "", 1, false},
		{"bkt", "/stage", "onlyDir=x\ny", "", "", "", 1, false},
		{"bkt", "/stage", "=", "", "", "", 1, false},
	} {
		f.Add(s.volumeID, s.staging, s.ctx, s.flags, s.group, s.fsType, s.mode, s.block)
	}
	f.Fuzz(func(t *testing.T, volumeID, staging, ctx, flags, group, fsType string, mode int32, block bool) {
		attrs := fuzzContext(ctx)
		req := &csi.NodeStageVolumeRequest{VolumeId: volumeID, StagingTargetPath: staging, VolumeContext: attrs,
			VolumeCapability: fuzzCapability(flags, group, fsType, mode, block)}
		r, err := parseStage(req)
		if err != nil {
			checkInvalid(t, err, attrs, false)
			return
		}
		if r.volumeID != volumeID {
			t.Fatalf("volume id %q parsed as %q", volumeID, r.volumeID)
		}
		checkPath(t, "staging_target_path", r.stagingPath)
		checkVolume(t, r.volume, volumeID, attrs, mode, false)
	})
}

func FuzzParsePublish(f *testing.F) {
	for _, s := range []struct {
		volumeID, target, staging, ctx, flags, group string
		mode                                         int32
		readOnly, ephemeral                          bool
	}{
		{"bkt", "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount", "/var/lib/kubelet/plugins/kubernetes.io/csi/gcsfuse.csi/abc/globalmount", "", "", "", 1, false, false},
		{"bkt/dir", "/target", "/stage", "uid=1000", "implicit-dirs", "2000", 7, true, false},
		{"csi-0123", "/target", "", "bucketName=bkt\ncsi.storage.k8s.io/pod.name=p\nfileCacheCapacity=1Gi", "", "", 1, false, true},
		{"csi-0123", "/target", "", "bucketName=bkt\nonlyDir=a/b\nmountOptions=o=noexec,noatime", "", "", 5, true, true},
		{"csi-0123", "/target", "", "", "", "", 1, false, true},
		{"csi-0123", "/target", "", "bucketName=BKT", "", "", 1, false, true},
		{"csi-0123", "/target", "", "bucketName=bkt\nonlyDir=../x", "", "", 1, false, true},
		{"bkt", "/target", "", "", "", "", 1, false, false},
		{"bkt", "/target", "stage", "", "", "", 1, false, false},
		{"bkt", "/", "/stage", "", "", "", 1, false, false},
		{"bkt", "/t/..", "/stage", "", "", "", 1, false, false},
		{"bkt", "/target", "/stage", "", "", "", 6, false, false},
		{"bkt", "/target", "/stage", "", "ro,rw", "", 1, false, false},
		{"bkt", "/target", "/stage", "", "", "x", 1, false, false},
	} {
		f.Add(s.volumeID, s.target, s.staging, s.ctx, s.flags, s.group, s.mode, s.readOnly, s.ephemeral)
	}
	f.Fuzz(func(t *testing.T, volumeID, target, staging, ctx, flags, group string, mode int32, readOnly, ephemeral bool) {
		attrs := fuzzContext(ctx)
		if ephemeral {
			if attrs == nil {
				attrs = map[string]string{}
			}
			attrs[mounter.AttrEphemeral] = "true"
		}
		req := &csi.NodePublishVolumeRequest{VolumeId: volumeID, TargetPath: target, StagingTargetPath: staging,
			VolumeContext: attrs, Readonly: readOnly, VolumeCapability: fuzzCapability(flags, group, "", mode, false)}
		r, err := parsePublish(req)
		if err != nil {
			checkInvalid(t, err, attrs, ephemeral)
			return
		}
		if r.volumeID != volumeID || r.readOnly != readOnly || r.ephemeral != ephemeral {
			t.Fatalf("parsed %+v from volume_id %q readonly %t ephemeral %t", r, volumeID, readOnly, ephemeral)
		}
		checkPath(t, "target_path", r.targetPath)
		if ephemeral {
			if r.stagingPath != "" {
				t.Fatalf("inline volume with staging path %q", r.stagingPath)
			}
		} else {
			checkPath(t, "staging_target_path", r.stagingPath)
		}
		if want := mode == int32(csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER); r.singleWriter != want {
			t.Fatalf("access mode %d: singleWriter %t", mode, r.singleWriter)
		}
		checkVolume(t, r.volume, volumeID, attrs, mode, ephemeral)
	})
}

// FuzzResolveCredentials feeds the credential inputs of a request:
// attributes, a secret and kubelet's token attribute. Whatever they are, the
// answer is credentials that match them or an InvalidArgument that names
// the field, and no error or formatted credentials show a secret.
func FuzzResolveCredentials(f *testing.F) {
	key := testKey("a@p.iam.gserviceaccount.com")
	tok := ksaToken("ns", "app", "1")
	for _, s := range []struct {
		ctx, secretName, secret, tokens string
		publish, anonDefault            bool
	}{
		{"", "", "", "", true, false},
		{"auth=anonymous", "", "", "", false, false},
		{"anonymousAccess=false", "", "", "", true, true},
		{"", "key.json", key, "", false, false},
		{"auth=node", "key.json", key, "", true, false},
		{"", "key.json", "hunter2-hunter2", "", true, false},
		{"", "creds", key, "", true, false},
		{"auth=secret", "", "", "", false, false},
		{"auth=workloadIdentity", "", "", tokensAttr("aud", tok), true, false},
		{"auth=workloadIdentity\ngoogleServiceAccount=g@p.iam.gserviceaccount.com", "", "", tokensAttr("aud", tok), true, false},
		{"auth=workloadIdentity", "", "", `{"a":{"token":"hunter2-hunter2"},"b":{}}`, true, false},
		{"auth=workloadIdentity", "", "", `hunter2-hunter2`, true, false},
		{"auth=workloadIdentity", "", "", "", true, false},
		{"auth=magic", "", "", "", true, false},
	} {
		f.Add(s.ctx, s.secretName, s.secret, s.tokens, s.publish, s.anonDefault)
	}
	d := &Driver{opts: Options{WIProvider: "projects/1/providers/k"}}
	f.Fuzz(func(t *testing.T, ctx, secretName, secret, tokens string, publish, anonDefault bool) {
		attrs := fuzzContext(ctx)
		if tokens != "" {
			if attrs == nil {
				attrs = map[string]string{}
			}
			attrs[mounter.AttrTokens] = tokens
		}
		var secrets map[string]string
		if secretName != "" {
			secrets = map[string]string{secretName: secret}
		}
		v, err := parseVolume("bkt", attrs, capability(), false)
		if err != nil {
			return // FuzzParseStage covers attribute errors
		}
		d.opts.Anonymous = anonDefault
		creds, deferred, err := d.resolveCredentials(v, secrets, attrs, publish)
		leaks := func(s string) bool {
			return (len(secret) >= 8 && strings.Contains(s, secret)) || (len(tokens) >= 8 && strings.Contains(s, tokens)) ||
				strings.Contains(s, "hunter2")
		}
		if err != nil {
			checkInvalid(t, err, attrs, false)
			if leaks(err.Error()) && !strings.Contains(ctx, "hunter2") && !strings.Contains(secretName, "hunter2") {
				t.Fatalf("error shows a secret: %v", err)
			}
			return
		}
		if deferred {
			if creds != nil || publish && !(v.Auth.Mode == auth.ModeSecret && len(secrets) == 0) {
				t.Fatalf("deferred %v with credentials %v (publish %t)", deferred, creds, publish)
			}
			return
		}
		if !slices.Contains(auth.Modes, creds.Mode) {
			t.Fatalf("mode %q", creds.Mode)
		}
		if len(secrets) > 0 && (creds.Mode != auth.ModeSecret || string(creds.Key) != secret) {
			t.Fatalf("a secret was given but the credentials are %v", creds)
		}
		if creds.Mode == auth.ModeWorkloadIdentity && (creds.Token == "" || creds.Provider == "") {
			t.Fatalf("workload identity without a token or provider: %v", creds)
		}
		if s := fmt.Sprintf("%v %+v %#v", creds, creds, creds); leaks(s) && !strings.Contains(ctx, "hunter2") {
			t.Fatalf("formatted credentials show a secret: %s", s)
		}
	})
}

func FuzzCleanPath(f *testing.F) {
	for _, p := range []string{"/a/b", "/a/b/", "/", "//a", "/a//b", "/a/./b", "/a/../b", "/..", "a/b", "", "/a\x00", "/a/b/.", "/...", "/a..b", "C:\\a"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got, err := cleanPath("target_path", p)
		if err != nil {
			if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "target_path") {
				t.Fatalf("cleanPath(%q) = %v: want InvalidArgument naming target_path", p, err)
			}
			return
		}
		checkPath(t, "target_path", got)
		if got != p && got+"/" != p {
			t.Fatalf("cleanPath(%q) = %q: want the path itself, without a trailing '/'", p, got)
		}
	})
}

// conditionSchema describes, in proto3, the NodeGetVolumeStatsResponse
// fields kubelet reads (CSI v1.12 and earlier still generate them):
// volume_condition = 2, VolumeCondition{bool abnormal = 1; string message = 2}.
func conditionSchema(f *testing.F) (resp protoreflect.MessageDescriptor, cond, abnormal, message protoreflect.FieldDescriptor) {
	field := func(name string, num int32, typ descriptorpb.FieldDescriptorProto_Type, typeName string) *descriptorpb.FieldDescriptorProto {
		fd := &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(num), Type: typ.Enum(),
			Label: descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()}
		if typeName != "" {
			fd.TypeName = proto.String(typeName)
		}
		return fd
	}
	file, err := protodesc.NewFile(&descriptorpb.FileDescriptorProto{
		Name: proto.String("fuzz/volume_condition.proto"), Package: proto.String("fuzz.csi"), Syntax: proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("VolumeCondition"), Field: []*descriptorpb.FieldDescriptorProto{
				field("abnormal", 1, descriptorpb.FieldDescriptorProto_TYPE_BOOL, ""),
				field("message", 2, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
			}},
			{Name: proto.String("NodeGetVolumeStatsResponse"), Field: []*descriptorpb.FieldDescriptorProto{
				field("volume_condition", 2, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".fuzz.csi.VolumeCondition"),
			}},
		},
	}, nil)
	if err != nil {
		f.Fatal(err)
	}
	c := file.Messages().ByName("VolumeCondition")
	resp = file.Messages().ByName("NodeGetVolumeStatsResponse")
	return resp, resp.Fields().ByNumber(2), c.Fields().ByNumber(1), c.Fields().ByNumber(2)
}

func FuzzVolumeCondition(f *testing.F) {
	healthy := &csi.NodeGetVolumeStatsResponse{}
	setVolumeCondition(healthy, false, "gcsfuse session 0123 answers")
	for _, s := range []struct {
		raw      []byte
		abnormal bool
		msg      string
	}{
		{healthy.ProtoReflect().GetUnknown(), false, "gcsfuse session 0123 answers (pid 7, up 1m0s)"},
		{nil, true, "the gcsfuse mount is not connected (Transport endpoint is not connected)"},
		{[]byte{0x12, 0x00}, true, ""},                                       // an empty volume_condition
		{[]byte{0x12, 0x02, 0x08, 0x01, 0x12, 0x02, 0x10, 0x00}, false, "é"}, // two, merged
		{[]byte{0x12, 0x05, 0x12, 0x03, 'a', 'b'}, false, "x"},               // truncated message
		{[]byte{0x12, 0x04, 0x12, 0x02, 0xc3, 0x28}, false, "y"},             // invalid UTF-8 on the wire
		{[]byte{0x10, 0x01, 0x1a, 0x00, 0x08, 0x96, 0x01}, false, ""},        // field 2 as a varint, others
		{[]byte{0x13, 0x14}, false, ""},                                      // a group
		{[]byte{0x12, 0x80, 0x80, 0x80, 0x80, 0x10}, false, ""},              // overlong length
		{[]byte{0x00}, false, ""},                                            // field number 0
	} {
		f.Add(s.raw, s.abnormal, s.msg)
	}
	respDesc, condField, abnormalField, messageField := conditionSchema(f)
	// decode reads b as kubelet does; ok false when it refuses b.
	decode := func(b []byte) (abnormal bool, msg string, has, ok bool) {
		m := dynamicpb.NewMessage(respDesc)
		if err := proto.Unmarshal(b, m); err != nil {
			return false, "", false, false
		}
		c := m.Get(condField).Message()
		return c.Get(abnormalField).Bool(), c.Get(messageField).String(), m.Has(condField), true
	}
	f.Fuzz(func(t *testing.T, raw []byte, abnormal bool, msg string) {
		// Arbitrary unknown fields: never a panic, and whatever a proto3
		// decoder accepts is read the same way.
		resp := &csi.NodeGetVolumeStatsResponse{}
		resp.ProtoReflect().SetUnknown(raw)
		gotAbnormal, gotMsg, gotOK := VolumeConditionOf(resp)
		if wantAbnormal, wantMsg, has, ok := decode(raw); ok && (gotOK != has || gotAbnormal != wantAbnormal || gotMsg != wantMsg) {
			t.Fatalf("VolumeConditionOf(%x) = %t %q %t; a proto3 decoder reads %t %q %t", raw, gotAbnormal, gotMsg, gotOK, wantAbnormal, wantMsg, has)
		}

		// Round trip, over the wire, to what kubelet decodes. A message
		// that is not UTF-8 may come back with its bad bytes replaced: a
		// proto3 string must be UTF-8.
		same := func(a bool, m string, ok bool) bool {
			return ok && a == abnormal && (m == msg || !utf8.ValidString(msg) && utf8.ValidString(m))
		}
		resp = &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: 1}}}
		setVolumeCondition(resp, abnormal, msg)
		if a, m, ok := VolumeConditionOf(resp); !same(a, m, ok) {
			t.Fatalf("setVolumeCondition(%t, %q) read back as %t %q %t", abnormal, msg, a, m, ok)
		}
		b, err := proto.Marshal(resp)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var back csi.NodeGetVolumeStatsResponse
		if err := proto.Unmarshal(b, &back); err != nil {
			t.Fatalf("unmarshal: %v", err)
		}
		if a, m, ok := VolumeConditionOf(&back); !same(a, m, ok) {
			t.Fatalf("setVolumeCondition(%t, %q) after the wire: %t %q %t", abnormal, msg, a, m, ok)
		}
		a, m, has, ok := decode(b)
		if !ok {
			t.Fatalf("setVolumeCondition(%t, %q): kubelet cannot decode the response (%x)", abnormal, msg, b)
		}
		if !same(a, m, has) {
			t.Fatalf("setVolumeCondition(%t, %q): kubelet reads %t %q %t", abnormal, msg, a, m, has)
		}
	})
}
