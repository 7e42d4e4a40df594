package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// Read path ids: the rows of the read table, in this order.
const (
	pathRaw           = "raw"
	pathDirectDefault = "direct-gcsfuse-defaults"
	pathDirectDriver  = "direct-driver-flags"
	pathCSIDefault    = "csi-default"
	pathBigRequests   = "candidate-4m-requests"
)

// profilesMeasured are the profiles measured through the CSI target path.
var profilesMeasured = []string{"read-mostly", "file-cache", "write-heavy"}

// candidates are read tunings measured next to the default, to choose it
// from (Config.Candidates): the default's kernel reader with other
// read-ahead sizes.
var candidates = []struct {
	id, name string
	attrs    map[string]string
}{
	{"candidate-ra-1m", "candidate: kernel reader, 1 MiB requests, 1 MiB read-ahead", map[string]string{"readAheadKB": "1024"}},
	{"candidate-ra-16m", "candidate: kernel reader, 1 MiB requests, 16 MiB read-ahead", map[string]string{"readAheadKB": "16384"}},
	{"candidate-no-reader", "candidate: no kernel reader, driver read-ahead 1 MiB", map[string]string{"kernelReader": "false", "readAheadKB": "1024"}},
}

type readPath struct {
	id, name string
	read     func(context.Context) (ReadResult, error)
}

// readPaths are every read path of a run, in table order.
func (e *Env) readPaths() []readPath {
	paths := []readPath{
		{pathRaw, "raw HTTP GET of the JSON API (ceiling)", e.ReadRawGET},
		{pathDirectDefault, "gcsfuse run directly, gcsfuse's own defaults", func(ctx context.Context) (ReadResult, error) { return e.readDirect(ctx, e.defaultArgs) }},
		{pathDirectDriver, "gcsfuse run directly, the driver's default flags", e.ReadDirect},
		{pathCSIDefault, "CSI target path, profile default", e.ReadCSI},
	}
	for _, p := range profilesMeasured {
		attrs := map[string]string{"profile": p}
		paths = append(paths, readPath{"csi-" + p, "CSI target path, profile " + p, func(ctx context.Context) (ReadResult, error) { return e.readCSI(ctx, attrs) }})
	}
	if e.cfg.Candidates {
		for _, c := range candidates {
			paths = append(paths, readPath{c.id, c.name, func(ctx context.Context) (ReadResult, error) { return e.readCSI(ctx, c.attrs) }})
		}
		if e.bigRequests {
			// Volumes cannot ask for requests over 1 MiB (the node-wide
			// limit): gcsfuse runs directly, the driver's flags otherwise.
			args := withFlags(e.directArgs, bigRequestFlags)
			paths = append(paths, readPath{pathBigRequests, "candidate: gcsfuse run directly, driver's flags but 4 MiB requests, 16 MiB read-ahead (needs max_pages_limit ≥ 1024)",
				func(ctx context.Context) (ReadResult, error) { return e.readDirect(ctx, args) }})
		}
	}
	return paths
}

// tuningFlags are the gcsfuse flags the driver's profiles set. Without
// them, the driver's command line is gcsfuse with its own defaults.
var tuningFlags = []string{"enable-kernel-reader", "fuse-max-request-size-kb", "max-read-ahead-kb", "kernel-params-file",
	"kernel-list-cache-ttl-secs", "experimental-enable-dentry-cache", "experimental-enable-readdirplus",
	"file-cache-max-size-mb", "file-cache-enable-parallel-downloads", "enable-streaming-writes"}

// gcsfuseDefaults drops the driver's tuning from direct-mount flags.
func gcsfuseDefaults(args []string) []string {
	return slices.DeleteFunc(slices.Clone(args), func(a string) bool {
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		return slices.Contains(tuningFlags, name)
	})
}

// sessionHWM is the VmHWM (KiB) of the driver's only gcsfuse, 0 if there
// is not exactly one.
func (e *Env) sessionHWM() int64 {
	pids, _, err := harness.Children(e.Driver.Pid(), "gcsfuse")
	if err != nil || len(pids) != 1 {
		return 0
	}
	_, hwm, _ := harness.Memory(pids[0])
	return hwm
}

// Small files.
const (
	smallBucket = "bench-small"
	smallDir    = "files"
	smallSize   = 4 << 10
)

// SmallResult is one cold run over the small-file directory on a fresh
// mount: `ls -l` (readdir, then lstat of every entry), the same again,
// then reading every file.
type SmallResult struct {
	LsCold, LsAgain, ReadAll time.Duration
}

// uploadSmall creates the small-file bucket with n objects of 4 KiB.
func (e *Env) uploadSmall(n int) error {
	if err := e.GCS.CreateBucket(smallBucket); err != nil {
		return err
	}
	body := make([]byte, smallSize)
	for i := range body {
		body[i] = byte('a' + i%26)
	}
	for i := range n {
		if err := e.GCS.Upload(smallBucket, fmt.Sprintf("%s/f%05d", smallDir, i), body); err != nil {
			return err
		}
	}
	return nil
}

