package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// maxPagesLimitFile is the node-wide cap on FUSE request size, in pages.
// The kernel's default, 256 (1 MiB), is what the driver's profiles fit in.
const maxPagesLimitFile = "/proc/sys/fs/fuse/max_pages_limit"

// bigRequestPages is what 4 MiB FUSE requests need.
const bigRequestPages = 1024

// bigRequestFlags are the flags of the 4 MiB-request candidate, over the
// driver's own.
var bigRequestFlags = map[string]string{"fuse-max-request-size-kb": "4096", "max-read-ahead-kb": "16384"}

// withFlags replaces (or adds) --name=value flags in args.
func withFlags(args []string, flags map[string]string) []string {
	out := slices.Clone(args)
	for name, value := range flags {
		i := slices.IndexFunc(out, func(a string) bool { return strings.HasPrefix(a, "--"+name+"=") })
		if i >= 0 {
			out[i] = "--" + name + "=" + value
		} else {
			out = slices.Insert(out, 0, "--"+name+"="+value)
		}
	}
	return out
}

// raiseMaxPages makes max_pages_limit at least want, for the read trials
// of the 4 MiB-request candidate only, if it can (the bench runs as root).
// It returns whether the candidate can run, what it did (for the report),
// and restore, which puts the previous value back if it changed it (also
// if gcsfuse raised it further meanwhile); the caller defers restore.
func raiseMaxPages(want int) (ok bool, note string, restore func() error) {
	restore = func() error { return nil }
	b, err := os.ReadFile(maxPagesLimitFile)
	if err != nil {
		return false, fmt.Sprintf("%s: %v: the 4 MiB-request candidate is skipped", maxPagesLimitFile, err), restore
	}
	prev, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return false, fmt.Sprintf("%s: %q: the 4 MiB-request candidate is skipped", maxPagesLimitFile, b), restore
	}
	if prev >= want {
		return true, fmt.Sprintf("`%s` was already %d (≥ %d): left as it was", maxPagesLimitFile, prev, want), restore
	}
	if os.Geteuid() != 0 {
		return false, fmt.Sprintf("`%s` is %d and the bench is not root: the 4 MiB-request candidate is skipped", maxPagesLimitFile, prev), restore
	}
	if err := os.WriteFile(maxPagesLimitFile, []byte(strconv.Itoa(want)+"\n"), 0); err != nil {
		return false, fmt.Sprintf("raise `%s` from %d to %d: %v: the 4 MiB-request candidate is skipped", maxPagesLimitFile, prev, want, err), restore
	}
	restore = func() error {
		if err := os.WriteFile(maxPagesLimitFile, []byte(strconv.Itoa(prev)+"\n"), 0); err != nil {
			return fmt.Errorf("restore %s to %d: %w", maxPagesLimitFile, prev, err)
		}
		return nil
	}
	return true, fmt.Sprintf("`%s` raised by the bench from %d to %d for the read trials only, and restored to %d after them", maxPagesLimitFile, prev, want, prev), restore
}
