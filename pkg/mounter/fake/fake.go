// Package fake provides in-memory FUSE and Daemon implementations for unit
// tests of the node driver's edge cases, on top of mount.FakeMounter.
package fake

import (
	"context"
	"errors"
	"os"
	"sync"
	"time"

	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/auth"
	"github.com/gcsfuse-csi/gcsfuse-csi/pkg/mounter"
	mount "k8s.io/mount-utils"
)

// FUSE records FUSE mounts in a FakeMounter's table.
type FUSE struct {
	Mounter *mount.FakeMounter
	Err     error // returned by every Mount when set
}

// Mount implements mounter.FUSE.
func (f *FUSE) Mount(source, target string, kernelOptions []string) (*os.File, error) {
	if f.Err != nil {
		return nil, f.Err
	}
	if err := f.Mounter.Mount(source, target, mounter.FUSEType, kernelOptions); err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	w.Close()
	return r, nil
}

// Daemon pretends to run gcsfuse sessions.
type Daemon struct {
	mu      sync.Mutex
	Running map[string]mounter.Session
	Dead    map[string]error // sessions that exited, with their error
	Starts  int
	Stops   int
	// Refreshes counts Refresh calls per session.
	Refreshes map[string]int
	// ExitOnStart, when set, makes every started session exit at once with
	// this error, as a gcsfuse that cannot start does.
	ExitOnStart error
	// Unreachable, when set, is returned by every call, as by a mounter
	// that is down.
	Unreachable error
	// Now is the clock for start and exit times (nil: time.Now).
	Now func() time.Time

	started, exited map[string]time.Time
}

// NewDaemon returns an empty fake Daemon.
func NewDaemon() *Daemon {
	return &Daemon{Running: map[string]mounter.Session{}, Dead: map[string]error{}, Refreshes: map[string]int{},
		started: map[string]time.Time{}, exited: map[string]time.Time{}}
}

// Start implements mounter.Daemon.
func (d *Daemon) Start(_ context.Context, s mounter.Session, dev *os.File) error {
	dev.Close()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Unreachable != nil {
		return d.Unreachable
	}
	d.Starts++
	d.started[s.ID] = d.now()
	if d.ExitOnStart != nil {
		d.Dead[s.ID] = d.ExitOnStart
		d.exited[s.ID] = d.now()
		return nil
	}
	d.Running[s.ID] = s
	delete(d.Dead, s.ID)
	return nil
}

// Status implements mounter.Daemon.
func (d *Daemon) Status(_ context.Context, id string) (mounter.SessionStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status(id)
}

func (d *Daemon) status(id string) (mounter.SessionStatus, error) {
	if d.Unreachable != nil {
		return mounter.SessionStatus{}, d.Unreachable
	}
	if err, ok := d.Dead[id]; ok {
		return mounter.SessionStatus{ID: id, Err: err, Started: d.started[id], Exited: d.exited[id]}, nil
	}
	if s, ok := d.Running[id]; ok {
		return mounter.SessionStatus{ID: id, Bucket: s.Bucket, Identity: s.Credentials.Identity(), Running: true, Started: d.started[id]}, nil
	}
	return mounter.SessionStatus{}, mounter.ErrUnknownSession
}

// List implements mounter.Daemon.
func (d *Daemon) List(context.Context) ([]mounter.SessionStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Unreachable != nil {
		return nil, d.Unreachable
	}
	var out []mounter.SessionStatus
	for id := range d.Running {
		st, _ := d.status(id)
		out = append(out, st)
	}
	for id := range d.Dead {
		st, _ := d.status(id)
		out = append(out, st)
	}
	return out, nil
}

// Stop implements mounter.Daemon.
func (d *Daemon) Stop(_ context.Context, id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, running := d.Running[id]
	_, dead := d.Dead[id]
	if running || dead {
		d.Stops++
	}
	delete(d.Running, id)
	delete(d.Dead, id)
	return nil
}

// Refresh implements mounter.Daemon: it replaces a running session's
// credentials.
func (d *Daemon) Refresh(_ context.Context, id string, c *auth.Credentials) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.Unreachable != nil {
		return d.Unreachable
	}
	s, ok := d.Running[id]
	if !ok {
		return mounter.ErrUnknownSession
	}
	s.Credentials = c
	d.Running[id] = s
	d.Refreshes[id]++
	return nil
}

// Kill marks a running session as exited with err.
func (d *Daemon) Kill(id string, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err == nil {
		err = errors.New("killed")
	}
	delete(d.Running, id)
	d.Dead[id] = err
	d.exited[id] = d.now()
}

func (d *Daemon) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// Count returns the number of running sessions.
func (d *Daemon) Count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.Running)
}
