package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// readBuf is the read size of every read path: what a simple sequential
// reader (cp, a data loader) uses.
const readBuf = 1 << 20

// FreshResult holds NodeStage+NodePublish latencies of fresh volumes.
type FreshResult struct {
	Stage, Publish, Total []time.Duration
}

// FreshStagePublish times n NodeStage+NodePublish calls, each of a new
// bucket (so a new gcsfuse). Each is checked and followed by an untimed
// NodeUnpublish+NodeUnstage.
func (e *Env) FreshStagePublish(ctx context.Context, n int) (FreshResult, error) {
	var r FreshResult
	for range n {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		bucket := e.name("bench-fresh")
		if err := e.GCS.CreateBucket(bucket); err != nil {
			return r, err
		}
		stage, target := e.paths(bucket)
		t0 := time.Now()
		if err := e.stage(ctx, bucket, stage); err != nil {
			return r, fmt.Errorf("stage %s: %w", bucket, err)
		}
		t1 := time.Now()
		if err := e.publish(ctx, bucket, stage, target); err != nil {
			return r, fmt.Errorf("publish %s: %w", bucket, err)
		}
		t2 := time.Now()
		r.Stage = append(r.Stage, t1.Sub(t0))
		r.Publish = append(r.Publish, t2.Sub(t1))
		r.Total = append(r.Total, t2.Sub(t0))
		if err := checkFUSE(target); err != nil {
			return r, err
		}
		if err := e.unpublish(ctx, bucket, target); err != nil {
			return r, fmt.Errorf("unpublish %s: %w", bucket, err)
		}
		if err := e.unstage(ctx, bucket, stage); err != nil {
			return r, fmt.Errorf("unstage %s: %w", bucket, err)
		}
	}
	return r, nil
}

// StagedResult holds publish latencies of a staged volume and, measured
// interleaved with them on the same staged mount, the bind mounts they boil
// down to: by mount(8)/umount(8) the way k8s.io/mount-utils runs them (bind,
// then a bind remount with the source's flags), and by mount(2)/umount(2).
type StagedResult struct {
	Publish, Unpublish   []time.Duration
	ExecBind, ExecUmount []time.Duration
	SysBind, SysUmount   []time.Duration
}

// StagedPublish stages one volume (untimed), then n times: NodePublish to a
// new target path and NodeUnpublish of it, a mount(8) bind and umount(8),
// and a mount(2) bind and umount(2), each timed. It unstages at the end.
func (e *Env) StagedPublish(ctx context.Context, n int) (StagedResult, error) {
	var r StagedResult
	name := e.name("staged")
	stage, _ := e.paths(name)
	if err := e.stage(ctx, stagedBucket, stage); err != nil {
		return r, fmt.Errorf("stage: %w", err)
	}
	for i := range n {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		_, target := e.paths(fmt.Sprintf("%s-pod-%03d", name, i))
		t0 := time.Now()
		if err := e.publish(ctx, stagedBucket, stage, target); err != nil {
			return r, fmt.Errorf("publish %s: %w", target, err)
		}
		r.Publish = append(r.Publish, time.Since(t0))
		if err := checkFUSE(target); err != nil {
			return r, err
		}
		t0 = time.Now()
		if err := e.unpublish(ctx, stagedBucket, target); err != nil {
			return r, fmt.Errorf("unpublish %s: %w", target, err)
		}
		r.Unpublish = append(r.Unpublish, time.Since(t0))

		bind, umount, err := e.bindByExec(stage, target+"-exec")
		if err != nil {
			return r, err
		}
		r.ExecBind, r.ExecUmount = append(r.ExecBind, bind), append(r.ExecUmount, umount)
		bind, umount, err = e.bindBySyscall(stage, target+"-sys")
		if err != nil {
			return r, err
		}
		r.SysBind, r.SysUmount = append(r.SysBind, bind), append(r.SysUmount, umount)
	}
	if err := e.unstage(ctx, stagedBucket, stage); err != nil {
		return r, fmt.Errorf("unstage: %w", err)
	}
	return r, nil
}

// bindFlags are the source's mount flags that mount-utils carries over to
// a bind mount's remount (it maps the same statfs bits).
func bindFlags(source string) (uintptr, []string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(source, &st); err != nil {
		return 0, nil, err
	}
	var flags uintptr
	var opts []string
	for _, f := range []struct {
		bit  uintptr
		name string
	}{{unix.MS_RDONLY, "ro"}, {unix.MS_NODEV, "nodev"}, {unix.MS_NOEXEC, "noexec"}, {unix.MS_NOSUID, "nosuid"},
		{unix.MS_NOATIME, "noatime"}, {unix.MS_RELATIME, "relatime"}, {unix.MS_NODIRATIME, "nodiratime"}} {
		if uintptr(st.Flags)&f.bit == f.bit {
			flags |= f.bit
			opts = append(opts, f.name)
		}
	}
	return flags, opts, nil
}

