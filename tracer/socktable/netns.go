package socktable

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/tcptrail/tcptrail/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// sock_diag answers only about the network namespace of the socket that
// asks, and every container has its own. Namespaces asks each namespace
// through a socket created inside it.
//
// A namespace is named by its inode number: net:[N] in /proc/PID/ns/net,
// sk->__sk_common.skc_net.net->ns.inum for BPF.

// MaxConns is how many namespaces' sockets a Namespaces keeps open; the
// least recently used one is closed to make room. Each costs an fd and a
// 64 KiB receive buffer, and keeps its namespace alive (see Namespaces).
const MaxConns = 64

// maxHints bounds the netns → pid hints: one per namespace, and containers
// come and go.
const maxHints = 1024

// ErrNamespaceGone says that no process and no bind mount is left in a
// network namespace: there is nothing to enter it through, and nothing
// left there to trace.
var ErrNamespaceGone = errors.New("network namespace gone")

// Namespaces keeps a sock_diag Conn per network namespace. It is safe for
// concurrent use.
//
// A namespace is entered through a path that refers to it: the
// /proc/PID/ns/net of a process hinted by the caller (tcptrail learns pids
// from events), else a bind mount of it (`ip netns add` makes them in
// /run/netns), else the first process /proc shows living there.
//
// A socket holds a reference on its namespace, so a cached Conn would keep
// a dead container's namespace alive and keep answering about it. Each use
// therefore first checks that the path it was entered through still refers
// to it (one stat), else looks for another; when none is left the Conn is
// closed and dropped and the query fails with ErrNamespaceGone.
type Namespaces struct {
	self   uint32 // our own namespace: a plain Open, nothing to check
	max    int
	failed atomic.Uint64

	mu    sync.Mutex
	conns map[uint32]*nsConn
	hints map[uint32]uint32 // netns → pid
	tick  uint64            // use counter, for eviction
}

type nsConn struct {
	c    *Conn
	path string // what it was entered through; "" for our own namespace
	used uint64
}

// NewNamespaces returns an empty cache for the namespaces of this host.
func NewNamespaces() (*Namespaces, error) {
	self := nsInode("/proc/self/ns/net")
	if self == 0 {
		return nil, errors.New("cannot read /proc/self/ns/net")
	}
	return &Namespaces{self: self, max: MaxConns, conns: make(map[uint32]*nsConn), hints: make(map[uint32]uint32)}, nil
}

// Self is the inode of this process's network namespace.
func (n *Namespaces) Self() uint32 { return n.self }

// Hint says that process pid lives in namespace netns: the cheapest way
// in. A wrong or stale hint costs only a look elsewhere.
func (n *Namespaces) Hint(netns, pid uint32) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.hints[netns]; !ok && len(n.hints) >= maxHints {
		for k := range n.hints { // any one: a hint is only a shortcut
			delete(n.hints, k)
			break
		}
	}
	n.hints[netns] = pid
}

// Failed counts the queries that failed: Conn, DumpFunc and Lookup calls
// that returned an error (namespace not found, setns refused, netlink
// error), each once.
func (n *Namespaces) Failed() uint64 { return n.failed.Load() }

// Conn returns the Conn of namespace netns, opening it if needed. The Conn
// stays owned by n and shared: do not Close it (use Forget). It may be
// closed when evicted or forgotten; its queries then fail with
// net.ErrClosed, and Conn gives a new one. Queries on it are not checked
// for a vanished namespace nor counted: prefer DumpFunc and Lookup.
func (n *Namespaces) Conn(netns uint32) (*Conn, error) {
	c, err := n.conn(netns)
	if err != nil {
		n.failed.Add(1)
		return nil, fmt.Errorf("netns %d: %w", netns, err)
	}
	return c, nil
}

// DumpFunc is the package's DumpFunc asked inside namespace netns, of the
// sockets ports selects (the kernel leaves the others out). The entries'
// NetNS is netns, already when keep sees them. keep runs during the query:
// it must not query the same namespace.
func (n *Namespaces) DumpFunc(netns uint32, family uint8, states uint32, ports Ports, keep func(*Entry) bool) ([]Entry, error) {
	var out []Entry
	err := n.with(netns, func(c *Conn) (err error) {
		req := inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: states}
		req.ID.Cookie = [2]uint32{inetDiagNoCookie, inetDiagNoCookie}
		out, err = c.query(&req, unix.NLM_F_DUMP, ports, keep)
		return err
	})
	return out, err
}

