package mounter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"k8s.io/klog/v2"
)

// Per-mount kernel settings. gcsfuse serving /dev/fd/N cannot change the
// kernel settings of its own mount: it runs unprivileged and never sees the
// mount point. With --kernel-params-file it writes what it wants instead
// (gcsfuse internal/kernelparams: {"parameters":[{"name":..,"value":..}]}),
// and only with the kernel reader. The daemon host reads the file and
// returns it in the session's status; the node driver, which is root,
// validates each value and writes it under sysfs for that mount's FUSE
// connection, found in /proc/self/mountinfo (never by a stat of the mount).
//
// Node-wide settings (fuse-max-pages-limit, transparent-hugepages) are
// never applied: one volume must not change every FUSE mount on the node.
// The profiles keep FUSE requests at 1 MiB, the kernel's default
// max_pages_limit, so nothing needs it (profiles.go).

// KernelParam is one setting of gcsfuse's kernel parameters file.
type KernelParam struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Names gcsfuse v3.13.0 uses (internal/kernelparams/contract.go).
const (
	paramReadAhead     = "max-read-ahead-kb"
	paramMaxBackground = "fuse-max-background-requests"
	paramCongestion    = "fuse-congestion-window-threshold"
	paramMaxPages      = "fuse-max-pages-limit"
	paramHugePages     = "transparent-hugepages"
)

// kernelParamsName is the file, in the session's directory, that gcsfuse
// writes its kernel parameters to.
const kernelParamsName = "kernel-params.json"

// maxKernelParamsFile bounds what is read of it.
const maxKernelParamsFile = 64 << 10

// readKernelParams reads gcsfuse's kernel parameters file; a missing file
// (not written yet, or nothing to ask for) is no parameters.
func readKernelParams(path string) ([]KernelParam, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var cfg struct {
		Parameters []KernelParam `json:"parameters"`
	}
	if err := json.NewDecoder(&limitedReader{f, maxKernelParamsFile}).Decode(&cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg.Parameters, nil
}

type limitedReader struct {
	f *os.File
	n int
}

func (r *limitedReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("kernel parameters file too large")
	}
	if len(p) > r.n {
		p = p[:r.n]
	}
	n, err := r.f.Read(p)
	r.n -= n
	return n, err
}

// kernelSetting is where one parameter goes and what values it may take.
type kernelSetting struct {
	file     func(t *kernelTuner, minor uint32) (string, error)
	min, max int
}

var kernelSettings = map[string]kernelSetting{
	paramReadAhead: {min: 0, max: maxReadAheadKB, file: func(t *kernelTuner, minor uint32) (string, error) {
		return filepath.Join(t.bdiDir, fmt.Sprintf("0:%d", minor), "read_ahead_kb"), nil
	}},
	paramMaxBackground: {min: 1, max: 1024, file: func(t *kernelTuner, minor uint32) (string, error) {
		return t.connFile(minor, "max_background")
	}},
	paramCongestion: {min: 1, max: 1024, file: func(t *kernelTuner, minor uint32) (string, error) {
		return t.connFile(minor, "congestion_threshold")
	}},
}

// applyOrder: max_background before congestion_threshold (a threshold
// above max_background means nothing).
var applyOrder = []string{paramReadAhead, paramMaxBackground, paramCongestion}

// kernelTuner writes per-mount kernel settings.
type kernelTuner struct {
	bdiDir string                 // /sys/class/bdi
	ctlDir func() (string, error) // where fusectl is mounted
}

func (t *kernelTuner) connFile(minor uint32, name string) (string, error) {
	dir, err := t.ctlDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, strconv.FormatUint(uint64(minor), 10), name), nil
}

// apply writes params for connection conn. It returns what it set, as
// "name=value", and the errors of what it could not or would not set.
func (t *kernelTuner) apply(conn fuseConn, params []KernelParam) ([]string, error) {
	want := map[string]int{}
	var errs []error
	for _, p := range params {
		s, ok := kernelSettings[p.Name]
		switch {
		case p.Name == paramMaxPages || p.Name == paramHugePages:
			errs = append(errs, fmt.Errorf("%s=%s not applied: it is node-wide, and the driver changes no node-wide setting", p.Name, p.Value))
			continue
		case !ok:
			errs = append(errs, fmt.Errorf("unknown kernel parameter %q ignored", p.Name))
			continue
		}
		n, err := strconv.Atoi(p.Value)
		if err != nil || n < s.min || n > s.max {
			errs = append(errs, fmt.Errorf("%s=%q ignored: want an integer from %d to %d", p.Name, p.Value, s.min, s.max))
			continue
		}
		want[p.Name] = n
	}
	var applied []string
	for _, name := range applyOrder {
		n, ok := want[name]
		if !ok {
			continue
		}
		path, err := kernelSettings[name].file(t, conn.ID)
		if err == nil {
			err = os.WriteFile(path, []byte(strconv.Itoa(n)+"\n"), 0)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("set %s=%d for FUSE connection %d of %q: %w", name, n, conn.ID, conn.MountPoint, err))
			continue
		}
		applied = append(applied, name+"="+strconv.Itoa(n))
	}
	return applied, errors.Join(errs...)
}

// kernelParamsWait bounds how long the driver waits for gcsfuse's kernel
// parameters once the mount answers. gcsfuse writes them before it serves
// the mount (fs.NewServer), so they are there by then; the wait only covers
// a slow file system.
const kernelParamsWait = time.Second

// tune applies the mount's kernel settings right after it became ready:
// those gcsfuse asked for (kernel reader), else the tuning's read-ahead.
// A failure costs speed, not correctness: it is logged, never returned.
func (m *Mounter) tune(ctx context.Context, mountpoint, sid string, t Tuning) {
	var params []KernelParam
	if t.KernelReader {
		params = m.kernelParams(ctx, sid)
	}
	if !slices.ContainsFunc(params, func(p KernelParam) bool { return p.Name == paramReadAhead }) {
		ra := t.ReadAheadKB
		if s, ok := t.Flags["max-read-ahead-kb"]; ok && t.KernelReader {
			// gcsfuse did not say (a mounter from before kernel params):
			// apply what it was asked to use.
			ra, _ = strconv.Atoi(s)
		}
		if ra > 0 {
			params = append(params, KernelParam{Name: paramReadAhead, Value: strconv.Itoa(ra)})
		}
	}
	if len(params) == 0 || m.tuner == nil {
		return
	}
	conn, err := m.conns.lookup(mountpoint)
	if err != nil {
		klog.V(4).InfoS("no FUSE connection to tune", "path", mountpoint, "err", err)
		return
	}
	applied, err := m.tuner.apply(conn, params)
	if err != nil {
		klog.InfoS("some kernel settings of the mount were not applied", "path", mountpoint, "connection", conn.ID, "applied", applied, "err", err)
	}
	klog.V(2).InfoS("tuned mount", "path", mountpoint, "connection", conn.ID, "settings", applied)
}

// kernelParams waits up to kernelParamsWait for the parameters gcsfuse
// wrote for session sid.
func (m *Mounter) kernelParams(ctx context.Context, sid string) []KernelParam {
	ctx, cancel := context.WithTimeout(ctx, kernelParamsWait)
	defer cancel()
	for {
		st, err := m.daemon.Status(ctx, sid)
		if err == nil && len(st.KernelParams) > 0 {
			return st.KernelParams
		}
		select {
		case <-ctx.Done():
			klog.V(4).InfoS("gcsfuse wrote no kernel parameters", "session", sid, "err", err)
			return nil
		case <-time.After(20 * time.Millisecond):
		}
	}
}
