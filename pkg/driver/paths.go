package driver

import (
	"os"
	"path/filepath"
	"strings"
)

// checkNodePath confines a path kubelet passes (a target, a staging path, a
// volume path) to what kubelet owns: inside the kubelet directory
// (--kubelet-dir), outside the driver's own state directory (whose session
// mounts no request may name), and not through a symlink that leads
// elsewhere. p is already clean and absolute (cleanPath).
//
// It never stats p itself: p may be a FUSE mount whose gcsfuse hangs, and a
// stat would hang with it. The parent is resolved (kubelet's directories,
// never FUSE), and p's own type is read from the parent's directory
// entries, which does not cross into a mount.
func (d *Driver) checkNodePath(field, p string) error {
	kubelet := filepath.Clean(d.opts.KubeletDir)
	state := filepath.Clean(d.opts.StateDir)
	if !within(p, kubelet) || p == kubelet {
		return invalid("%s=%q is outside the kubelet directory %q (--kubelet-dir)", field, p, kubelet)
	}
	if within(p, state) {
		return invalid("%s=%q is inside the driver's state directory %q: no volume is ever published there", field, p, state)
	}
	parent, err := resolveExisting(filepath.Dir(p))
	if err != nil {
		return invalid("%s=%q: cannot resolve its directory: %v", field, p, err)
	}
	realKubelet, err := filepath.EvalSymlinks(kubelet)
	if err != nil {
		realKubelet = kubelet
	}
	realState, err := filepath.EvalSymlinks(state)
	if err != nil {
		realState = state
	}
	real := filepath.Join(parent, filepath.Base(p))
	if !within(real, realKubelet) || within(real, realState) {
		return invalid("%s=%q leads through a symlink to %q, outside the kubelet directory %q or inside the driver's state directory", field, p, real, kubelet)
	}
	if isSymlink(parent, filepath.Base(p)) {
		return invalid("%s=%q is a symlink; kubelet passes directories", field, p)
	}
	return nil
}

// within reports whether p is dir or below it.
func within(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// resolveExisting resolves the symlinks of the longest existing prefix of
// p and appends the rest, which does not exist yet (kubelet creates it, or
// the driver does).
func resolveExisting(p string) (string, error) {
	rest := ""
	for {
		real, err := filepath.EvalSymlinks(p)
		if err == nil {
			return filepath.Join(real, rest), nil
		}
		if !os.IsNotExist(err) {
			return "", err
		}
		parent := filepath.Dir(p)
		if parent == p {
			return filepath.Join(p, rest), nil
		}
		rest = filepath.Join(filepath.Base(p), rest)
		p = parent
	}
}

// isSymlink reads name's type from dir's entries (getdents: no stat of
// name, so no FUSE request if name is a mount point).
func isSymlink(dir, name string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	for {
		entries, err := f.ReadDir(256)
		for _, e := range entries {
			if e.Name() == name {
				return e.Type()&os.ModeSymlink != 0
			}
		}
		if err != nil {
			return false
		}
	}
}
