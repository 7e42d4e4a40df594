package mounter

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// Profile names a vetted gcsfuse flag set: what a volume runs with unless
// it sets a flag itself. Every value comes from a measurement on real
// mounts (docs/benchmarks.md; `make bench` measures them again).
type Profile string

// Profiles a volume may ask for with the profile attribute.
const (
	ProfileDefault    Profile = "default"
	ProfileReadMostly Profile = "read-mostly"
	ProfileFileCache  Profile = "file-cache"
	ProfileWriteHeavy Profile = "write-heavy"
)

// AttrProfile is the volume attribute that picks a profile.
const AttrProfile = "profile"

// Flags only the kernel reader uses: without it they mean nothing, so they
// go when a profile's kernel reader goes.
var kernelReaderFlags = []string{"enable-kernel-reader", "fuse-max-request-size-kb", "max-read-ahead-kb"}

// Flags that make a file cache.
var fileCacheFlags = []string{"file-cache-max-size-mb", "file-cache-enable-parallel-downloads", "file-cache-cache-file-for-range-read"}

// Read tuning shared by the profiles that read through the kernel.
//
//   - enable-kernel-reader: FUSE asynchronous reads with the kernel's
//     read-ahead and page cache; cold sequential reads go from ~0.3 of a raw
//     GET (gcsfuse's own defaults) to ~0.55-0.7 (docs/benchmarks.md).
//   - fuse-max-request-size-kb=1024: 1 MiB FUSE reads. That is the kernel's
//     default max_pages_limit (256 pages), so no node-wide setting changes;
//     larger requests would need /proc/sys/fs/fuse/max_pages_limit raised for
//     every FUSE mount on the node, which the driver never does.
//   - max-read-ahead-kb: the mount's bdi read_ahead_kb. gcsfuse cannot set it
//     on a /dev/fd mount: it writes it to --kernel-params-file and the node
//     driver applies it (kernel_linux.go).
var kernelRead = map[string]string{
	"enable-kernel-reader":     "true",
	"fuse-max-request-size-kb": "1024",
	"max-read-ahead-kb":        "4096",
}

// defaultReadAheadKB is the bdi read_ahead_kb the driver sets itself on a
// mount without the kernel reader (a file cache, write-heavy): the kernel's
// 128 KiB default keeps gcsfuse's sequential reads latency-bound; 1 MiB
// about doubles them (PERF.md: 25% -> 54% of a raw GET).
const defaultReadAheadKB = 1024

// profileSpec is one profile: gcsfuse flags, and the bdi read_ahead_kb the
// driver applies when gcsfuse does not ask for one (no kernel reader).
type profileSpec struct {
	flags       map[string]string
	readAheadKB int
	doc         string
}

func merge(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		maps.Copy(out, m)
	}
	return out
}

// profiles is read-only. None of them sets a metadata TTL of 0, a stat
// cache of 0 or buffered reads (PERF.md: slower, broken with implicit dirs,
// +320 MB per mount).
var profiles = map[Profile]profileSpec{
	ProfileDefault: {
		flags:       kernelRead,
		readAheadKB: defaultReadAheadKB,
		doc:         "sequential reads through the kernel reader (1 MiB requests, 4 MiB read-ahead); gcsfuse's metadata caching as is",
	},
	ProfileReadMostly: {
		flags: merge(kernelRead, map[string]string{
			"kernel-list-cache-ttl-secs":       "60",
			"experimental-enable-dentry-cache": "true",
			"experimental-enable-readdirplus":  "true",
		}),
		readAheadKB: defaultReadAheadKB,
		doc:         "default, plus directory listings kept 60 s in the kernel, the kernel's dentry cache (entries live as long as the stat cache's TTL) and readdirplus: ls -l of large directories ~10x faster; objects added by others show up in listings up to 60 s late",
	},
	ProfileFileCache: {
		flags: map[string]string{
			"enable-kernel-reader":                 "false",
			"file-cache-max-size-mb":               "10240",
			"file-cache-enable-parallel-downloads": "true",
		},
		readAheadKB: defaultReadAheadKB,
		doc:         "a 10 GiB file cache (fileCacheCapacity overrides) with parallel downloads, for data read again after the page cache dropped it; no kernel reader (it bypasses the file cache); the driver sets read_ahead_kb=1024",
	},
	ProfileWriteHeavy: {
		flags: map[string]string{
			"enable-kernel-reader":    "false",
			"enable-streaming-writes": "true",
		},
		readAheadKB: defaultReadAheadKB,
		doc:         "streaming writes (uploads as the file is written, no local staging); no kernel reader (its page cache is for data that does not change under it); the driver sets read_ahead_kb=1024",
	},
}

