package mounter

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// ErrBackoff: gcsfuse for this session failed recently; the next attempt
// waits. The driver maps it to Unavailable, which kubelet retries.
var ErrBackoff = errors.New("backing off")

// Crash-loop bounds. A session whose gcsfuse fails to start, or dies within
// stableAfter of starting, counts one failure; the next start of the same
// session waits 1 s, 2 s, 4 s ... up to maxDelay. After giveUpAfter failures
// in a row the error says so plainly: a retry alone will not fix it.
const (
	firstDelay  = time.Second
	maxDelay    = 5 * time.Minute
	stableAfter = time.Minute
	giveUpAfter = 5
)

type failure struct {
	count int
	last  time.Time
	err   error
	dead  time.Time // start time of the last dead session counted
}

// crashLoops records consecutive gcsfuse failures by session id.
type crashLoops struct {
	mu  sync.Mutex
	m   map[string]*failure
	now func() time.Time
}

func delayFor(count int) time.Duration {
	d := firstDelay
	for i := 1; i < count && d < maxDelay; i++ {
		d *= 2
	}
	return min(d, maxDelay)
}

// admit returns an ErrBackoff error if sid may not start gcsfuse yet.
func (c *crashLoops) admit(sid string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.m[sid]
	if f == nil {
		return nil
	}
	wait := f.last.Add(delayFor(f.count)).Sub(c.now())
	if wait <= 0 {
		return nil
	}
	if f.count >= giveUpAfter {
		return fmt.Errorf("gcsfuse for this volume failed %d times in a row, so it is retried only every %s; last failure: %v; fix the cause (volume attributes, bucket, credentials, the GCS endpoint) and retry after %s: %w",
			f.count, delayFor(f.count).Round(time.Second), f.err, wait.Round(time.Second), ErrBackoff)
	}
	return fmt.Errorf("gcsfuse for this volume failed %d time(s) in a row (last: %v); next attempt in %s: %w",
		f.count, f.err, wait.Round(100*time.Millisecond), ErrBackoff)
}

// failed records a failure of sid.
func (c *crashLoops) failed(sid string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	f := c.m[sid]
	if f == nil {
		f = &failure{}
		c.m[sid] = f
	}
	f.count++
	f.last = c.now()
	f.err = err
}

// died records the death of the session of sid started at started, once
// however often the dead mount is found.
func (c *crashLoops) died(sid string, started time.Time, err error) {
	c.mu.Lock()
	if f := c.m[sid]; f != nil && f.dead.Equal(started) {
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	c.failed(sid, err)
	c.mu.Lock()
	c.m[sid].dead = started
	c.mu.Unlock()
}

// forget clears sid's record: it was stable, or the CO tore it down.
func (c *crashLoops) forget(sid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, sid)
}
