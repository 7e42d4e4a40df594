package mounter

import (
	"time"

	mount "k8s.io/mount-utils"
)

// Observer is told about every mount that started (or tried to start)
// gcsfuse: the driver's metrics.
type Observer interface {
	// Mounted reports a mount that took d; restart says it replaced a dead
	// or hung mount of the same session; err is nil on success.
	Mounted(d time.Duration, restart bool, err error)
}

func (m *Mounter) observe(start time.Time, restart bool, err error) {
	if m.cfg.Observer != nil {
		m.cfg.Observer.Mounted(time.Since(start), restart, err)
	}
}

// Daemon is the FUSE daemon host the Mounter hands sessions to.
func (m *Mounter) Daemon() Daemon { return m.daemon }

// SessionMount is a session's FUSE mount and how many binds it has.
type SessionMount struct {
	Path    string // the session mount (the first mount of its source)
	Bucket  string
	Session string
	Binds   int
}

// SessionMounts lists this driver's session mounts in the mount table, in
// mount order. It reads the table only: nothing here can hang on gcsfuse.
func (m *Mounter) SessionMounts() ([]SessionMount, error) {
	mps, err := m.List()
	if err != nil {
		return nil, err
	}
	return sessionMounts(mps), nil
}

func sessionMounts(mps []mount.MountPoint) []SessionMount {
	var out []SessionMount
	index := map[string]int{} // by source
	for _, mp := range mps {
		sid, ok := sessionOf(mp)
		if !ok {
			continue
		}
		if i, seen := index[mp.Device]; seen {
			if !sameTail(mp.Path, out[i].Path) {
				out[i].Binds++
			}
			continue
		}
		if mp.Type != FUSEType {
			continue // a bind whose session mount is gone (FakeMounter)
		}
		index[mp.Device] = len(out)
		out = append(out, SessionMount{Path: mp.Path, Bucket: mp.Device[:len(mp.Device)-len(sid)-1], Session: sid})
	}
	return out
}
