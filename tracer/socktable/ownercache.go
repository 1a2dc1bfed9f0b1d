package socktable

import (
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// OwnerCache answers OwnersOf from an earlier scan for a while. A process
// that fails to bind a port again and again (a retry loop) asks for the
// owners of the same holder each time, and each scan reads every fd of the
// host: a tenth of a second of CPU with a hundred thousand of them.
//
// A remembered owner is checked before it is given again (its fd still
// refers to the socket: one readlink), so an fd closed since is never
// reported. What a cached answer can miss is an owner that appeared since
// the scan (a fork, a dup, an fd passed over a unix socket), for at most
// MaxAge.
type OwnerCache struct {
	MaxAge time.Duration

	mu    sync.Mutex
	known map[uint32]cachedOwners
	link  [64]byte
	now   func() time.Time // for tests
}

type cachedOwners struct {
	at     time.Time
	owners []FDOwner
}

// DefaultOwnerMaxAge is how long an OwnerCache keeps a scan's answer.
const DefaultOwnerMaxAge = 2 * time.Second

// NewOwnerCache returns a cache keeping answers for DefaultOwnerMaxAge.
func NewOwnerCache() *OwnerCache { return &OwnerCache{MaxAge: DefaultOwnerMaxAge} }

// Of is OwnersOf, from the cache where it can: one scan for all the inodes
// it cannot answer.
func (c *OwnerCache) Of(inodes map[uint32]bool) map[uint32][]FDOwner {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if c.now != nil {
		now = c.now()
	}
	if c.known == nil {
		c.known = make(map[uint32]cachedOwners)
	}
	for ino, k := range c.known {
		if now.Sub(k.at) >= c.MaxAge {
			delete(c.known, ino)
		}
	}
	out := make(map[uint32][]FDOwner, len(inodes))
	var scan map[uint32]bool
	for ino := range inodes {
		if k, ok := c.known[ino]; ok && c.stillHeld(ino, k.owners) {
			out[ino] = append([]FDOwner(nil), k.owners...)
			continue
		}
		if scan == nil {
			scan = make(map[uint32]bool)
		}
		scan[ino] = true
	}
	if scan == nil {
		return out
	}
	found := OwnersOf(scan)
	for ino := range scan {
		owners := found[ino]
		if len(owners) == 0 {
			delete(c.known, ino) // nothing to check it by next time
			continue
		}
		c.known[ino] = cachedOwners{at: now, owners: owners}
		out[ino] = append([]FDOwner(nil), owners...)
	}
	return out
}

// stillHeld tells whether every owner's fd still refers to socket ino.
func (c *OwnerCache) stillHeld(ino uint32, owners []FDOwner) bool {
	for _, o := range owners {
		path := "/proc/" + strconv.FormatUint(uint64(o.PID), 10) + "/fd/" + strconv.FormatInt(int64(o.FD), 10)
		n, err := unix.Readlink(path, c.link[:])
		if err != nil {
			return false
		}
		if got, ok := socketLinkInode(c.link[:n]); !ok || got != ino {
			return false
		}
	}
	return true
}
