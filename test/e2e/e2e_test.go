// Package e2e drives the built driver binary over its CSI socket the way
// kubelet does, against fake-gcs-server on 127.0.0.1, with the real gcsfuse
// and real mounts. It runs the split deployment: the node driver (root)
// mounts and binds, and hands every gcsfuse off to a separate mounter
// process running as nobody without capabilities, whose children the
// gcsfuse processes are. It needs root and /dev/fuse, and `make build` first.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

const (
	bucket = "e2e-bucket"
	// nobody/nogroup: the non-root identity pods run as in these tests.
	nobody = 65534
	// rpcTimeout bounds every CSI call.
	rpcTimeout = 30 * time.Second
)

// fixture is the content of bucket: nested directories that exist only as
// object-name prefixes (implicit directories).
var fixture = map[string]string{
	"a/b/c.txt": "deep content\n",
	"a/x.txt":   "x content\n",
	"top.txt":   "top content\n",
}

var (
	rwx        = harness.MountCapability(harness.RWX, "", "implicit-dirs")
	inlineMode = csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
)

func TestNode(t *testing.T) {
	t.Run("a_nonroot_reads_nested_dirs", testNonRootRead)
	t.Run("b_nonroot_writes_with_fsgroup", testNonRootWrite)
	t.Run("c_readonly_publish", testReadOnlyPublish)
	t.Run("d_staged_targets_share_one_gcsfuse", testStagedSharing)
	t.Run("d_inline_sessions", testInlineSessions)
	t.Run("e_teardown_leaves_nothing", testTeardown)
	t.Run("f_idempotency", testIdempotency)
	t.Run("g_bad_inputs", testBadInputs)
	t.Run("h_prefix_volume", testPrefixVolume)
	t.Run("i_dead_gcsfuse_is_replaced", testDeadGCSFuse)
	t.Run("j_publish_stages_an_unmounted_staging_path", testPublishStages)
}

// a. A non-root process reads a file and lists directories, including
// implicit ones, through a published target.
func testNonRootRead(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))

	out := e.runAs(t, nobody, nobody, "cat", filepath.Join(target, "a/b/c.txt"))
	if out != fixture["a/b/c.txt"] {
		t.Errorf("cat a/b/c.txt as uid %d = %q, want %q", nobody, out, fixture["a/b/c.txt"])
	}
	for dir, want := range map[string]string{".": "a\ntop.txt\n", "a": "b\nx.txt\n", "a/b": "c.txt\n"} {
		if got := e.runAs(t, nobody, nobody, "ls", "-1", filepath.Join(target, dir)); got != want {
			t.Errorf("ls -1 %s as uid %d = %q, want %q", dir, nobody, got, want)
		}
	}
	// Without an fsGroup the files belong to root with mode 0644, and the
	// kernel enforces it (default_permissions): nobody cannot write.
	if _, err := e.tryRunAs(nobody, nobody, "sh", "-c", `echo no > "$1"`, "sh", filepath.Join(target, "denied.txt")); err == nil {
		t.Errorf("uid %d could write to a volume without fsGroup; want permission denied", nobody)
	}
	e.assertNoObject(t, "denied.txt")
}

// b. A non-root process writes through a publish whose fsGroup is its gid;
// the object lands in the bucket.
func testNonRootWrite(t *testing.T) {
	e := newEnv(t)
	capability := harness.MountCapability(harness.RWX, fmt.Sprint(nobody), "implicit-dirs")
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, bucket, stage, capability, nil)
	e.mustPublish(t, persistent(bucket, stage, target, capability, false))

	const content = "written by nobody\n"
	e.runAs(t, nobody, nobody, "sh", "-c", `printf '%s' "$2" > "$1"`, "sh", filepath.Join(target, "a/new.txt"), content)
	if got := e.object(t, "a/new.txt"); got != content {
		t.Errorf("object a/new.txt = %q, want %q", got, content)
	}
	fi, err := os.Stat(filepath.Join(target, "a/new.txt"))
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Gid != nobody || fi.Mode().Perm() != 0o664 {
		t.Errorf("a/new.txt: gid %d mode %v, want gid %d mode -rw-rw-r-- (fsGroup)", st.Gid, fi.Mode().Perm(), nobody)
	}
}

// c. A read-only publish of a staged volume refuses writes with EROFS, while
// a read-write publish of the same staged volume still writes.
func testReadOnlyPublish(t *testing.T) {
	e := newEnv(t)
	capability := harness.MountCapability(harness.RWX, fmt.Sprint(nobody), "implicit-dirs")
	stage, rw, ro := e.path("stage"), e.path("rw"), e.path("ro")
	e.mustStage(t, bucket, stage, capability, nil)
	e.mustPublish(t, persistent(bucket, stage, rw, capability, false))
	e.mustPublish(t, persistent(bucket, stage, ro, capability, true))

	if got, err := os.ReadFile(filepath.Join(ro, "top.txt")); err != nil || string(got) != fixture["top.txt"] {
		t.Errorf("read through the read-only target = %q, %v; want %q", got, err, fixture["top.txt"])
	}
	err := os.WriteFile(filepath.Join(ro, "ro.txt"), []byte("no"), 0o644)
	if !errors.Is(err, syscall.EROFS) {
		t.Errorf("write through the read-only target: %v, want EROFS", err)
	}
	if err := os.Remove(filepath.Join(ro, "top.txt")); !errors.Is(err, syscall.EROFS) {
		t.Errorf("remove through the read-only target: %v, want EROFS", err)
	}
	e.assertNoObject(t, "ro.txt")
	if err := os.WriteFile(filepath.Join(rw, "rw.txt"), []byte("yes"), 0o644); err != nil {
		t.Fatalf("write through the read-write target of the same staged volume: %v", err)
	}
	if got := e.object(t, "rw.txt"); got != "yes" {
		t.Errorf("object rw.txt = %q, want %q", got, "yes")
	}
	if got := e.object(t, "top.txt"); got != fixture["top.txt"] {
		t.Errorf("object top.txt = %q after the refused remove, want %q", got, fixture["top.txt"])
	}
}

