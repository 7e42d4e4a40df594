package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"
)

// Targets printed next to the results. They are goals, not assertions: the
// run never fails on them.
const (
	targetStagedPublishP50 = 10 * time.Millisecond
	targetFreshP50         = 150 * time.Millisecond
	targetCSIvsDirect      = 0.98
	// targetVsRaw: the default profile's cold sequential read against a
	// raw GET of the same object in the same run.
	targetVsRaw = 0.6
)

// LatencyRow is one latency measurement.
type LatencyRow struct {
	Name     string
	N        int
	P50, P90 time.Duration
	Target   string // "" if none
	Meets    bool
}

// ReadRow is one read path.
type ReadRow struct {
	ID               string
	Name             string
	Trials           int
	Median, Min, Max float64 // MiB/s
	VsRaw            float64 // median of per-trial ratios to the raw GET
	// VsRawMin and VsRawMax bound the per-trial ratios.
	VsRawMin, VsRawMax float64
	PeakRSS            float64 // MiB, median VmHWM of the serving gcsfuse; 0 unknown
	Target             string
	Meets              bool
}

// SmallRow is one configuration of the small-file run (seconds).
type SmallRow struct {
	ID, Name                         string
	Trials                           int
	LsCold, LsColdMin, LsColdMax     float64
	LsAgain, ReadAll                 float64
	ReadAllMin, ReadAllMax, LsVsBase float64 // LsVsBase: gcsfuse defaults' ls -l / this one's
}

// Report is everything one run measured.
type Report struct {
	Config      Config
	Latency     []LatencyRow
	Reads       []ReadRow
	Small       []SmallRow
	CSIvsDirect float64 // median of per-trial CSI/direct ratios
	// CSIvsDirectMin and Max bound the per-trial CSI/direct ratios: the
	// noise the median sits in.
	CSIvsDirectMin, CSIvsDirectMax float64
	Scale                          *ScaleResult // nil if not measured
	MaxPagesNote                   string       // what the bench did to max_pages_limit
	DriverRSS                      int64        // KiB, at the end of the run
	DriverHWM                      int64        // KiB, peak
	DirectCmd                      string
	WorkDir                        string // removed at the end unless Config.KeepDir
	Elapsed                        time.Duration
}

// Percentile is the nearest-rank q-quantile (0 < q <= 1) of d.
func Percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Median is the median of v (the mean of the middle two for even lengths).
func Median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func latency(name string, d []time.Duration) LatencyRow {
	return LatencyRow{Name: name, N: len(d), P50: Percentile(d, 0.5), P90: Percentile(d, 0.9)}
}

func (r LatencyRow) withTarget(p50 time.Duration) LatencyRow {
	r.Target = fmt.Sprintf("p50 ≤ %d ms", p50.Milliseconds())
	r.Meets = r.N > 0 && r.P50 <= p50
	return r
}

func (rep *Report) addFresh(f FreshResult) {
	if len(f.Total) == 0 {
		return
	}
	rep.Latency = append(rep.Latency,
		latency("fresh volume: NodeStage+NodePublish (new bucket, new gcsfuse)", f.Total).withTarget(targetFreshP50),
		latency("  of which NodeStage", f.Stage),
		latency("  of which NodePublish", f.Publish))
}

func (rep *Report) addStaged(s StagedResult) {
	if len(s.Publish) == 0 {
		return
	}
	rep.Latency = append(rep.Latency,
		latency("staged volume: NodePublish (new target path)", s.Publish).withTarget(targetStagedPublishP50),
		latency("staged volume: NodeUnpublish", s.Unpublish))
	if len(s.ExecBind) > 0 {
		rep.Latency = append(rep.Latency,
			latency("  baseline: bind + bind-remount by exec of mount(8) (what mount-utils does)", s.ExecBind),
			latency("  baseline: umount(8) exec", s.ExecUmount))
	}
	if len(s.SysBind) > 0 {
		rep.Latency = append(rep.Latency,
			latency("  baseline: bind + bind-remount by mount(2)", s.SysBind),
			latency("  baseline: umount(2)", s.SysUmount))
	}
}

func setups(rs []ReadResult) []time.Duration {
	out := make([]time.Duration, len(rs))
	for i, r := range rs {
		out[i] = r.Setup
	}
	return out
}

func mibps(rs []ReadResult) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = r.MiBps()
	}
	return out
}

// ratios are a[i]/b[i] of each trial i.
func ratios(a, b []ReadResult) []float64 {
	var v []float64
	for i := range min(len(a), len(b)) {
		v = append(v, a[i].MiBps()/b[i].MiBps())
	}
	return v
}

