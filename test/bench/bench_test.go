package main

import (
	"bytes"
	"context"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// TestBenchSmoke runs the whole benchmark at tiny sizes so `make test`
// keeps it working: every row must hold a positive measurement, and nothing
// may stay mounted.
func TestBenchSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the benchmark needs root: the driver mounts FUSE and bind mounts for real")
	}
	if fi, err := os.Stat("/dev/fuse"); err != nil || fi.Mode()&os.ModeDevice == 0 {
		t.Skipf("the benchmark needs /dev/fuse for real gcsfuse mounts: %v", err)
	}
	for _, b := range [][2]string{{"gcsfuse-csi", "GCSFUSE_CSI_BIN"}, {"gcsfuse", "GCSFUSE_BIN"}} {
		if _, err := harness.Binary(b[0], b[1]); err != nil {
			t.Skipf("%v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	pagesBefore, pagesErr := os.ReadFile(maxPagesLimitFile)
	var progress bytes.Buffer
	rep, err := Run(ctx, Config{ObjectMiB: 4, ReadTrials: 2, ReadWarmup: 0, FreshN: 3, StagedN: 3, Candidates: true, SmallN: 20, SmallTrials: 1, ScaleTargets: 3, ScaleVolumes: 2}, &progress)
	if pagesErr == nil {
		if after, err := os.ReadFile(maxPagesLimitFile); err != nil || !bytes.Equal(after, pagesBefore) {
			t.Errorf("%s is %q after the run, was %q (%v)", maxPagesLimitFile, after, pagesBefore, err)
		}
	}
	if rep != nil {
		var out strings.Builder
		rep.Print(&out)
		t.Logf("report:\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	t.Logf("took %s", time.Since(start))

	wantReads := 4 + len(profilesMeasured) + len(candidates)
	if slices.ContainsFunc(rep.Reads, func(r ReadRow) bool { return r.ID == pathBigRequests }) {
		wantReads++ // max_pages_limit allowed the 4 MiB-request candidate
	}
	if sc := rep.Scale; sc == nil || sc.TargetsProcs != 1 || sc.VolumesProcs != 2 || sc.TargetsRSS1 <= 0 || sc.VolumesRSSPerVolume <= 0 {
		t.Errorf("scale: %+v, want 1 gcsfuse for 3 targets of one volume, 2 for 2 volumes, positive RSS", rep.Scale)
	}
	if len(rep.Latency) != 12 || len(rep.Reads) != wantReads || len(rep.Small) != 2+len(profilesMeasured) {
		t.Errorf("got %d latency rows, %d read rows and %d small-file rows, want 12, %d and %d", len(rep.Latency), len(rep.Reads), len(rep.Small), wantReads, 2+len(profilesMeasured))
	}
	for _, r := range rep.Small {
		if r.Trials != 1 || r.LsCold <= 0 || r.LsAgain <= 0 || r.ReadAll <= 0 || r.LsVsBase <= 0 {
			t.Errorf("small-file row %q: %+v, want positive values", r.Name, r)
		}
	}
	for _, r := range rep.Latency {
		if r.N <= 0 || r.P50 <= 0 || r.P90 < r.P50 {
			t.Errorf("latency row %q: n=%d p50=%s p90=%s, want positive with p90 >= p50", r.Name, r.N, r.P50, r.P90)
		}
	}
	for _, r := range rep.Reads {
		if r.ID != pathRaw && r.PeakRSS <= 0 {
			t.Errorf("read row %q: no gcsfuse peak RSS", r.Name)
		}
		if r.Trials != 2 || r.Median <= 0 || r.Min <= 0 || r.VsRaw <= 0 {
			t.Errorf("read row %q: trials=%d median=%.1f min=%.1f vsRaw=%.2f, want 2 trials and positive values", r.Name, r.Trials, r.Median, r.Min, r.VsRaw)
		}
	}
	if rep.CSIvsDirect <= 0 || rep.DriverRSS <= 0 || rep.DriverHWM < rep.DriverRSS {
		t.Errorf("CSI/direct=%.2f driver RSS=%d KiB HWM=%d KiB, want positive", rep.CSIvsDirect, rep.DriverRSS, rep.DriverHWM)
	}
	if !strings.Contains(rep.DirectCmd, "--custom-endpoint=") || !strings.Contains(rep.DirectCmd, "allow_other") || !strings.Contains(rep.DirectCmd, "--enable-kernel-reader=true") {
		t.Errorf("direct gcsfuse command %q lacks the driver's flags", rep.DirectCmd)
	}
	// The doc and its charts: well-formed SVG, every table in the markdown.
	doc := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := rep.WriteDoc(doc); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"](benchmarks-read.svg)", "](benchmarks-ls.svg)", "profile read-mostly", "`ls -l` cold"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("benchmarks.md lacks %q", want)
		}
	}
	for _, svg := range []string{"benchmarks-read.svg", "benchmarks-ls.svg"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(doc), svg))
		if err != nil {
			t.Fatal(err)
		}
		d := xml.NewDecoder(bytes.NewReader(b))
		for {
			if _, err := d.Token(); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("%s is not well-formed XML: %v", svg, err)
			}
		}
	}
	// Run has torn everything down: nothing may stay mounted, and the work
	// dir is gone.
	if m, err := harness.FUSEMounts(rep.WorkDir + "/"); err != nil || len(m) > 0 {
		t.Errorf("mounts left under %s: %v (%v)", rep.WorkDir, m, err)
	}
	if _, err := os.Stat(rep.WorkDir); !os.IsNotExist(err) {
		t.Errorf("work dir %s still there: %v", rep.WorkDir, err)
	}
}