// d. Every target of one staged volume is served by the one gcsfuse.
func testStagedSharing(t *testing.T) {
	e := newEnv(t)
	stage, t1, t2 := e.path("stage"), e.path("t1"), e.path("t2")
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, t1, rwx, false))
	e.mustPublish(t, persistent(bucket, stage, t2, rwx, false))

	if pids := e.gcsfuse(t); len(pids) != 1 {
		t.Errorf("gcsfuse children = %v, want exactly one for one staged volume", pids)
	}
	sources := e.mountsBySource(t)
	if len(sources) != 1 {
		t.Fatalf("mount sources = %v, want exactly one session", sources)
	}
	for src, paths := range sources {
		if want := []string{stage, t1, t2}; !slices.Equal(paths, want) {
			t.Errorf("mounts of %s = %v, want %v", src, paths, want)
		}
	}
	for _, target := range []string{t1, t2} {
		if got, err := os.ReadFile(filepath.Join(target, "a/x.txt")); err != nil || string(got) != fixture["a/x.txt"] {
			t.Errorf("read %s/a/x.txt = %q, %v", target, got, err)
		}
	}
}

// d. Inline volumes with the same bucket and options share one gcsfuse;
// other options get their own; the last unpublish stops a session.
func testInlineSessions(t *testing.T) {
	e := newEnv(t)
	capability := harness.MountCapability(inlineMode, "")
	optsA := map[string]string{mounterEphemeral: "true", "bucketName": bucket, "implicitDirs": "true"}
	optsB := map[string]string{mounterEphemeral: "true", "bucketName": bucket, "implicitDirs": "true", "fileMode": "0640"}
	t1, t2, t3 := e.path("pod1/vol"), e.path("pod2/vol"), e.path("pod3/vol")
	for _, dir := range []string{t1, t2, t3} { // kubelet creates the pod's volume dir
		mkdir(t, filepath.Dir(dir))
	}

	e.mustPublish(t, inline("inline-1", t1, capability, optsA))
	e.mustPublish(t, inline("inline-2", t2, capability, optsA))
	pidsA := e.gcsfuse(t)
	if len(pidsA) != 1 {
		t.Fatalf("gcsfuse children after two inline volumes with the same options = %v, want exactly one", pidsA)
	}
	sources := e.mountsBySource(t)
	if len(sources) != 1 {
		t.Fatalf("mount sources = %v, want one shared session", sources)
	}
	var srcA string
	for src, paths := range sources {
		srcA = src
		if len(paths) != 3 || !strings.HasPrefix(paths[0], e.state+"/") || paths[1] != t1 || paths[2] != t2 {
			t.Errorf("mounts of %s = %v, want the session under %s, then %s and %s", src, paths, e.state, t1, t2)
		}
	}

	e.mustPublish(t, inline("inline-3", t3, capability, optsB))
	pidsAB := e.gcsfuse(t)
	if len(pidsAB) != 2 || !slices.Contains(pidsAB, pidsA[0]) {
		t.Fatalf("gcsfuse children after an inline volume with other options = %v, want %d and a second one", pidsAB, pidsA[0])
	}
	pidB := pidsAB[0]
	if pidB == pidsA[0] {
		pidB = pidsAB[1]
	}
	if sources := e.mountsBySource(t); len(sources) != 2 {
		t.Errorf("mount sources = %v, want two sessions", sources)
	}
	fi, err := os.Stat(filepath.Join(t3, "top.txt"))
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("stat top.txt through the fileMode=0640 volume: %v, %v; want mode 0640", fi, err)
	}

	e.mustUnpublish(t, "inline-1", t1)
	if pids := e.gcsfuse(t); !slices.Equal(pids, pidsAB) {
		t.Errorf("gcsfuse children after unpublishing one of two users = %v, want %v (session kept)", pids, pidsAB)
	}
	if paths := e.mountsBySource(t)[srcA]; len(paths) != 2 || paths[1] != t2 {
		t.Errorf("mounts of %s after unpublishing %s = %v, want the session and %s", srcA, t1, paths, t2)
	}
	if got, err := os.ReadFile(filepath.Join(t2, "top.txt")); err != nil || string(got) != fixture["top.txt"] {
		t.Errorf("read through the remaining inline target = %q, %v", got, err)
	}

	e.mustUnpublish(t, "inline-2", t2)
	if pids := e.gcsfuse(t); !slices.Equal(pids, []int{pidB}) {
		t.Errorf("gcsfuse children after unpublishing the last user = %v, want only %d (the other session)", pids, pidB)
	}
	if paths, ok := e.mountsBySource(t)[srcA]; ok {
		t.Errorf("session %s still mounted at %v after its last target was unpublished", srcA, paths)
	}
	assertGone(t, pidsA[0])

	e.mustUnpublish(t, "inline-3", t3)
	e.assertClean(t)
	assertGone(t, pidB)
}

// e. Unpublish + unstage leave no mount, no gcsfuse, no zombie; the driver
// removes the target it created (CSI: "The SP MUST delete the file or
// directory it created at this path"), and leaves the CO's staging path
// unmounted (the CO owns it; the driver may remove it once empty).
func testTeardown(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("plugins/vol/globalmount"), e.path("pods/p1/volumes/vol/mount")
	mkdir(t, filepath.Dir(target))
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	if _, err := os.ReadFile(filepath.Join(target, "top.txt")); err != nil {
		t.Fatal(err)
	}
	pids := e.gcsfuse(t)
	if len(pids) != 1 {
		t.Fatalf("gcsfuse children = %v, want one", pids)
	}

	e.mustUnpublish(t, bucket, target)
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Errorf("target %s after unpublish: %v, want it removed", target, err)
	}
	if _, err := os.Stat(filepath.Dir(target)); err != nil {
		t.Errorf("the target's parent (kubelet's) is gone after unpublish: %v", err)
	}
	if got := e.gcsfuse(t); !slices.Equal(got, pids) {
		t.Errorf("gcsfuse children after unpublish (still staged) = %v, want %v", got, pids)
	}

	e.mustUnstage(t, bucket, stage)
	e.assertClean(t)
	assertGone(t, pids[0])
	if entries, err := os.ReadDir(stage); err == nil && len(entries) != 0 {
		t.Errorf("staging path %s after unstage holds %v, want it empty or removed", stage, entries)
	} else if err != nil && !os.IsNotExist(err) {
		t.Errorf("staging path %s after unstage: %v", stage, err)
	}
	if _, err := os.Stat(filepath.Dir(stage)); err != nil {
		t.Errorf("the staging path's parent (kubelet's) is gone after unstage: %v", err)
	}
}