// Lookup is the package's Lookup asked inside namespace netns.
func (n *Namespaces) Lookup(netns uint32, local, remote netip.AddrPort) (*Entry, error) {
	var out *Entry
	err := n.with(netns, func(c *Conn) (err error) {
		out, err = c.Lookup(local, remote)
		return err
	})
	return out, err
}

// with runs a query on netns's Conn. A Conn whose query failed is dropped:
// reopening is cheap, and a netlink socket in an unknown state is not
// trusted again. One that was closed under the query (evicted, forgotten)
// gets one more try with a new Conn.
func (n *Namespaces) with(netns uint32, q func(*Conn) error) error {
	var err error
	for try := 0; try < 2; try++ {
		var c *Conn
		if c, err = n.conn(netns); err != nil {
			break
		}
		if err = q(c); err == nil {
			return nil
		}
		n.drop(netns, c)
		if !errors.Is(err, net.ErrClosed) {
			break
		}
	}
	n.failed.Add(1)
	return fmt.Errorf("netns %d: %w", netns, err)
}

// conn returns the cached Conn of netns once its namespace is checked to
// be alive, or opens one.
func (n *Namespaces) conn(netns uint32) (*Conn, error) {
	n.mu.Lock()
	e := n.conns[netns]
	var path string
	if e != nil {
		n.tick++
		e.used = n.tick
		path = e.path
	}
	n.mu.Unlock()

	if e != nil {
		if path == "" || nsInode(path) == netns {
			return e.c, nil
		}
		// The way in is gone (the process exited or the mount was
		// removed). Our socket keeps the namespace alive: the question
		// is whether anything else still lives there.
		path, err := n.find(netns)
		if err != nil {
			n.drop(netns, e.c)
			return nil, err
		}
		n.mu.Lock()
		e.path = path
		n.mu.Unlock()
		return e.c, nil
	}

	var c *Conn
	var err error
	if netns == n.self {
		c, err = Open()
	} else if path, err = n.find(netns); err == nil {
		c, err = openIn(path, netns)
	}
	if err != nil {
		return nil, err
	}
	c.netns = netns

	n.mu.Lock()
	if other := n.conns[netns]; other != nil { // opened meanwhile by another caller
		n.mu.Unlock()
		c.Close()
		return other.c, nil
	}
	var evicted *Conn
	if len(n.conns) >= n.max {
		var lru *nsConn
		var lruNS uint32
		for k, v := range n.conns {
			if lru == nil || v.used < lru.used {
				lru, lruNS = v, k
			}
		}
		delete(n.conns, lruNS)
		evicted = lru.c
	}
	n.tick++
	n.conns[netns] = &nsConn{c: c, path: path, used: n.tick}
	n.mu.Unlock()
	if evicted != nil {
		evicted.Close() // outside the lock: it waits for a query in progress
	}
	return c, nil
}

// drop closes c and removes it from the cache if it is still netns's.
func (n *Namespaces) drop(netns uint32, c *Conn) {
	n.mu.Lock()
	if e := n.conns[netns]; e != nil && e.c == c {
		delete(n.conns, netns)
	}
	n.mu.Unlock()
	c.Close()
}

// Forget closes netns's Conn and drops its hint: for a caller that knows
// the namespace is gone.
func (n *Namespaces) Forget(netns uint32) {
	n.mu.Lock()
	e := n.conns[netns]
	delete(n.conns, netns)
	delete(n.hints, netns)
	n.mu.Unlock()
	if e != nil {
		e.c.Close()
	}
}

// Close closes every Conn. n stays usable: later queries open new ones.
func (n *Namespaces) Close() error {
	n.mu.Lock()
	conns := n.conns
	n.conns = make(map[uint32]*nsConn)
	n.mu.Unlock()
	for _, e := range conns {
		e.c.Close()
	}
	return nil
}