func (rep *Report) addReads(s ReadSet) {
	raw, direct, csi := s.Get(pathRaw), s.Get(pathDirectDriver), s.Get(pathCSIDefault)
	if len(s.Get(pathDirectDefault)) > 0 {
		rep.Latency = append(rep.Latency, latency("read volume: direct gcsfuse (its defaults), exec → mount answers", setups(s.Get(pathDirectDefault))))
	}
	if len(direct) > 0 {
		rep.Latency = append(rep.Latency, latency("read volume: direct gcsfuse (driver's flags), exec → mount answers (baseline for NodeStage)", setups(direct)))
	}
	if len(csi) > 0 {
		rep.Latency = append(rep.Latency, latency("read volume: NodeStage+NodePublish (same bucket each trial)", setups(csi)))
	}
	for _, p := range s.Paths {
		if len(p.Results) == 0 {
			continue
		}
		v := mibps(p.Results)
		r := ReadRow{ID: p.ID, Name: p.Name, Trials: len(v), Median: Median(v), Min: slices.Min(v), Max: slices.Max(v)}
		if rv := ratios(p.Results, raw); len(rv) > 0 {
			r.VsRaw, r.VsRawMin, r.VsRawMax = Median(rv), slices.Min(rv), slices.Max(rv)
		}
		var rss []float64
		for _, x := range p.Results {
			if x.PeakRSS > 0 {
				rss = append(rss, float64(x.PeakRSS)/1024)
			}
		}
		r.PeakRSS = Median(rss)
		if p.ID == pathCSIDefault {
			r.Target = fmt.Sprintf("≥ %.2f of raw GET", targetVsRaw)
			r.Meets = r.VsRaw >= targetVsRaw
		}
		rep.Reads = append(rep.Reads, r)
	}
	if len(csi) > 0 && len(direct) > 0 {
		v := ratios(csi, direct)
		rep.CSIvsDirect, rep.CSIvsDirectMin, rep.CSIvsDirectMax = Median(v), slices.Min(v), slices.Max(v)
	}
}

func (rep *Report) addSmall(s SmallSet) {
	secs := func(rs []SmallResult, f func(SmallResult) time.Duration) []float64 {
		out := make([]float64, len(rs))
		for i, r := range rs {
			out[i] = f(r).Seconds()
		}
		return out
	}
	base := 0.0
	for _, p := range s.Paths {
		if len(p.Results) == 0 {
			continue
		}
		ls := secs(p.Results, func(r SmallResult) time.Duration { return r.LsCold })
		all := secs(p.Results, func(r SmallResult) time.Duration { return r.ReadAll })
		row := SmallRow{ID: p.ID, Name: p.Name, Trials: len(ls),
			LsCold: Median(ls), LsColdMin: slices.Min(ls), LsColdMax: slices.Max(ls),
			LsAgain: Median(secs(p.Results, func(r SmallResult) time.Duration { return r.LsAgain })),
			ReadAll: Median(all), ReadAllMin: slices.Min(all), ReadAllMax: slices.Max(all)}
		if p.ID == pathDirectDefault {
			base = row.LsCold
		}
		rep.Small = append(rep.Small, row)
	}
	for i := range rep.Small {
		if base > 0 && rep.Small[i].LsCold > 0 {
			rep.Small[i].LsVsBase = base / rep.Small[i].LsCold
		}
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	}
}

func verdict(target string, meets bool) string {
	switch {
	case target == "":
		return ""
	case meets:
		return "meets"
	default:
		return "**misses**"
	}
}