// f. Every call repeated with the same arguments succeeds and changes
// nothing; unpublish and unstage of paths never used succeed.
func testIdempotency(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustStage(t, bucket, stage, rwx, nil)
	pids := e.gcsfuse(t)
	if len(pids) != 1 {
		t.Errorf("gcsfuse children after staging twice = %v, want one", pids)
	}
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	if n := e.mountsAt(t, target); n != 1 {
		t.Errorf("mounts at %s after publishing twice = %d, want 1", target, n)
	}
	if n := e.mountsAt(t, stage); n != 1 {
		t.Errorf("mounts at %s after staging twice = %d, want 1", stage, n)
	}
	if got := e.gcsfuse(t); !slices.Equal(got, pids) {
		t.Errorf("gcsfuse children after publishing twice = %v, want %v", got, pids)
	}
	if got, err := os.ReadFile(filepath.Join(target, "a/b/c.txt")); err != nil || string(got) != fixture["a/b/c.txt"] {
		t.Errorf("read after repeated calls = %q, %v", got, err)
	}

	e.mustUnpublish(t, bucket, target)
	e.mustUnpublish(t, bucket, target)
	e.mustUnstage(t, bucket, stage)
	e.mustUnstage(t, bucket, stage)
	e.mustUnpublish(t, bucket, e.path("never/published"))
	e.mustUnstage(t, bucket, e.path("never/staged"))
	e.assertClean(t)
}

