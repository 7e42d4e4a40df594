package driver

import "sync"

// tryLocks is a set of names held by operations in flight; a second
// operation on a held name gets codes.Aborted instead of waiting.
type tryLocks struct {
	mu   sync.Mutex
	held map[string]struct{}
}

func (l *tryLocks) TryAcquire(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.held == nil {
		l.held = map[string]struct{}{}
	}
	if _, ok := l.held[name]; ok {
		return false
	}
	l.held[name] = struct{}{}
	return true
}

func (l *tryLocks) Release(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.held, name)
}

// keyedMutex serializes work per key (an inline session) and waits instead
// of failing: publishes of one session queue briefly behind each other.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyLock
}

type keyLock struct {
	sync.Mutex
	refs int
}

func (k *keyedMutex) Lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyLock{}
		k.locks[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
