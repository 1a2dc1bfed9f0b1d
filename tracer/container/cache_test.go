package container

import (
	"io/fs"
	"os"
	"sync"
	"testing"
)

// fakeCache returns a Cache whose /proc is a map, and the count of reads.
func fakeCache(size int, ids map[uint32]string) (*Cache, *int) {
	c := NewCache(size)
	var mu sync.Mutex
	reads := new(int)
	c.ofPID = func(pid uint32) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		*reads++
		id, ok := ids[pid]
		if !ok {
			return "", fs.ErrNotExist
		}
		return id, nil
	}
	return c, reads
}

func TestCacheLookup(t *testing.T) {
	c, reads := fakeCache(4, map[uint32]string{1: "", 2: id1})
	for range 3 {
		if got := c.Lookup(1); got != "" {
			t.Errorf("Lookup(1) = %q; want \"\"", got)
		}
		if got := c.Lookup(2); got != id1 {
			t.Errorf("Lookup(2) = %q; want %q", got, id1)
		}
	}
	if *reads != 2 {
		t.Errorf("%d reads of /proc for 2 pids; want 2", *reads)
	}
	if s := c.Stats(); s != (CacheStats{Len: 2, Hits: 4, Misses: 2}) {
		t.Errorf("Stats() = %+v", s)
	}
}

func TestCacheErrorNotRemembered(t *testing.T) {
	c, reads := fakeCache(4, map[uint32]string{})
	c.Lookup(7)
	c.Lookup(7)
	if *reads != 2 || c.Stats().Len != 0 {
		t.Errorf("a gone process: %d reads, %d entries; want 2 reads, 0 entries", *reads, c.Stats().Len)
	}
}

func TestCacheEvictsLeastRecentlyUsed(t *testing.T) {
	c, reads := fakeCache(2, map[uint32]string{1: id1, 2: id2, 3: id3})
	c.Lookup(1)
	c.Lookup(2)
	c.Lookup(1) // 2 is now the least recently used
	c.Lookup(3) // evicts 2
	s := c.Stats()
	if s.Len != 2 || s.Evictions != 1 {
		t.Fatalf("Stats() = %+v; want 2 entries, 1 eviction", s)
	}
	*reads = 0
	if c.Lookup(1) != id1 || c.Lookup(3) != id3 || *reads != 0 {
		t.Errorf("1 and 3 should still be cached (%d reads)", *reads)
	}
	if c.Lookup(2) != id2 || *reads != 1 {
		t.Errorf("2 should have been evicted and read again (%d reads)", *reads)
	}
	if s := c.Stats(); s.Len != 2 || s.Evictions != 2 {
		t.Errorf("Stats() = %+v; want 2 entries, 2 evictions", s)
	}
}

func TestCacheForget(t *testing.T) {
	ids := map[uint32]string{5: id1}
	c, reads := fakeCache(4, ids)
	c.Lookup(5)
	c.Forget(5)
	c.Forget(6)  // unknown: nothing happens
	ids[5] = id2 // the pid now names another process
	if got := c.Lookup(5); got != id2 || *reads != 2 {
		t.Errorf("after Forget: Lookup(5) = %q with %d reads; want %q, 2", got, *reads, id2)
	}
	if s := c.Stats(); s.Len != 1 || s.Evictions != 0 {
		t.Errorf("Stats() = %+v; Forget is not an eviction", s)
	}
}

func TestCacheForgetDuringRead(t *testing.T) {
	c := NewCache(4)
	c.ofPID = func(pid uint32) (string, error) {
		c.Forget(pid) // the process exits while /proc is read
		return id1, nil
	}
	if got := c.Lookup(9); got != id1 {
		t.Errorf("Lookup = %q; want %q", got, id1)
	}
	if n := c.Stats().Len; n != 0 {
		t.Errorf("%d entries: an answer about an exited process was stored", n)
	}
}

func TestCacheHitAllocs(t *testing.T) {
	c, _ := fakeCache(4, map[uint32]string{1: "", 2: id1})
	c.Lookup(1)
	c.Lookup(2)
	if n := testing.AllocsPerRun(1000, func() {
		c.Lookup(1)
		c.Lookup(2)
	}); n != 0 {
		t.Errorf("a cache hit allocates %v times; want 0", n)
	}
}

func TestCacheRealProc(t *testing.T) {
	c := NewCache(0)
	pid := uint32(os.Getpid())
	want, err := OfPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Lookup(pid); got != want {
		t.Errorf("Lookup(self) = %q; OfPID says %q", got, want)
	}
	if n := testing.AllocsPerRun(100, func() { c.Lookup(pid) }); n != 0 {
		t.Errorf("a cache hit allocates %v times; want 0", n)
	}
}

func TestCacheConcurrent(t *testing.T) {
	ids := map[uint32]string{}
	for pid := uint32(0); pid < 64; pid++ {
		ids[pid] = [...]string{"", id1, id2, id3}[pid%4]
	}
	c, _ := fakeCache(16, ids)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				pid := uint32((i*7 + g) % 64)
				if got := c.Lookup(pid); got != ids[pid] {
					t.Errorf("Lookup(%d) = %q; want %q", pid, got, ids[pid])
					return
				}
				if i%97 == 0 {
					c.Forget(pid)
				}
			}
		})
	}
	wg.Wait()
	if s := c.Stats(); s.Len > 16 {
		t.Errorf("%d entries in a cache of 16", s.Len)
	}
	// the list and the map agree
	n := 0
	for e := c.root.next; e != &c.root; e = e.next {
		if c.entries[e.pid] != e {
			t.Fatalf("pid %d listed but not mapped", e.pid)
		}
		n++
	}
	if n != len(c.entries) {
		t.Errorf("%d listed, %d mapped", n, len(c.entries))
	}
}