// g. Bad requests fail with InvalidArgument naming the field, before any
// mount is made; a missing bucket is NotFound.
func testBadInputs(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	mkdir(t, stage)
	// Should a bad request succeed after all, its mounts are undone.
	t.Cleanup(func() {
		e.cleanupCall(t, "unstage "+stage, func(ctx context.Context) error { return e.unstage(ctx, bucket, stage) })
	})
	t.Cleanup(func() {
		e.cleanupCall(t, "unpublish "+target, func(ctx context.Context) error { return e.unpublish(ctx, bucket, target) })
	})
	flags := func(f ...string) *csi.VolumeCapability { return harness.MountCapability(harness.RWX, "", f...) }
	withStage := func(mod func(*csi.NodeStageVolumeRequest)) func(context.Context, csi.NodeClient) error {
		return func(ctx context.Context, n csi.NodeClient) error {
			req := &csi.NodeStageVolumeRequest{VolumeId: bucket, StagingTargetPath: stage, VolumeCapability: rwx}
			mod(req)
			_, err := n.NodeStageVolume(ctx, req)
			return err
		}
	}
	withPublish := func(mod func(*csi.NodePublishVolumeRequest)) func(context.Context, csi.NodeClient) error {
		return func(ctx context.Context, n csi.NodeClient) error {
			req := persistent(bucket, stage, target, rwx, false)
			mod(req)
			_, err := n.NodePublishVolume(ctx, req)
			return err
		}
	}
	stageFlags := func(f ...string) func(context.Context, csi.NodeClient) error {
		return withStage(func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability = flags(f...) })
	}
	stageAttrs := func(attrs map[string]string) func(context.Context, csi.NodeClient) error {
		return withStage(func(r *csi.NodeStageVolumeRequest) { r.VolumeContext = attrs })
	}
	const mf = "volume_capability.mount.mount_flags"
	cases := []struct {
		name string
		call func(context.Context, csi.NodeClient) error
		want []string // every one must appear in the message
	}{
		{"stage/no volume_id", withStage(func(r *csi.NodeStageVolumeRequest) { r.VolumeId = "" }), []string{"volume_id is required"}},
		{"publish/no volume_id", withPublish(func(r *csi.NodePublishVolumeRequest) { r.VolumeId = "" }), []string{"volume_id is required"}},
		{"unstage/no volume_id", func(ctx context.Context, n csi.NodeClient) error {
			_, err := n.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{StagingTargetPath: stage})
			return err
		}, []string{"volume_id is required"}},
		{"unpublish/no volume_id", func(ctx context.Context, n csi.NodeClient) error {
			_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{TargetPath: target})
			return err
		}, []string{"volume_id is required"}},
		{"publish/no target_path", withPublish(func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "" }), []string{"target_path is required"}},
		{"unpublish/no target_path", func(ctx context.Context, n csi.NodeClient) error {
			_, err := n.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: bucket})
			return err
		}, []string{"target_path is required"}},
		{"publish/relative target_path", withPublish(func(r *csi.NodePublishVolumeRequest) { r.TargetPath = "rel/target" }), []string{`target_path="rel/target"`, "absolute"}},
		{"publish/target_path with ..", withPublish(func(r *csi.NodePublishVolumeRequest) { r.TargetPath = e.dir + "/x/../target" }), []string{"target_path=", ".."}},
		{"stage/no staging_target_path", withStage(func(r *csi.NodeStageVolumeRequest) { r.StagingTargetPath = "" }), []string{"staging_target_path is required"}},
		{"stage/relative staging_target_path", withStage(func(r *csi.NodeStageVolumeRequest) { r.StagingTargetPath = "stage" }), []string{`staging_target_path="stage"`, "absolute"}},
		{"publish/persistent without staging_target_path", withPublish(func(r *csi.NodePublishVolumeRequest) { r.StagingTargetPath = "" }), []string{"staging_target_path is required"}},
		{"stage/no capability", withStage(func(r *csi.NodeStageVolumeRequest) { r.VolumeCapability = nil }), []string{"volume_capability is required"}},
		{"publish/no capability", withPublish(func(r *csi.NodePublishVolumeRequest) { r.VolumeCapability = nil }), []string{"volume_capability is required"}},
		{"stage/block capability", withStage(func(r *csi.NodeStageVolumeRequest) {
			r.VolumeCapability = &csi.VolumeCapability{
				AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
				AccessMode: &csi.VolumeCapability_AccessMode{Mode: harness.RWX},
			}
		}), []string{"volume_capability.block"}},
		{"stage/no access mode", withStage(func(r *csi.NodeStageVolumeRequest) {
			r.VolumeCapability = harness.MountCapability(csi.VolumeCapability_AccessMode_UNKNOWN, "")
		}), []string{"volume_capability.access_mode"}},
		{"stage/fs_type ext4", withStage(func(r *csi.NodeStageVolumeRequest) {
			r.VolumeCapability = flags()
			r.VolumeCapability.GetMount().FsType = "ext4"
		}), []string{`volume_capability.mount.fs_type="ext4"`}},
		{"stage/unknown attribute", stageAttrs(map[string]string{"noSuchAttribute": "1"}), []string{"volume_context.noSuchAttribute", "unknown volume attribute"}},
		{"stage/unknown mount option", stageFlags("no-such-flag"), []string{mf, `"no-such-flag"`}},
		{"stage/denied key-file", stageFlags("key-file=/etc/key.json"), []string{mf, `"key-file" is not allowed`}},
		{"stage/denied --key-file", stageFlags("--key-file=/etc/key.json"), []string{mf, `"key-file" is not allowed`}},
		{"stage/denied config-file", stageFlags("config-file=/etc/gcsfuse.yaml"), []string{mf, `"config-file" is not allowed`}},
		{"stage/denied log-file", stageFlags("log-file=/tmp/log"), []string{mf, `"log-file" is not allowed`}},
		{"stage/denied cache-dir", stageFlags("cache-dir=/"), []string{mf, `"cache-dir" is not allowed`}},
		{"stage/denied temp-dir", stageFlags("temp-dir=/"), []string{mf, `"temp-dir" is not allowed`}},
		{"stage/denied token-url", stageFlags("token-url=http://127.0.0.1:1/"), []string{mf, `"token-url" is not allowed`}},
		{"stage/denied custom-endpoint", stageFlags("custom-endpoint=http://127.0.0.1:1/"), []string{mf, `"custom-endpoint" is not allowed`}},
		{"stage/denied foreground", stageFlags("foreground"), []string{mf, `"foreground" is not allowed`}},
		{"stage/denied prometheus-port", stageFlags("prometheus-port=9100"), []string{mf, `"prometheus-port" is not allowed`}},
		{"stage/denied o=allow_other", stageFlags("o=allow_other"), []string{mf, `"allow_other" is not allowed`}},
		{"stage/denied o=user_id=0", stageFlags("o=user_id=0"), []string{mf, `"user_id=0" is not allowed`}},
		{"stage/denied raw suid", stageFlags("implicit-dirs,suid"), []string{mf, `"suid" is not allowed`}},
		{"stage/denied via mountOptions attribute", stageAttrs(map[string]string{"mountOptions": "implicit-dirs,key-file=/k"}), []string{"volume_context.mountOptions", `"key-file" is not allowed`}},
		{"stage/bad uid attribute", stageAttrs(map[string]string{"uid": "-1"}), []string{"volume_context.uid", `uid="-1"`}},
		{"stage/bad uid flag", stageFlags("uid=root"), []string{mf, `uid="root"`}},
		{"stage/bad fileMode", stageAttrs(map[string]string{"fileMode": "0999"}), []string{"volume_context.fileMode", `file-mode="0999"`}},
		{"stage/bad dirMode", stageAttrs(map[string]string{"dirMode": "rwx"}), []string{"volume_context.dirMode", `dir-mode="rwx"`}},
		{"stage/bad volume_mount_group", withStage(func(r *csi.NodeStageVolumeRequest) {
			r.VolumeCapability = harness.MountCapability(harness.RWX, "staff")
		}), []string{"volume_capability.mount.volume_mount_group", `gid="staff"`}},
		{"stage/invalid bucket name", withStage(func(r *csi.NodeStageVolumeRequest) { r.VolumeId = "Bad_Bucket!" }), []string{"volume_id", `invalid bucket name "Bad_Bucket!"`}},
		{"stage/volume_id dir with ..", withStage(func(r *csi.NodeStageVolumeRequest) { r.VolumeId = bucket + "/a/../../etc" }), []string{"volume_id", "only-dir", "'..'"}},
		{"stage/onlyDir with ..", stageAttrs(map[string]string{"onlyDir": "a/../.."}), []string{"volume_context.onlyDir", "'..'"}},
		{"stage/bucketName differs from volume_id", stageAttrs(map[string]string{"bucketName": "other-bucket"}), []string{"volume_context.bucketName", "other-bucket"}},
		{"stage/uid conflict attribute vs flag", withStage(func(r *csi.NodeStageVolumeRequest) {
			r.VolumeContext = map[string]string{"uid": "1000"}
			r.VolumeCapability = flags("uid=2000")
		}), []string{mf + " sets uid=2000", "volume_context.uid already set it to 1000"}},
		{"stage/ro and rw", stageFlags("ro", "rw"), []string{mf, `"ro" and "rw"`}},
		{"publish/inline without bucketName", withPublish(func(r *csi.NodePublishVolumeRequest) {
			r.StagingTargetPath = ""
			r.VolumeContext = map[string]string{mounterEphemeral: "true", "implicitDirs": "true"}
		}), []string{"volume_context.bucketName is required"}},
		{"publish/inline invalid bucketName", withPublish(func(r *csi.NodePublishVolumeRequest) {
			r.StagingTargetPath = ""
			r.VolumeContext = map[string]string{mounterEphemeral: "true", "bucketName": "UPPER"}
		}), []string{"volume_context.bucketName", `invalid bucket name "UPPER"`}},
		{"publish/inline denied option", withPublish(func(r *csi.NodePublishVolumeRequest) {
			r.StagingTargetPath = ""
			r.VolumeContext = map[string]string{mounterEphemeral: "true", "bucketName": bucket, "mountOptions": "config-file=/x"}
		}), []string{"volume_context.mountOptions", `"config-file" is not allowed`}},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		err := c.call(ctx, e.drv.Node)
		cancel()
		st := status.Convert(err)
		if err == nil || st.Code() != codes.InvalidArgument {
			t.Errorf("%s: got %v, want InvalidArgument", c.name, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(st.Message(), w) {
				t.Errorf("%s: message %q does not contain %q", c.name, st.Message(), w)
			}
		}
	}
	// Nothing above got as far as a mount.
	e.assertClean(t)

	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	_, err := e.drv.Node.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: "no-such-bucket", StagingTargetPath: stage, VolumeCapability: rwx})
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "no-such-bucket") {
		t.Errorf("stage of a missing bucket: %v, want NotFound naming the bucket", err)
	}
	_, err = e.drv.Node.NodePublishVolume(ctx, inline("inline-missing", target, harness.MountCapability(inlineMode, ""),
		map[string]string{mounterEphemeral: "true", "bucketName": "no-such-bucket"}))
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "no-such-bucket") {
		t.Errorf("inline publish of a missing bucket: %v, want NotFound naming the bucket", err)
	}
	// A publish whose staging path is not mounted stages it itself (see
	// testPublishStages), so a missing bucket fails it the same way.
	_, err = e.drv.Node.NodePublishVolume(ctx, persistent("no-such-bucket", stage, target, rwx, false))
	if st := status.Convert(err); st.Code() != codes.NotFound || !strings.Contains(st.Message(), "no-such-bucket") {
		t.Errorf("publish of a missing bucket, not staged: %v, want NotFound naming the bucket", err)
	}
	e.assertClean(t)
}