// lsAndRead does the small-file run on dir (a mount's root).
func lsAndRead(ctx context.Context, root string, n int) (SmallResult, error) {
	dir := filepath.Join(root, smallDir)
	var r SmallResult
	ls := func() (time.Duration, error) {
		t0 := time.Now()
		ents, err := os.ReadDir(dir)
		if err != nil {
			return 0, err
		}
		for _, ent := range ents {
			if _, err := os.Lstat(filepath.Join(dir, ent.Name())); err != nil {
				return 0, err
			}
		}
		if len(ents) != n {
			return 0, fmt.Errorf("ls %s: %d entries, want %d", dir, len(ents), n)
		}
		return time.Since(t0), nil
	}
	var err error
	if r.LsCold, err = ls(); err != nil {
		return r, err
	}
	if r.LsAgain, err = ls(); err != nil {
		return r, err
	}
	t0 := time.Now()
	for i := range n {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)))
		if err != nil {
			return r, err
		}
		if len(b) != smallSize {
			return r, fmt.Errorf("f%05d: %d bytes, want %d", i, len(b), smallSize)
		}
	}
	r.ReadAll = time.Since(t0)
	return r, nil
}

// SmallSet holds per-configuration small-file results.
type SmallSet struct {
	Paths []SmallPath
}

// SmallPath is one configuration's trials.
type SmallPath struct {
	ID, Name string
	Results  []SmallResult
}

// SmallTrials runs trials rounds of the small-file run on every
// configuration, each on a fresh mount, rotating the order.
func (e *Env) SmallTrials(ctx context.Context, trials int) (SmallSet, error) {
	type cfg struct {
		id, name string
		run      func(context.Context) (SmallResult, error)
	}
	csi := func(attrs map[string]string) func(context.Context) (SmallResult, error) {
		return func(ctx context.Context) (SmallResult, error) {
			stage, target := e.paths(e.name("small"))
			if err := e.stageWith(ctx, smallBucket, stage, attrs); err != nil {
				return SmallResult{}, fmt.Errorf("stage: %w", err)
			}
			if err := e.publishWith(ctx, smallBucket, stage, target, attrs); err != nil {
				return SmallResult{}, fmt.Errorf("publish: %w", err)
			}
			r, err := lsAndRead(ctx, target, e.cfg.SmallN)
			if err != nil {
				return r, err
			}
			if err := e.unpublish(ctx, smallBucket, target); err != nil {
				return r, err
			}
			return r, e.unstage(ctx, smallBucket, stage)
		}
	}
	cfgs := []cfg{
		{pathDirectDefault, "gcsfuse run directly, gcsfuse's own defaults", func(ctx context.Context) (SmallResult, error) {
			dir := filepath.Join(e.Dir, "direct", e.name("small"))
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return SmallResult{}, err
			}
			defer os.Remove(dir)
			g, err := StartGCSFuse(e.GCSFuse, append(slices.Clone(e.defaultArgs), "--implicit-dirs=true"), e.directEnv, smallBucket, dir, filepath.Join(e.Dir, "gcsfuse-direct.log"))
			if err != nil {
				return SmallResult{}, err
			}
			e.direct = g
			if err := g.WaitMounted(ctx, 30*time.Second); err != nil {
				return SmallResult{}, err
			}
			r, err := lsAndRead(ctx, dir, e.cfg.SmallN)
			e.direct = nil
			if serr := g.Stop(); serr != nil && err == nil {
				err = serr
			}
			return r, err
		}},
		{pathCSIDefault, "CSI target path, profile default", csi(map[string]string{"implicitDirs": "true"})},
	}
	for _, p := range profilesMeasured {
		cfgs = append(cfgs, cfg{"csi-" + p, "CSI target path, profile " + p, csi(map[string]string{"implicitDirs": "true", "profile": p})})
	}
	s := SmallSet{Paths: make([]SmallPath, len(cfgs))}
	for i, c := range cfgs {
		s.Paths[i] = SmallPath{ID: c.id, Name: c.name}
	}
	for t := range trials {
		for k := range cfgs {
			i := (t + k) % len(cfgs)
			if err := ctx.Err(); err != nil {
				return s, err
			}
			runtime.GC()
			r, err := cfgs[i].run(ctx)
			if err != nil {
				return s, fmt.Errorf("small files, trial %d, %s: %w", t+1, cfgs[i].id, err)
			}
			s.Paths[i].Results = append(s.Paths[i].Results, r)
			e.logf("  trial %d %-28s ls -l %s, again %s, read all %s", t+1, cfgs[i].id, fmtDur(r.LsCold), fmtDur(r.LsAgain), fmtDur(r.ReadAll))
		}
	}
	return s, nil
}