// Print writes the report as markdown.
func (rep *Report) Print(w io.Writer) {
	c := rep.Config
	fmt.Fprintf(w, "## gcsfuse-csi node benchmark\n\n")
	fmt.Fprintf(w, "fake-gcs-server (memory backend) on 127.0.0.1, a separate process (pinned by go.mod); fresh n=%d, staged n=%d, %d read trials (after %d untimed) of a %d MiB object.\n\n",
		c.FreshN, c.StagedN, c.ReadTrials, c.ReadWarmup, c.ObjectMiB)
	if len(rep.Latency) > 0 {
		fmt.Fprintf(w, "### Latency\n\n| measurement | n | p50 | p90 | target | |\n|---|--:|--:|--:|---|---|\n")
		for _, r := range rep.Latency {
			fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s |\n", r.Name, r.N, fmtDur(r.P50), fmtDur(r.P90), r.Target, verdict(r.Target, r.Meets))
		}
		fmt.Fprintln(w)
	}
	if len(rep.Reads) > 0 {
		fmt.Fprintf(w, "### Cold sequential read, %d MiB, 1 MiB reads, fresh mount per trial, paths interleaved\n\n", c.ObjectMiB)
		fmt.Fprintf(w, "| read path | trials | median MiB/s | min–max MiB/s | vs raw GET (min–max) | gcsfuse peak RSS | target | |\n|---|--:|--:|--:|--:|--:|---|---|\n")
		for _, r := range rep.Reads {
			rss := "–"
			if r.PeakRSS > 0 {
				rss = fmt.Sprintf("%.0f MiB", r.PeakRSS)
			}
			fmt.Fprintf(w, "| %s | %d | %.0f | %.0f–%.0f | %.2f (%.2f–%.2f) | %s | %s | %s |\n", r.Name, r.Trials, r.Median, r.Min, r.Max, r.VsRaw, r.VsRawMin, r.VsRawMax, rss, r.Target, verdict(r.Target, r.Meets))
		}
		fmt.Fprintln(w)
	}
	if len(rep.Small) > 0 {
		fmt.Fprintf(w, "### %d small objects (4 KiB) in one directory, fresh mount per trial, configurations interleaved\n\n", c.SmallN)
		fmt.Fprintf(w, "| configuration | trials | `ls -l` cold (min–max) | `ls -l` again | vs gcsfuse defaults | read all files (min–max) |\n|---|--:|--:|--:|--:|--:|\n")
		for _, r := range rep.Small {
			fmt.Fprintf(w, "| %s | %d | %.3f s (%.3f–%.3f) | %.3f s | %.1fx | %.2f s (%.2f–%.2f) |\n", r.Name, r.Trials, r.LsCold, r.LsColdMin, r.LsColdMax, r.LsAgain, r.LsVsBase, r.ReadAll, r.ReadAllMin, r.ReadAllMax)
		}
		fmt.Fprintln(w)
	}
	if sc := rep.Scale; sc != nil {
		fmt.Fprintf(w, "### Processes and memory at scale (gcsfuse VmRSS summed, each target or volume having read a small object)\n\n")
		fmt.Fprintf(w, "| measurement | gcsfuse processes | total gcsfuse RSS | per unit |\n|---|--:|--:|--:|\n")
		mib := func(kib float64) string { return fmt.Sprintf("%.1f MiB", kib/1024) }
		if sc.Targets > 0 {
			fmt.Fprintf(w, "| one volume, 1 target | 1 | %s | |\n", mib(float64(sc.TargetsRSS1)))
			fmt.Fprintf(w, "| one volume, %d targets | %d | %s | %s per extra target |\n", sc.Targets, sc.TargetsProcs, mib(float64(sc.TargetsRSS)), mib(sc.TargetsRSSPerExtra))
		}
		if sc.Volumes > 0 {
			fmt.Fprintf(w, "| %d distinct volumes | %d | %s | %s per volume |\n", sc.Volumes, sc.VolumesProcs, mib(float64(sc.VolumesRSS)), mib(sc.VolumesRSSPerVolume))
		}
		fmt.Fprintln(w)
	}
	if rep.CSIvsDirect > 0 {
		fmt.Fprintf(w, "- CSI/direct read: **%.3f**, per-trial %.3f–%.3f (target ≥ %.2f: %s)", rep.CSIvsDirect, rep.CSIvsDirectMin, rep.CSIvsDirectMax, targetCSIvsDirect, verdict("x", rep.CSIvsDirect >= targetCSIvsDirect))
		if rep.CSIvsDirectMin < targetCSIvsDirect && rep.CSIvsDirectMax > 1/targetCSIvsDirect {
			fmt.Fprintf(w, "; the per-trial spread is wider than the target's margin: more -read-trials to resolve it")
		}
		fmt.Fprintln(w)
	}
	if len(rep.Reads) > 0 {
		var at []string
		for _, r := range rep.Reads {
			if r.ID != pathRaw && r.VsRaw >= targetVsRaw {
				at = append(at, fmt.Sprintf("%s (%.2f)", r.Name, r.VsRaw))
			}
		}
		if len(at) == 0 {
			at = []string{"none"}
		}
		fmt.Fprintf(w, "- At ≥ %.2f of the raw GET (median) in this run: %s.\n", targetVsRaw, strings.Join(at, "; "))
		fmt.Fprintf(w, "- Ratios are medians of per-trial ratios (paths paired within a trial); peak RSS is the serving gcsfuse's VmHWM after the read.\n")
	}
	if rep.MaxPagesNote != "" {
		fmt.Fprintf(w, "- max_pages_limit: %s.\n", strings.TrimSuffix(rep.MaxPagesNote, "."))
	}
	if rep.DriverRSS > 0 {
		fmt.Fprintf(w, "- Driver memory at the end: VmRSS %.1f MiB, VmHWM %.1f MiB\n", float64(rep.DriverRSS)/1024, float64(rep.DriverHWM)/1024)
	}
	if rep.DirectCmd != "" {
		fmt.Fprintf(w, "- Direct mount: `%s` (flags and environment copied from the driver's own gcsfuse)\n", rep.DirectCmd)
	}
	if rep.Elapsed > 0 {
		fmt.Fprintf(w, "- Total run time: %s\n", fmtDur(rep.Elapsed))
	}
}