// j. NodePublishVolume of a persistent volume whose staging path is not
// mounted (never staged here, or its staging mount was lost) stages it
// itself: for a pod that is already running, kubelet repeats NodePublish,
// never NodeStage. NodeUnstageVolume then takes it down as usual.
func testPublishStages(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	mkdir(t, stage)
	t.Cleanup(func() {
		e.cleanupCall(t, "unstage "+stage, func(ctx context.Context) error { return e.unstage(ctx, bucket, stage) })
	})
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	if n := e.mountsAt(t, stage); n != 1 {
		t.Errorf("mounts at the staging path %s after a publish without NodeStageVolume = %d, want 1", stage, n)
	}
	if pids := e.gcsfuse(t); len(pids) != 1 {
		t.Errorf("gcsfuse children = %v, want one", pids)
	}
	if got, err := readWithin(filepath.Join(target, "top.txt"), 5*time.Second); err != nil || got != fixture["top.txt"] {
		t.Errorf("read through the target = %q, %v; want %q", got, err, fixture["top.txt"])
	}
	e.mustUnpublish(t, bucket, target)
	e.mustUnstage(t, bucket, stage)
	e.assertClean(t)
}

// h. A "bucket/dir" volume shows only that directory, at the target root.
func testPrefixVolume(t *testing.T) {
	e := newEnv(t)
	stage, target := e.path("stage"), e.path("target")
	e.mustStage(t, bucket+"/a", stage, rwx, nil)
	e.mustPublish(t, persistent(bucket+"/a", stage, target, rwx, false))
	if got, want := readDirNames(t, target), []string{"b", "x.txt"}; !slices.Equal(got, want) {
		t.Errorf("target root = %v, want %v", got, want)
	}
	for name, obj := range map[string]string{"x.txt": "a/x.txt", "b/c.txt": "a/b/c.txt"} {
		if got, err := os.ReadFile(filepath.Join(target, name)); err != nil || string(got) != fixture[obj] {
			t.Errorf("read %s = %q, %v; want %q", name, got, err, fixture[obj])
		}
	}
	if _, err := os.Stat(filepath.Join(target, "top.txt")); !os.IsNotExist(err) {
		t.Errorf("top.txt (outside a/) through the prefix volume: %v, want not found", err)
	}
	if err := os.WriteFile(filepath.Join(target, "new.txt"), []byte("in a"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := e.object(t, "a/new.txt"); got != "in a" {
		t.Errorf("a write at the prefix volume's root landed as a/new.txt = %q, want %q", got, "in a")
	}
}

// i. When a volume's gcsfuse dies, its mounts answer ENOTCONN. Publishing
// the staged volume again mounts a new gcsfuse at the staging path itself
// (no NodeStageVolume needed) and serves the new target; the old target
// keeps its dead bind until it is republished, which replaces it. A second
// death is repaired by NodeStageVolume. (Health is checked with statfs(2), a
// FUSE round trip: a cached statx would call a dead mount healthy.)
func testDeadGCSFuse(t *testing.T) {
	e := newEnv(t)
	stage, target, t2 := e.path("stage"), e.path("target"), e.path("t2")
	e.mustStage(t, bucket, stage, rwx, nil)
	e.mustPublish(t, persistent(bucket, stage, target, rwx, false))
	old := e.killGCSFuse(t)
	if _, err := readWithin(filepath.Join(target, "top.txt"), 5*time.Second); !errors.Is(err, syscall.ENOTCONN) {
		t.Fatalf("read through a volume whose gcsfuse was killed: %v, want ENOTCONN", err)
	}

	e.mustPublishRetry(t, persistent(bucket, stage, t2, rwx, false))
	second := e.gcsfuse(t)
	if len(second) != 1 || second[0] == old {
		t.Errorf("gcsfuse children after publishing the volume whose gcsfuse died = %v, want one new process (the old one was %d)", second, old)
	}
	if got, err := readWithin(filepath.Join(t2, "top.txt"), 5*time.Second); err != nil || got != fixture["top.txt"] {
		t.Errorf("read through the new target = %q, %v; want %q", got, err, fixture["top.txt"])
	}
	if n := e.mountsAt(t, stage); n != 1 {
		t.Errorf("mounts at the staging path %s after the re-mount = %d, want 1 (the dead one replaced, not stacked)", stage, n)
	}
	// The old target's bind still shows the dead connection: a new gcsfuse
	// cannot take it over.
	if _, err := readWithin(filepath.Join(target, "top.txt"), 5*time.Second); !errors.Is(err, syscall.ENOTCONN) {
		t.Errorf("read through the old target before its republish: %v, want ENOTCONN (still the dead bind)", err)
	}
	e.mustPublishRetry(t, persistent(bucket, stage, target, rwx, false))
	if got, err := readWithin(filepath.Join(target, "top.txt"), 5*time.Second); err != nil || got != fixture["top.txt"] {
		t.Errorf("read after republishing the old target = %q, %v; want %q", got, err, fixture["top.txt"])
	}
	if n := e.mountsAt(t, target); n != 1 {
		t.Errorf("mounts at %s after republish = %d, want 1 (the dead bind replaced)", target, n)
	}
	if pids := e.gcsfuse(t); !slices.Equal(pids, second) {
		t.Errorf("gcsfuse children after republishing the old target = %v, want %v (the staged one, shared)", pids, second)
	}

	// Second death: NodeStageVolume replaces the dead staging mount too.
	e.killGCSFuse(t)
	e.mustStageRetry(t, bucket, stage, rwx, nil)
	third := e.gcsfuse(t)
	if len(third) != 1 || third[0] == second[0] {
		t.Errorf("gcsfuse children after restaging = %v, want one new process (the old one was %d)", third, second[0])
	}
	if n := e.mountsAt(t, stage); n != 1 {
		t.Errorf("mounts at the staging path %s after restaging = %d, want 1", stage, n)
	}
	e.mustPublishRetry(t, persistent(bucket, stage, target, rwx, false))
	if got, err := readWithin(filepath.Join(target, "top.txt"), 5*time.Second); err != nil || got != fixture["top.txt"] {
		t.Errorf("read after restage and republish = %q, %v; want %q", got, err, fixture["top.txt"])
	}
	e.mustUnpublish(t, bucket, t2)
	e.mustUnpublish(t, bucket, target)
	e.mustUnstage(t, bucket, stage)
	e.assertClean(t)
}

// killGCSFuse kills the one gcsfuse with SIGKILL, waits until the mounter
// has reaped it, and returns its pid.
func (e *env) killGCSFuse(t *testing.T) int {
	t.Helper()
	pids := e.gcsfuse(t)
	if len(pids) != 1 {
		t.Fatalf("gcsfuse children of the mounter = %v, want one", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// A zombie for a moment, until the mounter reaps it.
	if left, zombies, err := harness.WaitNoChildren(e.mnt.Pid(), "gcsfuse", 10*time.Second); err != nil || len(left) != 0 {
		t.Fatalf("gcsfuse children 10 s after kill -9 of %d: %v (%d zombies, %v), want none", pids[0], left, zombies, err)
	}
	assertGone(t, pids[0])
	return pids[0]
}

// ---- environment ----

// mounterEphemeral is the volume_context key kubelet sets on inline volumes.
const mounterEphemeral = "csi.storage.k8s.io/ephemeral"

type env struct {
	dir        string // everything lives here; mode 0755 so uid nobody can reach targets
	state      string // the driver's --state-dir
	log        string // the driver's log
	mounterLog string // the mounter's log
	socket     string // the mounter's socket
	gcs        *harness.FakeGCS

	mu   sync.Mutex // guards drv and mnt: the restart tests swap them while calls are in flight
	drv  *harness.Driver
	mnt  *harness.Mounter
	dead []*harness.Driver // killed drivers, whose client connections are closed at cleanup
}

// mounterCred is who the mounter (and so every gcsfuse) runs as: nobody,
// without supplementary groups; a setuid to a non-zero uid also drops every
// capability.
var mounterCred = &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}

// binaries skips without /dev/fuse (the driver's Probe needs it) and
// returns the built driver and gcsfuse.
func binaries(t *testing.T) (driver, gcsfuse string) {
	t.Helper()
	if f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0); err != nil {
		t.Skipf("e2e needs /dev/fuse: %v", err)
	} else {
		f.Close()
	}
	driver, err := harness.Binary("gcsfuse-csi", "GCSFUSE_CSI_BIN")
	if err != nil {
		t.Fatal(err)
	}
	if gcsfuse, err = harness.Binary("gcsfuse", "GCSFUSE_BIN"); err != nil {
		t.Fatal(err)
	}
	return driver, gcsfuse
}

// newEnv starts fake-gcs-server holding fixture (and extra objects), the
// mounter as nobody and the node driver handing gcsfuse off to it, in a fresh
// directory:
//
//	dir/            0755 root   targets and staging paths live here
//	dir/state/              the driver's --state-dir
//	dir/mounter/    0700 nobody the mounter's socket (mounter.sock)
//	dir/work/       0700 nobody the mounter's --work-dir (gcsfuse temp dirs)
//	dir/bin/        0755 root   copies of the binaries, only if nobody cannot reach bin/
//
// Cleanups (in this order, after the test's own unpublish and unstage
// cleanups): check nothing is left, stop the driver and then the mounter by
// PID, stop the fake, force-unmount anything left behind and remove the
// directory.
func newEnv(t *testing.T, extra ...fakestorage.Object) *env {
	t.Helper()
	return newEnvWith(t, envConfig{anonymous: true}, extra...)
}

// envConfig varies newEnvWith's setup.
type envConfig struct {
	anonymous  bool                            // start the driver with --anonymous
	front      func(http.Handler) http.Handler // wraps fake-gcs-server's handler (an auth-checking front)
	driverArgs []string                        // more driver flags
	setup      func(t *testing.T, dir string)  // runs before the mounter and driver start
}

// newEnvWith is newEnv with cfg's changes.
func newEnvWith(t *testing.T, cfg envConfig, extra ...fakestorage.Object) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("e2e needs root: the driver mounts FUSE filesystems and bind mounts")
	}
	bin, gcsfuse := binaries(t)
	dir, err := os.MkdirTemp("", "gcsfuse-csi-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e := &env{
		dir: dir, state: filepath.Join(dir, "state"), log: filepath.Join(dir, "driver.log"),
		mounterLog: filepath.Join(dir, "mounter.log"), socket: filepath.Join(dir, "mounter", "mounter.sock"),
	}
	t.Cleanup(func() { e.forceClean(t) })
	workDir := filepath.Join(dir, "work")
	for _, d := range []string{filepath.Dir(e.socket), workDir} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, nobody, nobody); err != nil {
			t.Fatal(err)
		}
	}
	// The mounter runs as nobody: it must be able to execute both binaries.
	if !reachableByOthers(bin) || !reachableByOthers(gcsfuse) {
		t.Logf("%s or %s is not executable by others; using copies in %s/bin", bin, gcsfuse, dir)
		bin, gcsfuse = copyBinary(t, bin, filepath.Join(dir, "bin")), copyBinary(t, gcsfuse, filepath.Join(dir, "bin"))
	}

	objects := slices.Clone(extra)
	for name, content := range fixture {
		objects = append(objects, harness.Object(bucket, name, content))
	}
	if cfg.front != nil {
		e.gcs, err = harness.StartFakeGCSWrapped(objects, cfg.front)
	} else {
		e.gcs, err = harness.StartFakeGCS(objects)
	}
	if err != nil {
		t.Fatal(err)
	}
	if cfg.setup != nil {
		cfg.setup(t, dir)
	}
	t.Cleanup(e.gcs.Stop)

	e.mnt, err = harness.StartMounter(bin, e.socket, workDir, e.mounterLog, mounterCred, "--gcsfuse="+gcsfuse, "-v=4")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.mnt.Stop(); err != nil {
			t.Errorf("stop mounter (pid %d): %v", e.mnt.Pid(), err)
		}
		if t.Failed() {
			t.Logf("mounter log (%s), last lines:\n%s", e.mounterLog, tailFile(e.mounterLog, 80))
		}
	})
	args := []string{"--gcsfuse=" + gcsfuse, "--gcs-endpoint=" + e.gcs.Endpoint, "--atomic-rename=false",
		"--state-dir=" + e.state, "--kubelet-dir=" + dir, "--node-id=n1", "-v=4",
		"--mounter-socket=" + e.socket, fmt.Sprintf("--mounter-uid=%d", nobody)}
	if cfg.anonymous {
		args = append(args, "--anonymous")
	}
	e.drv, err = harness.StartDriver(bin, filepath.Join(dir, "csi.sock"), e.log, append(args, cfg.driverArgs...)...)
	if err != nil {
		t.Logf("driver log (%s), last lines:\n%s", e.log, tailFile(e.log, 40))
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range e.dead {
			d.Stop() // closes the client connection of a killed driver
		}
		if err := e.drv.Stop(); err != nil {
			t.Errorf("stop driver (pid %d): %v", e.drv.Pid(), err)
		}
		if t.Failed() {
			t.Logf("driver log (%s), last lines:\n%s", e.log, tailFile(e.log, 80))
		}
	})
	t.Cleanup(func() { e.assertClean(t) })
	return e
}