// List returns every network namespace that has a process in it or a bind
// mount of it, each once, in increasing order.
func (n *Namespaces) List() ([]uint32, error) {
	seen := map[uint32]bool{n.Self(): true} // skipped by eachNamespace
	err := eachNamespace(func(netns uint32, _ string) bool {
		seen[netns] = true
		return true
	})
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	slices.Sort(out)
	return out, nil
}

// find returns a path that refers to namespace netns.
func (n *Namespaces) find(netns uint32) (string, error) {
	n.mu.Lock()
	pid, ok := n.hints[netns]
	n.mu.Unlock()
	if ok && int(pid) != os.Getpid() { // see eachNamespace: not our own
		p := "/proc/" + strconv.FormatUint(uint64(pid), 10) + "/ns/net"
		if nsInode(p) == netns {
			return p, nil
		}
		n.mu.Lock()
		if n.hints[netns] == pid {
			delete(n.hints, netns)
		}
		n.mu.Unlock()
	}
	var found string
	if err := eachNamespace(func(ino uint32, path string) bool {
		if ino == netns {
			found = path
		}
		return found == ""
	}); err != nil {
		return "", err
	}
	if found == "" {
		return "", ErrNamespaceGone
	}
	return found, nil
}

// eachNamespace calls f with each network namespace it can enter and a
// path to enter it through: bind mounts first (/proc/self/mountinfo lists
// them with root net:[N], wherever they are mounted), then each process's
// /proc/PID/ns/net. It stops when f returns false.
func eachNamespace(f func(netns uint32, path string) bool) error {
	if mounts, err := mountinfo.Read("/proc/self/mountinfo"); err == nil {
		for _, m := range mounts {
			// Only nsfs mounts have a root that is not a path.
			if !strings.HasPrefix(m.Root, "net:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(m.Root[len("net:["):], "]"), 10, 32)
			if err == nil && !f(uint32(ino), m.Point) {
				return nil
			}
		}
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return err
	}
	self := strconv.Itoa(os.Getpid())
	for _, p := range procs {
		if _, err := strconv.ParseUint(p.Name(), 10, 32); err != nil {
			continue
		}
		if p.Name() == self {
			// Our own threads visit namespaces to open sockets there,
			// and the leader may be one of them: /proc/self/ns/net can
			// name a namespace we are in only for a moment.
			continue
		}
		path := "/proc/" + p.Name() + "/ns/net"
		if ino := nsInode(path); ino != 0 && !f(ino, path) {
			return nil
		}
	}
	return nil
}

// nsInode is the inode of the namespace path refers to; 0 if none.
func nsInode(path string) uint32 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return uint32(st.Ino)
}

// openIn opens a sock_diag socket inside the namespace path refers to. The
// namespace is a property of each thread, and a socket stays in the
// namespace it was created in: so a thread of our own enters the
// namespace, creates the socket and comes back.
func openIn(path string, netns uint32) (*Conn, error) {
	target, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT || err == unix.ESRCH {
		return nil, ErrNamespaceGone // the process exited since find
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(target)
	var st unix.Stat_t
	if err := unix.Fstat(target, &st); err != nil || uint32(st.Ino) != netns {
		return nil, ErrNamespaceGone // its pid was taken by a process elsewhere
	}

	type result struct {
		c   *Conn
		err error
	}
	done := make(chan result, 1)
	// A goroutine of its own: if it cannot come back, it ends still
	// locked to the thread, and the runtime then terminates that thread
	// (or parks it for good if it is the main thread) instead of running
	// other goroutines in the wrong namespace. The caller's goroutine is
	// never locked by us.
	go func() {
		runtime.LockOSThread()
		var r result
		back := true
		defer func() {
			done <- r
			if back {
				runtime.UnlockOSThread()
			}
		}()
		saved, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			r.err = fmt.Errorf("own namespace: %w", err)
			return
		}
		defer unix.Close(saved)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			r.err = fmt.Errorf("setns: %w", err)
			return
		}
		r.c, r.err = Open()
		if err := unix.Setns(saved, unix.CLONE_NEWNET); err != nil {
			back = false // the socket is fine; the thread is not
		}
	}()
	r := <-done
	return r.c, r.err
}
