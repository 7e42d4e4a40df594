package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gcsfuse-csi/gcsfuse-csi/test/harness"
)

// ScaleResult is what many targets of one volume, and many volumes, cost in
// gcsfuse processes and memory (VmRSS, KiB, summed over the driver's
// gcsfuse children), each target or volume having served one small read.
type ScaleResult struct {
	Targets             int   // targets published from one staged volume
	TargetsProcs        int   // gcsfuse processes with all of them published
	TargetsRSS1         int64 // with the first target only
	TargetsRSS          int64 // with all of them
	Volumes             int   // distinct volumes staged and published
	VolumesProcs        int
	VolumesRSS          int64
	TargetsRSSPerExtra  float64 // KiB per target after the first
	VolumesRSSPerVolume float64 // KiB per volume
}

// gcsfuseMemory counts the driver's gcsfuse children and sums their VmRSS.
func (e *Env) gcsfuseMemory() (procs int, rss int64, err error) {
	pids, _, err := harness.Children(e.Driver.Pid(), "gcsfuse")
	if err != nil {
		return 0, 0, err
	}
	for _, pid := range pids {
		r, _, err := harness.Memory(pid)
		if err != nil {
			return 0, 0, err
		}
		rss += r
	}
	return len(pids), rss, nil
}

// readSmall reads path and checks its content.
func readSmall(path, want string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if string(b) != want {
		return fmt.Errorf("%s: %q, want %q", path, b, want)
	}
	return nil
}

// Scale publishes targets targets of one staged volume, then stages and
// publishes volumes distinct volumes (a bucket each), reading a small
// object through each target, and measures the gcsfuse processes and
// their memory. Everything is unpublished and unstaged again.
func (e *Env) Scale(ctx context.Context, targets, volumes int) (ScaleResult, error) {
	r := ScaleResult{Targets: targets, Volumes: volumes}
	if targets > 0 {
		name := e.name("scale")
		stage, _ := e.paths(name)
		if err := e.stage(ctx, stagedBucket, stage); err != nil {
			return r, fmt.Errorf("stage: %w", err)
		}
		var published []string
		for i := range targets {
			if err := ctx.Err(); err != nil {
				return r, err
			}
			_, target := e.paths(fmt.Sprintf("%s-pod-%03d", name, i))
			if err := e.publish(ctx, stagedBucket, stage, target); err != nil {
				return r, fmt.Errorf("publish %s: %w", target, err)
			}
			published = append(published, target)
			if err := readSmall(filepath.Join(target, "hello.txt"), "hello"); err != nil {
				return r, err
			}
			if i == 0 {
				var err error
				if _, r.TargetsRSS1, err = e.gcsfuseMemory(); err != nil {
					return r, err
				}
			}
		}
		var err error
		if r.TargetsProcs, r.TargetsRSS, err = e.gcsfuseMemory(); err != nil {
			return r, err
		}
		if targets > 1 {
			r.TargetsRSSPerExtra = float64(r.TargetsRSS-r.TargetsRSS1) / float64(targets-1)
		}
		for _, target := range published {
			if err := e.unpublish(ctx, stagedBucket, target); err != nil {
				return r, fmt.Errorf("unpublish %s: %w", target, err)
			}
		}
		if err := e.unstage(ctx, stagedBucket, stage); err != nil {
			return r, fmt.Errorf("unstage: %w", err)
		}
	}
	if volumes > 0 {
		type vol struct{ bucket, stage, target string }
		var vols []vol
		for range volumes {
			if err := ctx.Err(); err != nil {
				return r, err
			}
			bucket := e.name("bench-vol")
			if err := e.GCS.CreateBucket(bucket); err != nil {
				return r, err
			}
			if err := e.GCS.Upload(bucket, "hello.txt", []byte("hello")); err != nil {
				return r, err
			}
			stage, target := e.paths(bucket)
			if err := e.stage(ctx, bucket, stage); err != nil {
				return r, fmt.Errorf("stage %s: %w", bucket, err)
			}
			if err := e.publish(ctx, bucket, stage, target); err != nil {
				return r, fmt.Errorf("publish %s: %w", bucket, err)
			}
			vols = append(vols, vol{bucket, stage, target})
			if err := readSmall(filepath.Join(target, "hello.txt"), "hello"); err != nil {
				return r, err
			}
		}
		var err error
		if r.VolumesProcs, r.VolumesRSS, err = e.gcsfuseMemory(); err != nil {
			return r, err
		}
		r.VolumesRSSPerVolume = float64(r.VolumesRSS) / float64(volumes)
		for _, v := range vols {
			if err := e.unpublish(ctx, v.bucket, v.target); err != nil {
				return r, fmt.Errorf("unpublish %s: %w", v.bucket, err)
			}
			if err := e.unstage(ctx, v.bucket, v.stage); err != nil {
				return r, fmt.Errorf("unstage %s: %w", v.bucket, err)
			}
		}
	}
	return r, nil
}