// node is the client of the driver running now (the restart tests replace it).
func (e *env) node() csi.NodeClient {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.drv.Node
}

// reachableByOthers reports whether a user other than the owner can execute
// path: every directory above it searchable, the file executable, by others.
func reachableByOthers(path string) bool {
	path, err := filepath.Abs(path)
	if err != nil {
		return false
	}
	for p := path; ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm()&0o001 == 0 {
			return false
		}
		if p == "/" {
			return true
		}
	}
}

// copyBinary copies src into dir (created 0755) as an 0755 file.
func copyBinary(t *testing.T, src, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	dst := filepath.Join(dir, filepath.Base(src))
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return dst
}

func (e *env) path(rel string) string { return filepath.Join(e.dir, rel) }

// assertClean fails unless nothing is mounted under the test directory, the
// mounter has no gcsfuse child left (zombie or not) within 10 s, and the
// driver never had one.
func (e *env) assertClean(t *testing.T) {
	t.Helper()
	if mounts, err := harness.FUSEMounts(e.dir + "/"); err != nil || len(mounts) != 0 {
		t.Errorf("fuse.gcsfuse mounts left under %s: %+v (%v)", e.dir, mounts, err)
	}
	pids, zombies, err := harness.WaitNoChildren(e.mnt.Pid(), "gcsfuse", 10*time.Second)
	if err != nil || len(pids) != 0 || zombies != 0 {
		t.Errorf("gcsfuse children of the mounter left: %v, %d zombies (%v)", pids, zombies, err)
	}
	pids, zombies, err = harness.Children(e.drv.Pid(), "gcsfuse")
	if err != nil || len(pids) != 0 || zombies != 0 {
		t.Errorf("gcsfuse children of the node driver: %v, %d zombies (%v), want none (gcsfuse runs in the mounter)", pids, zombies, err)
	}
}