// bindByExec does what mount-utils' Mount(source, target, "", ["bind"])
// and Unmount(target) do: exec mount(8) twice, exec umount(8) once.
func (e *Env) bindByExec(source, target string) (bind, umount time.Duration, err error) {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return 0, 0, err
	}
	defer os.Remove(target)
	e.binds[target] = true
	t0 := time.Now()
	if err := execRun("mount", "-o", "bind", source, target); err != nil {
		return 0, 0, err
	}
	_, opts, err := bindFlags(source)
	if err != nil {
		return 0, 0, err
	}
	if err := execRun("mount", "-o", strings.Join(append([]string{"bind", "remount"}, opts...), ","), source, target); err != nil {
		return 0, 0, err
	}
	bind = time.Since(t0)
	t0 = time.Now()
	if err := execRun("umount", target); err != nil {
		return 0, 0, err
	}
	umount = time.Since(t0)
	delete(e.binds, target)
	return bind, umount, nil
}

// bindBySyscall makes the same bind mount with mount(2) and umount(2).
func (e *Env) bindBySyscall(source, target string) (bind, umount time.Duration, err error) {
	if err := os.MkdirAll(target, 0o750); err != nil {
		return 0, 0, err
	}
	defer os.Remove(target)
	e.binds[target] = true
	t0 := time.Now()
	if err := unix.Mount(source, target, "", unix.MS_BIND, ""); err != nil {
		return 0, 0, fmt.Errorf("mount(2) bind %s: %w", target, err)
	}
	flags, _, err := bindFlags(source)
	if err != nil {
		return 0, 0, err
	}
	if err := unix.Mount(source, target, "", unix.MS_BIND|unix.MS_REMOUNT|flags, ""); err != nil {
		return 0, 0, fmt.Errorf("mount(2) bind remount %s: %w", target, err)
	}
	bind = time.Since(t0)
	t0 = time.Now()
	if err := unix.Unmount(target, 0); err != nil {
		return 0, 0, fmt.Errorf("umount(2) %s: %w", target, err)
	}
	umount = time.Since(t0)
	delete(e.binds, target)
	return bind, umount, nil
}

func execRun(name string, args ...string) error {
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// checkFUSE fails unless path is (a bind mount of) a FUSE mount.
func checkFUSE(path string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Type != unix.FUSE_SUPER_MAGIC {
		return fmt.Errorf("%s is not a FUSE mount (statfs type %#x)", path, st.Type)
	}
	return nil
}

// ReadResult is one cold sequential read of the whole object.
type ReadResult struct {
	Bytes   int64
	Elapsed time.Duration // open (or request) to EOF
	// Setup is how long the mount took to answer: for the direct mount
	// gcsfuse exec to a FUSE statfs answering, for CSI NodeStage plus
	// NodePublish; 0 for the raw GET.
	Setup time.Duration
	// PeakRSS is the serving gcsfuse's VmHWM (KiB) after the read; 0 for
	// the raw GET.
	PeakRSS int64
}

// MiBps is the read's throughput in MiB/s.
func (r ReadResult) MiBps() float64 {
	return float64(r.Bytes) / (1 << 20) / r.Elapsed.Seconds()
}

// ReadRawGET fetches the object from the fake's JSON API over a new
// connection: the ceiling for every read path.
func (e *Env) ReadRawGET(ctx context.Context) (ReadResult, error) {
	u := e.GCS.Endpoint + "b/" + url.PathEscape(readBucket) + "/o/" + url.PathEscape(objectName) + "?alt=media"
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return ReadResult{}, err
	}
	t0 := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return ReadResult{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ReadResult{}, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	n, err := readVerify(ctx, resp.Body, e.Data)
	elapsed := time.Since(t0)
	if err != nil {
		return ReadResult{}, fmt.Errorf("GET %s: %w", u, err)
	}
	return ReadResult{Bytes: n, Elapsed: elapsed}, nil
}

// ReadDirect runs gcsfuse itself with the driver's flags on a new plain
// directory, reads the object through it, unmounts, and waits for gcsfuse.
func (e *Env) ReadDirect(ctx context.Context) (ReadResult, error) {
	return e.readDirect(ctx, e.directArgs)
}

// readDirect is ReadDirect with gcsfuse flags args.
func (e *Env) readDirect(ctx context.Context, args []string) (ReadResult, error) {
	dir := filepath.Join(e.Dir, "direct", e.name("mnt"))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return ReadResult{}, err
	}
	defer os.Remove(dir)
	t0 := time.Now()
	g, err := StartGCSFuse(e.GCSFuse, args, e.directEnv, readBucket, dir, filepath.Join(e.Dir, "gcsfuse-direct.log"))
	if err != nil {
		return ReadResult{}, err
	}
	e.direct = g
	if err := g.WaitMounted(ctx, 30*time.Second); err != nil {
		return ReadResult{}, err // Close stops it
	}
	setup := time.Since(t0)
	r, err := readFile(ctx, filepath.Join(dir, objectName), e.Data)
	_, r.PeakRSS, _ = harness.Memory(g.Cmd.Process.Pid)
	e.direct = nil
	if serr := g.Stop(); serr != nil && err == nil {
		err = serr
	}
	r.Setup = setup
	return r, err
}