// ProfileNames lists the profiles, the default first.
func ProfileNames() []string {
	return []string{string(ProfileDefault), string(ProfileReadMostly), string(ProfileFileCache), string(ProfileWriteHeavy)}
}

// setProfile validates and sets the profile attribute.
func (v *Volume) setProfile(value, field string) error {
	p := Profile(value)
	if _, ok := profiles[p]; !ok {
		return fmt.Errorf("%s=%q: want one of %s", field, value, strings.Join(ProfileNames(), ", "))
	}
	v.profile = p
	return nil
}

// Profile returns the volume's profile (ProfileDefault unless set).
func (v *Volume) Profile() Profile {
	if v.profile == "" {
		return ProfileDefault
	}
	return v.profile
}

// Tuning is a volume's gcsfuse flags once its profile is expanded, and what
// the driver applies to the mount's kernel settings itself.
type Tuning struct {
	// Flags maps gcsfuse flag names (no dashes) to values: the profile's,
	// overridden by every flag the volume sets itself.
	Flags map[string]string
	// KernelReader: gcsfuse reads through the kernel, and writes the kernel
	// settings it wants (read_ahead_kb, max_background,
	// congestion_threshold) to --kernel-params-file for the driver to apply.
	KernelReader bool
	// ReadAheadKB is the bdi read_ahead_kb the driver sets itself when
	// gcsfuse does not ask for one; 0 leaves the kernel's default.
	ReadAheadKB int
}

// Tuning expands the volume's profile under the flags it sets itself. A
// file cache and the kernel reader exclude each other (the kernel reader
// bypasses the file cache without a word): whichever of the two comes only
// from the profile gives way. Both set explicitly is refused earlier, by
// checkFlagConflicts.
func (v *Volume) Tuning() Tuning {
	spec := profiles[v.Profile()]
	prof := maps.Clone(spec.flags)
	_, explicitReader := v.flags["enable-kernel-reader"]
	if fileCacheOn(v.flags) && !explicitReader {
		for _, f := range kernelReaderFlags {
			delete(prof, f)
		}
		prof["enable-kernel-reader"] = "false"
	}
	if v.flags["enable-kernel-reader"] == "true" {
		for _, f := range fileCacheFlags {
			if _, own := v.flags[f]; !own {
				delete(prof, f)
			}
		}
	}
	t := Tuning{Flags: merge(prof, v.flags), ReadAheadKB: spec.readAheadKB}
	t.KernelReader = t.Flags["enable-kernel-reader"] == "true"
	if !t.KernelReader {
		// Only the kernel reader uses these; the read-ahead asked for is
		// then the driver's to apply.
		if s, ok := t.Flags["max-read-ahead-kb"]; ok {
			t.ReadAheadKB, _ = strconv.Atoi(s)
		}
		delete(t.Flags, "fuse-max-request-size-kb")
		delete(t.Flags, "max-read-ahead-kb")
	}
	return t
}

// Args returns the tuned flags as "--name=value", sorted.
func (t Tuning) Args() []string {
	names := slices.Sorted(maps.Keys(t.Flags))
	out := make([]string, 0, len(names))
	for _, k := range names {
		out = append(out, "--"+k+"="+t.Flags[k])
	}
	return out
}

// FileCache reports whether the tuned flags ask for a file cache.
func (t Tuning) FileCache() bool { return fileCacheOn(t.Flags) }

func fileCacheOn(flags map[string]string) bool {
	s, ok := flags["file-cache-max-size-mb"]
	return ok && s != "0"
}

// checkFlagConflicts refuses flag combinations that cannot do what they
// say, whichever order they were set in.
func (v *Volume) checkFlagConflicts(field string) error {
	if v.flags["enable-kernel-reader"] == "true" && fileCacheOn(v.flags) {
		return fmt.Errorf("%s: enable-kernel-reader=true and a file cache (file-cache-max-size-mb=%s, set by %s) exclude each other: the kernel reader bypasses the file cache; drop one (the file-cache profile turns the kernel reader off)",
			field, v.flags["file-cache-max-size-mb"], v.field["file-cache-max-size-mb"])
	}
	return nil
}

// maxReadAheadKB bounds read_ahead_kb, from a volume or from gcsfuse's
// kernel parameters file: gcsfuse's own largest default (128 MiB).
const maxReadAheadKB = 128 * 1024