// forceClean runs after the driver and the fake are stopped: whatever is
// still mounted (a failed test) is detached, so that removing the directory
// can never walk into a live mount.
func (e *env) forceClean(t *testing.T) {
	mounts, err := harness.DetachAll(e.dir)
	for _, m := range mounts {
		t.Errorf("left mounted after cleanup: %s (%s); detached", m.Path, m.Source)
	}
	if err != nil {
		t.Errorf("%v; leaving %s in place", err, e.dir)
		return
	}
	if mounts, _ := harness.FUSEMounts(e.dir + "/"); len(mounts) != 0 {
		t.Errorf("could not detach %+v; leaving %s in place", mounts, e.dir)
		return
	}
	if t.Failed() {
		t.Logf("keeping %s for inspection", e.dir)
		return
	}
	_ = os.RemoveAll(e.dir)
}

// gcsfuse returns the mounter's gcsfuse children, sorted; zombies fail the test.
func (e *env) gcsfuse(t *testing.T) []int {
	t.Helper()
	pids, zombies, err := harness.Children(e.mnt.Pid(), "gcsfuse")
	if err != nil {
		t.Fatal(err)
	}
	if zombies != 0 {
		t.Errorf("%d zombie gcsfuse children", zombies)
	}
	slices.Sort(pids)
	return pids
}

// mountsBySource groups the fuse.gcsfuse mounts under the test directory by
// source (one source per gcsfuse session), in mount-table order.
func (e *env) mountsBySource(t *testing.T) map[string][]string {
	t.Helper()
	mounts, err := harness.FUSEMounts(e.dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]string{}
	for _, m := range mounts {
		out[m.Source] = append(out[m.Source], m.Path)
	}
	return out
}

// mountsAt counts the mount-table entries at exactly path.
func (e *env) mountsAt(t *testing.T, path string) int {
	t.Helper()
	mounts, err := harness.FUSEMounts(e.dir + "/")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range mounts {
		if m.Path == path {
			n++
		}
	}
	return n
}

// ---- CSI calls, as kubelet makes them ----

func persistent(volumeID, stage, target string, vc *csi.VolumeCapability, readOnly bool) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: volumeID, StagingTargetPath: stage, TargetPath: target, VolumeCapability: vc, Readonly: readOnly}
}

func inline(volumeID, target string, vc *csi.VolumeCapability, attrs map[string]string) *csi.NodePublishVolumeRequest {
	return &csi.NodePublishVolumeRequest{VolumeId: volumeID, TargetPath: target, VolumeCapability: vc, VolumeContext: attrs}
}

// mustStage creates the staging directory (kubelet's job), stages, and
// registers an unstage for cleanup.
func (e *env) mustStage(t *testing.T, volumeID, stage string, vc *csi.VolumeCapability, attrs map[string]string) {
	t.Helper()
	mkdir(t, stage)
	t.Cleanup(func() {
		e.cleanupCall(t, "unstage "+stage, func(ctx context.Context) error { return e.unstage(ctx, volumeID, stage) })
	})
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if _, err := e.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
		VolumeId: volumeID, StagingTargetPath: stage, VolumeCapability: vc, VolumeContext: attrs,
	}); err != nil {
		t.Fatalf("NodeStageVolume(%s at %s): %v", volumeID, stage, err)
	}
}