// ReadCSI stages and publishes the read volume, reads the object at the
// target path, and unpublishes and unstages.
func (e *Env) ReadCSI(ctx context.Context) (ReadResult, error) { return e.readCSI(ctx, nil) }

// readCSI is ReadCSI of a volume with attributes attrs.
func (e *Env) readCSI(ctx context.Context, attrs map[string]string) (ReadResult, error) {
	stage, target := e.paths(e.name("read"))
	t0 := time.Now()
	if err := e.stageWith(ctx, readBucket, stage, attrs); err != nil {
		return ReadResult{}, fmt.Errorf("stage: %w", err)
	}
	if err := e.publishWith(ctx, readBucket, stage, target, attrs); err != nil {
		return ReadResult{}, fmt.Errorf("publish: %w", err)
	}
	setup := time.Since(t0)
	r, err := readFile(ctx, filepath.Join(target, objectName), e.Data)
	if err != nil {
		return r, err
	}
	r.Setup = setup
	r.PeakRSS = e.sessionHWM()
	if err := e.unpublish(ctx, readBucket, target); err != nil {
		return r, fmt.Errorf("unpublish: %w", err)
	}
	if err := e.unstage(ctx, readBucket, stage); err != nil {
		return r, fmt.Errorf("unstage: %w", err)
	}
	return r, nil
}

// ReadSet holds per-trial results of each read path, in the order of
// Env.readPaths; index i of each Results is trial i.
type ReadSet struct {
	Paths []PathResults
}

// PathResults are one read path's trials.
type PathResults struct {
	ID, Name string
	Results  []ReadResult
}

// Get returns the results of the path with id (nil if it did not run).
func (s ReadSet) Get(id string) []ReadResult {
	for _, p := range s.Paths {
		if p.ID == id {
			return p.Results
		}
	}
	return nil
}

// ReadTrials runs trials rounds of every read path, rotating which goes
// first so no path always runs right after another.
func (e *Env) ReadTrials(ctx context.Context, trials int) (ReadSet, error) {
	paths := e.readPaths()
	s := ReadSet{Paths: make([]PathResults, len(paths))}
	for i, p := range paths {
		s.Paths[i] = PathResults{ID: p.id, Name: p.name}
	}
	for t := range trials {
		for k := range paths {
			i := (t + k) % len(paths)
			p := paths[i]
			if err := ctx.Err(); err != nil {
				return s, err
			}
			runtime.GC() // the verifying reader allocates: collect outside the timed part
			r, err := p.read(ctx)
			if err != nil {
				return s, fmt.Errorf("trial %d, %s: %w", t+1, p.name, err)
			}
			s.Paths[i].Results = append(s.Paths[i].Results, r)
			e.logf("  trial %d %-28s %7.0f MiB/s  peak RSS %4.0f MiB", t+1, p.id, r.MiBps(), float64(r.PeakRSS)/1024)
		}
	}
	return s, nil
}

func readFile(ctx context.Context, path string, want []byte) (ReadResult, error) {
	t0 := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return ReadResult{}, err
	}
	defer f.Close()
	n, err := readVerify(ctx, f, want)
	elapsed := time.Since(t0)
	if err != nil {
		return ReadResult{}, fmt.Errorf("%s: %w", path, err)
	}
	return ReadResult{Bytes: n, Elapsed: elapsed}, nil
}

// readVerify reads r to EOF with a 1 MiB buffer, comparing a sample at the
// start of every read with want (a full compare would cost the reader
// memory bandwidth the read paths compete for), and the total length.
func readVerify(ctx context.Context, r io.Reader, want []byte) (int64, error) {
	buf := make([]byte, readBuf)
	var off int64
	for {
		if err := ctx.Err(); err != nil {
			return off, err
		}
		n, err := r.Read(buf)
		if n > 0 {
			k := min(n, 64)
			if off+int64(n) > int64(len(want)) || !bytes.Equal(buf[:k], want[off:off+int64(k)]) {
				return off, fmt.Errorf("content differs from the uploaded object at offset %d", off)
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return off, err
		}
	}
	if off != int64(len(want)) {
		return off, fmt.Errorf("read %d bytes, want %d", off, len(want))
	}
	return off, nil
}
