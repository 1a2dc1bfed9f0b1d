package container

import (
	"strings"
	"sync"
)

// DefaultCacheSize is the Cache size NewCache uses for a size <= 0: more
// processes than a busy host has owning TCP sockets at once, for at most
// about 1 MiB.
const DefaultCacheSize = 8192

// Cache remembers the container of each process it was asked about, so that
// naming the owner of every socket event costs a map lookup, not a read of
// /proc/PID/cgroup.
//
// It holds, per pid, the container id OfPID returned ("" for a process in no
// container, the common case on a host, remembered too). An entry leaves
// when Forget is called for the pid, which the caller does when the process
// exits (a pid is reused by an unrelated process later), or when the cache
// is full and the entry is the least recently looked up (counted in
// CacheStats.Evictions). A process that moves to another cgroup after its
// first lookup keeps its first answer: runtimes place a process in its
// container's cgroup before it runs the container's program and never move
// it out.
//
// A failed read (the process already exited) is not remembered: the next
// Lookup reads /proc again.
//
// Lookup allocates nothing when the pid is cached. A Cache is safe for
// concurrent use; /proc is read without holding its lock.
type Cache struct {
	mu      sync.Mutex
	size    int
	entries map[uint32]*cacheEntry
	// root is the sentinel of a circular list of entries, most recently
	// looked up first: root.next is the newest, root.prev the next to go.
	root  cacheEntry
	stats CacheStats
	// forgets counts Forget calls: a miss whose /proc read overlapped one
	// does not store its answer, which may be about a process that exited.
	forgets uint64

	ofPID func(uint32) (string, error) // OfPID; replaced in tests
}

type cacheEntry struct {
	pid        uint32
	id         string
	prev, next *cacheEntry
}

// CacheStats counts what a Cache did.
type CacheStats struct {
	Len       int    // entries held
	Hits      uint64 // lookups answered from the cache
	Misses    uint64 // lookups that read /proc
	Evictions uint64 // entries dropped to make room, not by Forget
}

// NewCache returns a Cache of at most size entries (DefaultCacheSize when
// size <= 0).
func NewCache(size int) *Cache {
	if size <= 0 {
		size = DefaultCacheSize
	}
	c := &Cache{size: size, entries: make(map[uint32]*cacheEntry, min(size, 1024)), ofPID: OfPID}
	c.root.next, c.root.prev = &c.root, &c.root
	return c
}

// Lookup returns the id of the container pid runs in, "" for none or when
// /proc cannot tell (the process is gone).
func (c *Cache) Lookup(pid uint32) string {
	c.mu.Lock()
	if e, ok := c.entries[pid]; ok {
		c.stats.Hits++
		c.unlink(e)
		c.pushFront(e)
		id := e.id
		c.mu.Unlock()
		return id
	}
	c.stats.Misses++
	forgets := c.forgets
	c.mu.Unlock()

	id, err := c.ofPID(pid)
	if err != nil {
		return ""
	}
	id = strings.Clone(id) // not the whole /proc line it was cut from

	c.mu.Lock()
	defer c.mu.Unlock()
	if c.forgets != forgets {
		return id
	}
	if e, ok := c.entries[pid]; ok { // another goroutine's miss got there first
		e.id = id
		return id
	}
	var e *cacheEntry
	if len(c.entries) >= c.size {
		e = c.root.prev
		c.unlink(e)
		delete(c.entries, e.pid)
		c.stats.Evictions++
	} else {
		e = new(cacheEntry)
	}
	e.pid, e.id = pid, id
	c.entries[pid] = e
	c.pushFront(e)
	return id
}

// Forget drops what the cache knows of pid. Call it when the process exits,
// before its pid can name another process.
func (c *Cache) Forget(pid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgets++
	if e, ok := c.entries[pid]; ok {
		c.unlink(e)
		delete(c.entries, pid)
	}
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Len = len(c.entries)
	return s
}

func (c *Cache) unlink(e *cacheEntry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
}

func (c *Cache) pushFront(e *cacheEntry) {
	e.prev, e.next = &c.root, c.root.next
	c.root.next.prev = e
	c.root.next = e
}
