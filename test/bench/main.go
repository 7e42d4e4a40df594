// Command bench measures the node driver against baselines taken in the same
// run, on this machine, against fake-gcs-server on 127.0.0.1 (built from the
// version go.mod pins and run as a process of its own, so that it does not
// share the bench's Go runtime):
//
//   - NodeStage+NodePublish of a fresh volume (a new bucket, so a new
//     gcsfuse, each time), and NodePublish/NodeUnpublish of a staged volume
//     next to the bind mounts it boils down to (mount(8) and mount(2));
//   - cold sequential read throughput of one large object by a raw HTTP GET
//     (the ceiling), by gcsfuse run directly with its own defaults and with
//     the driver's flags, and through a CSI target path with each profile
//     (and the candidate tunings the default was chosen from, including 4
//     MiB FUSE requests, for which the bench, as root, raises
//     /proc/sys/fs/fuse/max_pages_limit during the read trials only and
//     restores it), interleaved per trial, with each gcsfuse's peak RSS;
//   - `ls -l` (twice) and reading every file of a directory of small
//     objects, for gcsfuse's defaults and each profile;
//   - gcsfuse processes and RSS for many targets of one volume, and for
//     many distinct volumes.
//
// It prints markdown tables to stdout (progress goes to stderr), and with
// -doc writes them, with SVG charts, to a markdown file:
//
//	make bench
//	go run ./test/bench -object-mib=512 -read-trials=7
//
// Everything it starts is stopped by PID and every mount it makes (or has
// the driver make) is unmounted, also on an error or Ctrl-C. It needs root
// and /dev/fuse, and `make build` (bin/gcsfuse-csi, bin/gcsfuse).
//
// The measurement functions (Setup, Env.FreshStagePublish,
// Env.StagedPublish, Env.ReadRawGET, Env.ReadDirect, Env.ReadCSI, Run) are
// usable from tests: see bench_test.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// Config sizes a run. The zero value is not useful: start from
// DefaultConfig.
type Config struct {
	ObjectMiB  int // size of the object read cold
	ReadTrials int // interleaved read trials (raw GET, direct, CSI)
	ReadWarmup int // untimed read rounds first (first reads of a run are slow)
	FreshN     int // fresh-volume stage+publish samples
	StagedN    int // staged-volume publish samples
	DriverV    int // driver klog verbosity (logging costs latency)
	KeepDir    bool
	// Candidates adds the read tunings the default was chosen from.
	Candidates  bool
	SmallN      int // small objects (4 KiB) in one directory; 0 skips
	SmallTrials int // small-file trials per configuration
	// ScaleTargets targets of one volume, then ScaleVolumes distinct
	// volumes, for their gcsfuse processes and memory; 0 skips either.
	ScaleTargets, ScaleVolumes int
	Doc                        string // write the report, with SVG charts, to this markdown file
}

// DefaultConfig keeps a whole run under 5 minutes on 2 cores. The object
// is 512 MiB, as in PERF.md: a shorter read pays the read-ahead's ramp-up
// at a larger share, and its ratio to the raw GET comes out lower.
func DefaultConfig() Config {
	return Config{ObjectMiB: 512, ReadTrials: 5, ReadWarmup: 1, FreshN: 20, StagedN: 50, Candidates: true, SmallN: 2000, SmallTrials: 3, ScaleTargets: 50, ScaleVolumes: 50}
}

func (c Config) validate() error {
	if c.ObjectMiB < 1 || c.ReadTrials < 1 || c.FreshN < 1 || c.StagedN < 1 {
		return fmt.Errorf("-object-mib, -read-trials, -fresh-n and -staged-n must be at least 1")
	}
	if c.ReadWarmup < 0 || c.SmallN < 0 || (c.SmallN > 0 && c.SmallTrials < 1) || c.ScaleTargets < 0 || c.ScaleVolumes < 0 {
		return fmt.Errorf("-read-warmup, -small-n, -scale-targets and -scale-volumes must not be negative, -small-trials at least 1")
	}
	return nil
}

func main() {
	cfg := DefaultConfig()
	flag.IntVar(&cfg.ObjectMiB, "object-mib", cfg.ObjectMiB, "size in MiB of the object read cold (random bytes, kept in memory by the fake)")
	flag.IntVar(&cfg.ReadTrials, "read-trials", cfg.ReadTrials, "read trials; each reads by raw GET, direct gcsfuse and the CSI target path, in rotating order")
	flag.IntVar(&cfg.ReadWarmup, "read-warmup", cfg.ReadWarmup, "untimed read rounds (all three paths) before the timed trials")
	flag.IntVar(&cfg.FreshN, "fresh-n", cfg.FreshN, "fresh-volume NodeStage+NodePublish samples (a new bucket and gcsfuse each)")
	flag.IntVar(&cfg.StagedN, "staged-n", cfg.StagedN, "staged-volume NodePublish/NodeUnpublish samples (a new target path each)")
	flag.IntVar(&cfg.DriverV, "driver-v", cfg.DriverV, "driver log verbosity (-v); logging is on the timed path")
	flag.BoolVar(&cfg.KeepDir, "keep", cfg.KeepDir, "keep the work directory (driver and gcsfuse logs) after the run")
	flag.BoolVar(&cfg.Candidates, "candidates", cfg.Candidates, "also read with the tunings the default profile was chosen from")
	flag.IntVar(&cfg.SmallN, "small-n", cfg.SmallN, "4 KiB objects in one directory for ls -l and read-all per profile (0 skips)")
	flag.IntVar(&cfg.SmallTrials, "small-trials", cfg.SmallTrials, "small-file trials per configuration")
	flag.IntVar(&cfg.ScaleTargets, "scale-targets", cfg.ScaleTargets, "targets published from one staged volume, for gcsfuse processes and RSS (0 skips)")
	flag.IntVar(&cfg.ScaleVolumes, "scale-volumes", cfg.ScaleVolumes, "distinct volumes staged and published at once, for RSS per volume (0 skips)")
	flag.StringVar(&cfg.Doc, "doc", cfg.Doc, "also write the report as markdown, with SVG charts next to it (e.g. docs/benchmarks.md)")
	flag.Parse()
	os.Exit(run(cfg))
}