// mustPublish publishes and registers an unpublish for cleanup.
func (e *env) mustPublish(t *testing.T, req *csi.NodePublishVolumeRequest) {
	t.Helper()
	t.Cleanup(func() {
		e.cleanupCall(t, "unpublish "+req.TargetPath, func(ctx context.Context) error { return e.unpublish(ctx, req.VolumeId, req.TargetPath) })
	})
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if _, err := e.node().NodePublishVolume(ctx, req); err != nil {
		t.Fatalf("NodePublishVolume(%s at %s): %v", req.VolumeId, req.TargetPath, err)
	}
}

// mustPublishRetry publishes like mustPublish, repeating the call while it
// fails with a retryable code (see retry).
func (e *env) mustPublishRetry(t *testing.T, req *csi.NodePublishVolumeRequest) {
	t.Helper()
	t.Cleanup(func() {
		e.cleanupCall(t, "unpublish "+req.TargetPath, func(ctx context.Context) error { return e.unpublish(ctx, req.VolumeId, req.TargetPath) })
	})
	if n, err := retry(retryFor, func(ctx context.Context) error {
		_, err := e.node().NodePublishVolume(ctx, req)
		return err
	}); err != nil {
		t.Fatalf("NodePublishVolume(%s at %s), %d attempts: %v", req.VolumeId, req.TargetPath, n, err)
	}
}

// mustStageRetry stages like mustStage, repeating the call while it fails
// with a retryable code.
func (e *env) mustStageRetry(t *testing.T, volumeID, stage string, vc *csi.VolumeCapability, attrs map[string]string) {
	t.Helper()
	mkdir(t, stage)
	t.Cleanup(func() {
		e.cleanupCall(t, "unstage "+stage, func(ctx context.Context) error { return e.unstage(ctx, volumeID, stage) })
	})
	if n, err := retry(retryFor, func(ctx context.Context) error {
		_, err := e.node().NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{
			VolumeId: volumeID, StagingTargetPath: stage, VolumeCapability: vc, VolumeContext: attrs,
		})
		return err
	}); err != nil {
		t.Fatalf("NodeStageVolume(%s at %s), %d attempts: %v", volumeID, stage, n, err)
	}
}

// retryFor bounds a retry loop: long enough for a driver restart and for
// the driver's backoff after failed gcsfuse starts.
const retryFor = 30 * time.Second

// retryable reports whether a failed call may succeed when repeated: the
// driver or the mounter is not there (Unavailable, also a connection cut
// mid-call), or another operation on the path is in flight (Aborted).
func retryable(err error) bool {
	c := status.Code(err)
	return c == codes.Unavailable || c == codes.Aborted
}

// retry calls call (each attempt bounded by rpcTimeout) until it succeeds,
// fails with a code that is not retryable, or timeout has passed, sleeping
// 50 ms between attempts; it returns the number of attempts and the last
// error.
func retry(timeout time.Duration, call func(ctx context.Context) error) (int, error) {
	deadline := time.Now().Add(timeout)
	for n := 1; ; n++ {
		ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
		err := call(ctx)
		cancel()
		if err == nil || !retryable(err) {
			return n, err
		}
		if time.Now().After(deadline) {
			return n, fmt.Errorf("still failing after %s: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) mustUnpublish(t *testing.T, volumeID, target string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := e.unpublish(ctx, volumeID, target); err != nil {
		t.Fatalf("NodeUnpublishVolume(%s at %s): %v", volumeID, target, err)
	}
}

func (e *env) mustUnstage(t *testing.T, volumeID, stage string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := e.unstage(ctx, volumeID, stage); err != nil {
		t.Fatalf("NodeUnstageVolume(%s at %s): %v", volumeID, stage, err)
	}
}

func (e *env) unpublish(ctx context.Context, volumeID, target string) error {
	_, err := e.node().NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: target})
	return err
}

func (e *env) unstage(ctx context.Context, volumeID, stage string) error {
	_, err := e.node().NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: stage})
	return err
}

func (e *env) cleanupCall(t *testing.T, what string, call func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if err := call(ctx); err != nil {
		t.Errorf("cleanup: %s: %v", what, err)
	}
}

// ---- the bucket ----

// object reads an object of bucket straight from the fake, not through gcsfuse.
func (e *env) object(t *testing.T, name string) string {
	t.Helper()
	return e.objectIn(t, bucket, name)
}

func (e *env) objectIn(t *testing.T, bkt, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	r, err := e.gcs.Client.Bucket(bkt).Object(name).NewReader(ctx)
	if err != nil {
		t.Fatalf("read gs://%s/%s: %v", bkt, name, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read gs://%s/%s: %v", bkt, name, err)
	}
	return string(b)
}

func (e *env) assertNoObject(t *testing.T, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	if _, err := e.gcs.Client.Bucket(bucket).Object(name).Attrs(ctx); err == nil {
		t.Errorf("gs://%s/%s exists, want no such object", bucket, name)
	}
}

// ---- processes and files ----

// tryRunAs runs a command as uid:gid with no supplementary groups and
// returns its stdout; err carries stderr.
func (e *env) tryRunAs(uid, gid uint32, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: []uint32{}}}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s as %d:%d: %w: %s", name, strings.Join(args, " "), uid, gid, err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func (e *env) runAs(t *testing.T, uid, gid uint32, name string, args ...string) string {
	t.Helper()
	out, err := e.tryRunAs(uid, gid, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func readDirNames(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// readWithin reads a file, giving up after timeout: a read of a dead FUSE
// mount must fail (ENOTCONN), and a hang must not stall the test. A read
// that timed out is left behind in its goroutine.
func readWithin(path string, timeout time.Duration) (string, error) {
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(path)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		return string(r.b), r.err
	case <-time.After(timeout):
		return "", fmt.Errorf("read %s: no answer within %s", path, timeout)
	}
}

// assertGone fails if pid still exists, zombie included: the mounter must
// have reaped its gcsfuse.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !os.IsNotExist(err) {
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		t.Errorf("gcsfuse pid %d still exists (%s), want it exited and reaped", pid, strings.TrimSpace(string(stat)))
	}
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
