package socktable

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/internal/netnstest"
	"github.com/tcptrail/tcptrail/internal/privtest"
)

// The same address in every test namespace: namespaces must not mix them up.
var server = netip.MustParseAddrPort("127.0.0.1:7070")

const (
	helperEnv = "SOCKTABLE_TEST_HELPER" // set: be the helper process
	mountEnv  = "SOCKTABLE_TEST_MOUNT"  // where the helper bind-mounts its namespace
)

// TestHelperProcess is not a test but the process the namespace tests
// start in a new network namespace: it brings the loopback up, optionally
// bind-mounts its namespace (what `ip netns add` does), listens on server,
// connects to it, prints the client's address and holds the three sockets
// until its stdin closes. (The tests make namespaces themselves rather
// than with iproute2, which not every test machine has with netns support.)
func TestHelperProcess(t *testing.T) {
	if os.Getenv(helperEnv) == "" {
		return
	}
	if err := helper(os.Getenv(mountEnv)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func helper(mount string) error {
	if err := netnstest.LoopbackUp(); err != nil {
		return err
	}
	if mount != "" {
		if err := unix.Mount("/proc/self/ns/net", mount, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
	}
	ln, err := net.Listen("tcp4", server.String())
	if err != nil {
		return err
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", server.String())
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return err
	}
	defer s.Close()
	fmt.Println(c.LocalAddr())
	_, err = io.Copy(io.Discard, os.Stdin)
	return err
}

// testNetns is a network namespace with a helper process in it.
type testNetns struct {
	inode  uint32
	pid    uint32
	mount  string         // "" without a bind mount
	client netip.AddrPort // the helper's connection: client → server
	stop   func()         // the helper exits
	del    func()         // the bind mount goes, as with `ip netns del`
}

func startNetns(t *testing.T, mount bool) *testNetns {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ns := &testNetns{del: func() {}}
	cmd := exec.Command(exe, "-test.run=^TestHelperProcess$")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	if mount {
		ns.mount = fmt.Sprintf("/run/netns/tcptrail-test-%08x", rand.Uint32())
		if err := os.MkdirAll("/run/netns", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ns.mount, nil, 0o444); err != nil {
			t.Fatal(err)
		}
		ns.del = sync.OnceFunc(func() {
			unix.Unmount(ns.mount, unix.MNT_DETACH)
			os.Remove(ns.mount)
		})
		t.Cleanup(ns.del)
		cmd.Env = append(cmd.Env, mountEnv+"="+ns.mount)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ns.stop = sync.OnceFunc(func() {
		stdin.Close()
		cmd.Wait()
	})
	t.Cleanup(ns.stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		ns.stop()
		t.Fatalf("helper process: %v: %s", err, stderr.String())
	}
	ns.client = netip.MustParseAddrPort(strings.TrimSpace(line))
	ns.pid = uint32(cmd.Process.Pid)
	ns.inode = nsInode(fmt.Sprintf("/proc/%d/ns/net", ns.pid))
	return ns
}

// checkThreads fails t unless the calling thread and every other thread of
// this process are in namespace want.
func checkThreads(t *testing.T, want uint32) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if got := nsInode("/proc/thread-self/ns/net"); got != want {
		t.Errorf("this thread is in namespace %d, want %d", got, want)
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		// 0: the thread exited meanwhile.
		if got := nsInode("/proc/self/task/" + task.Name() + "/ns/net"); got != 0 && got != want {
			t.Errorf("thread %s is in namespace %d, want %d", task.Name(), got, want)
		}
	}
}

func newNamespaces(t *testing.T) *Namespaces {
	t.Helper()
	n, err := NewNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func (n *Namespaces) cachedPath(netns uint32) (string, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	e, ok := n.conns[netns]
	if !ok {
		return "", false
	}
	return e.path, true
}

// TestNamespacesSameAddresses asks two namespaces that both have a
// listener and a connection on 127.0.0.1:7070, and our own.
func TestNamespacesSameAddresses(t *testing.T) {
	privtest.Require(t)
	n := newNamespaces(t)
	a, b := startNetns(t, true), startNetns(t, true)
	if a.inode == 0 || b.inode == 0 || a.inode == b.inode || a.inode == n.Self() {
		t.Fatalf("namespaces: ours %d, a %d, b %d", n.Self(), a.inode, b.inode)
	}
	n.Hint(a.inode, a.pid) // b is found through its bind mount

	list, err := n.List()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []uint32{n.Self(), a.inode, b.inode} {
		if !slices.Contains(list, want) {
			t.Errorf("List() = %v, missing %d", list, want)
		}
	}

	root, err := DumpFunc(unix.AF_INET, AllStates, nil)
	if err != nil {
		t.Fatal(err)
	}
	inRoot := map[uint64]bool{}
	for _, e := range root {
		inRoot[e.Cookie] = true
	}

	cookies := map[uint32]map[uint64]bool{} // namespace → its sockets
	for _, ns := range []*testNetns{a, b} {
		ents, err := n.DumpFunc(ns.inode, unix.AF_INET, AllStates, Ports{}, func(e *Entry) bool {
			if e.NetNS != ns.inode {
				t.Errorf("keep sees NetNS %d, want %d", e.NetNS, ns.inode)
			}
			return e.Local == server || e.Remote == server
		})
		if err != nil {
			t.Fatal(err)
		}
		var listener, accepted, client *Entry
		cookies[ns.inode] = map[uint64]bool{}
		for i := range ents {
			e := &ents[i]
			cookies[ns.inode][e.Cookie] = true
			switch {
			case e.Local == server && e.State == stateListen:
				listener = e
			case e.Local == server && e.Remote == ns.client && e.State == stateEstablished:
				accepted = e
			case e.Local == ns.client && e.Remote == server && e.State == stateEstablished:
				client = e
			}
			if e.NetNS != ns.inode || inRoot[e.Cookie] {
				t.Errorf("entry %+v: want NetNS %d and not in our namespace's dump", e, ns.inode)
			}
		}
		if listener == nil || accepted == nil || client == nil || len(ents) != 3 {
			t.Fatalf("namespace %d dump: %+v", ns.inode, ents)
		}

		got, err := n.Lookup(ns.inode, server, ns.client)
		if err != nil || got == nil || got.Cookie != accepted.Cookie || got.NetNS != ns.inode {
			t.Errorf("namespace %d lookup of the accepted socket: %+v, %v; want %+v", ns.inode, got, err, accepted)
		}
		got, err = n.Lookup(ns.inode, ns.client, server)
		if err != nil || got == nil || got.Cookie != client.Cookie {
			t.Errorf("namespace %d lookup of the client socket: %+v, %v; want %+v", ns.inode, got, err, client)
		}
		// Socket inodes are unique host-wide: /proc finds the owner
		// whatever the namespace.
		owners := OwnersOf(map[uint32]bool{accepted.Inode: true})[accepted.Inode]
		if len(owners) != 1 || owners[0].PID != ns.pid {
			t.Errorf("owners of namespace %d's accepted socket: %+v, want pid %d", ns.inode, owners, ns.pid)
		}
	}
	for c := range cookies[a.inode] {
		if cookies[b.inode][c] {
			t.Errorf("cookie %d in both namespaces", c)
		}
	}
	// a's four-tuple asked in b: b's own socket or its listener, never a's.
	got, err := n.Lookup(b.inode, server, a.client)
	if err != nil || (got != nil && (got.NetNS != b.inode || !cookies[b.inode][got.Cookie])) {
		t.Errorf("a's accepted socket looked up in b: %+v, %v", got, err)
	}

	if p, _ := n.cachedPath(a.inode); p != fmt.Sprintf("/proc/%d/ns/net", a.pid) {
		t.Errorf("a entered through %q, want its hinted process", p)
	}
	if p, _ := n.cachedPath(b.inode); p != b.mount {
		t.Errorf("b entered through %q, want its bind mount %s", p, b.mount)
	}
	if f := n.Failed(); f != 0 {
		t.Errorf("Failed() = %d", f)
	}
	checkThreads(t, n.Self())
}

// TestNamespaceGone deletes a namespace that has a cached Conn.
func TestNamespaceGone(t *testing.T) {
	privtest.Require(t)
	n := newNamespaces(t)
	a := startNetns(t, true)
	n.Hint(a.inode, a.pid)
	c, err := n.Conn(a.inode)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := n.Lookup(a.inode, server, a.client); err != nil || got == nil {
		t.Fatalf("lookup before the namespace goes: %+v, %v", got, err)
	}

	a.del()  // ip netns del
	a.stop() // and its processes gone
	if _, err := n.Lookup(a.inode, server, a.client); !errors.Is(err, ErrNamespaceGone) {
		t.Errorf("lookup in a deleted namespace: %v, want ErrNamespaceGone", err)
	}
	if f := n.Failed(); f != 1 {
		t.Errorf("Failed() = %d, want 1", f)
	}
	if p, ok := n.cachedPath(a.inode); ok {
		t.Errorf("the deleted namespace's Conn is still cached (entered through %q)", p)
	}
	if _, err := c.Lookup(server, a.client); !errors.Is(err, net.ErrClosed) {
		t.Errorf("the dropped Conn answers: %v, want it closed", err)
	}
	if _, err := n.DumpFunc(a.inode, unix.AF_INET, AllStates, Ports{}, nil); !errors.Is(err, ErrNamespaceGone) {
		t.Errorf("dump of a deleted namespace: %v, want ErrNamespaceGone", err)
	}
	if _, err := n.Conn(a.inode); !errors.Is(err, ErrNamespaceGone) {
		t.Errorf("Conn of a deleted namespace: %v, want ErrNamespaceGone", err)
	}
	if f := n.Failed(); f != 3 {
		t.Errorf("Failed() = %d, want 3", f)
	}
	if list, err := n.List(); err != nil || slices.Contains(list, a.inode) {
		t.Errorf("List() = %v, %v: still has the deleted namespace %d", list, err, a.inode)
	}
	checkThreads(t, n.Self())

	// Our own namespace still answers.
	if _, err := n.DumpFunc(n.Self(), unix.AF_INET, AllStates, Ports{}, nil); err != nil {
		t.Error(err)
	}
}

// TestConnManyGoroutines opens Conns from many goroutines at once, with
// evictions and Forget forcing new ones, and checks that each Conn asks
// the right namespace and that no thread is left in another namespace.
func TestConnManyGoroutines(t *testing.T) {
	privtest.Require(t)
	n := newNamespaces(t)
	n.max = 2                 // three namespaces: constant eviction
	a := startNetns(t, false) // no mount, no hint: found by scanning /proc
	b := startNetns(t, true)

	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cl, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	own := netip.MustParseAddrPort(ln.Addr().String())
	ownClient := netip.MustParseAddrPort(cl.LocalAddr().String())

	type target struct {
		netns         uint32
		local, remote netip.AddrPort
		cookie        uint64
	}
	targets := []*target{{n.Self(), ownClient, own, 0}, {a.inode, a.client, server, 0}, {b.inode, b.client, server, 0}}
	for _, tg := range targets {
		e, err := n.Lookup(tg.netns, tg.local, tg.remote)
		if err != nil || e == nil || e.Local != tg.local || e.Remote != tg.remote {
			t.Fatalf("lookup in %d: %+v, %v", tg.netns, e, err)
		}
		tg.cookie = e.Cookie
	}
	if _, err := n.Conn(a.inode); err != nil {
		t.Fatal(err)
	}
	if p, _ := n.cachedPath(a.inode); p != fmt.Sprintf("/proc/%d/ns/net", a.pid) {
		t.Errorf("a entered through %q, want its process found in /proc", p)
	}

	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 25 {
				tg := targets[(g+i)%len(targets)]
				c, err := n.Conn(tg.netns)
				if err != nil {
					t.Error(err)
					return
				}
				e, err := c.Lookup(tg.local, tg.remote)
				if errors.Is(err, net.ErrClosed) {
					continue // evicted meanwhile
				}
				if err != nil || e == nil || e.Cookie != tg.cookie || e.NetNS != tg.netns {
					t.Errorf("lookup in %d: %+v, %v; want cookie %d", tg.netns, e, err, tg.cookie)
					return
				}
				if i%5 == 0 {
					n.Forget(tg.netns)
				}
			}
		})
	}
	wg.Wait()
	if f := n.Failed(); f != 0 {
		t.Errorf("Failed() = %d", f)
	}
	n.mu.Lock()
	cached := len(n.conns)
	n.mu.Unlock()
	if cached > 2 {
		t.Errorf("%d Conns cached, bound 2", cached)
	}
	checkThreads(t, n.Self())
}