func run(cfg Config) int {
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	// The first Ctrl-C cancels ctx: measurements stop, cleanup runs. Later
	// ones are swallowed until cleanup is done (stop restores the default).
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	finished := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "bench: interrupted; unmounting and stopping what it started")
		case <-finished:
		}
	}()
	start := time.Now()
	rep, err := Run(ctx, cfg, os.Stderr)
	close(finished)
	if rep != nil {
		rep.Elapsed = time.Since(start)
		rep.Print(os.Stdout)
		if cfg.Doc != "" && err == nil {
			if derr := rep.WriteDoc(cfg.Doc); derr != nil {
				fmt.Fprintln(os.Stderr, "bench:", derr)
				return 1
			}
			fmt.Fprintln(os.Stderr, "bench: wrote", cfg.Doc)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	return 0
}

// Run sets up the fake GCS and the driver, takes every measurement, and
// tears everything down. On an error it returns what was measured so far.
func Run(ctx context.Context, cfg Config, progress io.Writer) (rep *Report, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	env, err := Setup(ctx, cfg, progress)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil && ctx.Err() == nil {
			env.cfg.KeepDir = true // keep the driver and gcsfuse logs
		}
		if cerr := env.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}()
	rep = &Report{Config: cfg, DirectCmd: env.DirectCommand(), WorkDir: env.Dir}

	env.logf("fresh volumes: %d x NodeStage+NodePublish (new bucket each)", cfg.FreshN)
	fresh, err := env.FreshStagePublish(ctx, cfg.FreshN)
	rep.addFresh(fresh)
	if err != nil {
		return rep, fmt.Errorf("fresh stage+publish: %w", err)
	}

	env.logf("staged volume: %d x NodePublish/NodeUnpublish, interleaved with mount(8) and mount(2) binds", cfg.StagedN)
	staged, err := env.StagedPublish(ctx, cfg.StagedN)
	rep.addStaged(staged)
	if err != nil {
		return rep, fmt.Errorf("staged publish: %w", err)
	}

	reads, err := env.readAll(ctx, cfg, rep)
	rep.addReads(reads)
	if err != nil {
		return rep, err
	}

	if cfg.SmallN > 0 {
		env.logf("small files: %d x 4 KiB in one directory; %d trials x (direct, each profile): ls -l, again, read all", cfg.SmallN, cfg.SmallTrials)
		if err := env.uploadSmall(cfg.SmallN); err != nil {
			return rep, fmt.Errorf("small files: upload: %w", err)
		}
		small, err := env.SmallTrials(ctx, cfg.SmallTrials)
		rep.addSmall(small)
		if err != nil {
			return rep, fmt.Errorf("small files: %w", err)
		}
	}

	if cfg.ScaleTargets > 0 || cfg.ScaleVolumes > 0 {
		env.logf("scale: %d targets of one volume, then %d distinct volumes", cfg.ScaleTargets, cfg.ScaleVolumes)
		sc, err := env.Scale(ctx, cfg.ScaleTargets, cfg.ScaleVolumes)
		if err != nil {
			return rep, fmt.Errorf("scale: %w", err)
		}
		rep.Scale = &sc
	}

	rep.DriverRSS, rep.DriverHWM, err = harness.Memory(env.Driver.Pid())
	if err != nil {
		return rep, fmt.Errorf("driver memory: %w", err)
	}
	return rep, nil
}

// readAll runs the read warm-up and trials. With candidates, it first
// raises max_pages_limit (root only) for the 4 MiB-request candidate, and
// puts it back when the trials end, whatever happens.
func (e *Env) readAll(ctx context.Context, cfg Config, rep *Report) (_ ReadSet, err error) {
	if cfg.Candidates {
		ok, note, restore := raiseMaxPages(bigRequestPages)
		e.bigRequests = ok
		rep.MaxPagesNote = note
		e.logf("%s", note)
		defer func() {
			if rerr := restore(); rerr != nil {
				err = errors.Join(err, rerr)
				rep.MaxPagesNote += fmt.Sprintf(" (restore failed: %v)", rerr)
			}
			e.bigRequests = false
			if b, rerr := os.ReadFile(maxPagesLimitFile); rerr == nil {
				e.logf("%s is %s now", maxPagesLimitFile, strings.TrimSpace(string(b)))
			}
		}()
	}
	if cfg.ReadWarmup > 0 {
		e.logf("cold reads: %d untimed warm-up round(s)", cfg.ReadWarmup)
		if _, err := e.ReadTrials(ctx, cfg.ReadWarmup); err != nil {
			return ReadSet{}, fmt.Errorf("read warm-up: %w", err)
		}
	}
	e.logf("cold reads: %d trials x %d read paths of %d MiB", cfg.ReadTrials, len(e.readPaths()), cfg.ObjectMiB)
	reads, err := e.ReadTrials(ctx, cfg.ReadTrials)
	if err != nil {
		return reads, fmt.Errorf("reads: %w", err)
	}
	return reads, nil
}
