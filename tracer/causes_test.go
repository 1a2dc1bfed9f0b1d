package tracer_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/netnstest"
	"github.com/tcptrail/tcptrail/internal/testprog"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// loopbackServer listens on port and keeps every accepted connection open
// (and returns them) so that the test decides when the server end closes.
func loopbackServer(t *testing.T, port uint16) (addr netip.AddrPort, accepted chan *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = make(chan *net.TCPConn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			accepted <- c.(*net.TCPConn)
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String()), accepted
}

// closingServer listens on 127.0.0.1:port and closes every connection as
// soon as it accepts it: the server closes first, so the TIME_WAIT sockets
// are on its own port, not on ephemeral ports other tests' clients get.
// Closing the listener it returns early is harmless.
func closingServer(t *testing.T, port uint16) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return ln
}

func dial(t *testing.T, addr netip.AddrPort) *net.TCPConn {
	t.Helper()
	c, err := net.Dial("tcp4", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn)
}

func fdOf(t *testing.T, c syscall.Conn) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func localOf(c net.Conn) netip.AddrPort { return netip.MustParseAddrPort(c.LocalAddr().String()) }

// waitStep waits for a transition of the socket at local matching old->new.
func waitStep(t *testing.T, rec *recorder, local netip.AddrPort, old, nw event.State) Step {
	t.Helper()
	var got Step
	rec.waitFor(t, 5*time.Second, fmt.Sprintf("%v %v->%v", local, old, nw), func() bool {
		steps := rec.Steps(func(s Step) bool { return s.Local == local && s.Old == old && s.New == nw })
		if len(steps) > 0 {
			got = steps[0]
			return true
		}
		return false
	})
	return got
}

func TestCauseShutdownWrite(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17101)
	addr, _ := loopbackServer(t, 17101)
	c := dial(t, addr)
	fd := fdOf(t, c)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	st := waitStep(t, s.rec, localOf(c), event.Established, event.FinWait1)
	want := fmt.Sprintf("shutdown(fd %d, SHUT_WR)", fd)
	if st.CauseKind != timeline.CauseShutdown || st.Cause != want || st.PID != uint32(os.Getpid()) {
		t.Fatalf("got %v, want cause %s in pid %d", st, want, os.Getpid())
	}
}

func TestCauseLingerZeroSendsRST(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17102)
	addr, accepted := loopbackServer(t, 17102)
	c := dial(t, addr)
	srv := <-accepted
	fd := fdOf(t, c)
	if err := c.SetLinger(0); err != nil {
		t.Fatal(err)
	}
	c.Close()
	st := waitStep(t, s.rec, localOf(c), event.Established, event.Close)
	if want := fmt.Sprintf("RST sent by close(fd %d)", fd); st.CauseKind != timeline.CauseRSTSent || st.Cause != want {
		t.Fatalf("client end: %v, want %s", st, want)
	}
	peer := waitStep(t, s.rec, localOf(srv), event.Established, event.Close)
	if peer.CauseKind != timeline.CauseRSTReceived {
		t.Fatalf("server end: %v, want RST received", peer)
	}

	// Closing the reset socket is its last reference and changes nothing
	// visible: no record may claim another holder (the socket is freed
	// by that close). A later connection marks when everything before it
	// has arrived.
	srvFD := fdOf(t, srv)
	srv.Close()
	marker := dial(t, addr)
	waitStep(t, s.rec, localOf(marker), event.SynSent, event.Established)
	for _, r := range find(s.rec.Records(), func(r *record.Call) bool { return r.Call == "close" }) {
		t.Errorf("close of a socket nobody else holds was reported: %s (server fd %d)", describe(r), srvFD)
	}
}

func TestCauseRefusedConnect(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17103)
	_, err := net.Dial("tcp4", "127.0.0.1:17103")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial with nothing listening: %v, want ECONNREFUSED", err)
	}
	var fails []*record.ConnectFail
	s.rec.waitFor(t, 5*time.Second, "connect_failed record", func() bool {
		fails = find(s.rec.Records(), func(r *record.ConnectFail) bool { return r.Rport == 17103 })
		return len(fails) > 0
	})
	f := fails[0]
	if f.Errno != "ECONNREFUSED" || !strings.Contains(f.Message, fmt.Sprintf("[%d]", os.Getpid())) ||
		!strings.Contains(f.Message, "127.0.0.1:17103") {
		t.Fatalf("connect_failed: %+v", f)
	}
	steps := s.rec.Steps(func(st Step) bool { return st.Remote.Port() == 17103 })
	if len(steps) != 2 || steps[0].CauseKind != timeline.CauseConnect || steps[1].CauseKind != timeline.CauseRefused {
		t.Fatalf("steps: %v", steps)
	}
}

// TestCauseForkInheritedSocket: a socket shared with a child process. The
// parent's closes change nothing and name the child as the holder; the
// child's exit closes it.
func TestCauseForkInheritedSocket(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17104)
	addr, _ := loopbackServer(t, 17104)
	c := dial(t, addr)
	f, err := c.File() // a dup: a second fd on the socket
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), "TCPTRAIL_TEST_HELPER=hold")
	child.ExtraFiles = []*os.File{f}
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	childPID := child.Process.Pid
	s.rec.waitFor(t, 5*time.Second, "the fork record", func() bool {
		return len(find(s.rec.Records(), func(r *record.Fork) bool { return r.Child == uint32(childPID) })) > 0
	})

	f.Close()
	c.Close()
	var notes []*record.Call
	s.rec.waitFor(t, 5*time.Second, "two closes that changed nothing", func() bool {
		notes = find(s.rec.Records(), func(r *record.Call) bool { return r.Call == "close" && r.Note != "" })
		return len(notes) == 2
	})
	last := notes[1].Note
	if !strings.Contains(last, "changed nothing") || !strings.Contains(last, fmt.Sprintf("[%d] fd 3", childPID)) {
		t.Fatalf("the last close should name the child's fd 3 as the holder: %q", last)
	}
	if steps := s.rec.Steps(func(st Step) bool { return st.Local == localOf(c) && st.Old == event.Established }); len(steps) != 0 {
		t.Fatalf("closing shared fds changed the state: %v", steps)
	}

	stdin.Close() // the child exits, and with it the last fd
	st := waitStep(t, s.rec, localOf(c), event.Established, event.FinWait1)
	if st.CauseKind != timeline.CauseExit || st.CausePID != uint32(childPID) {
		t.Fatalf("%v: want caused by the exit of pid %d", st, childPID)
	}
}

// TestSocketOlderThanTrace: a CLOSE_WAIT socket from before the trace is
// found at start with its owner, reported as a leak, explains a failed bind,
// and its late close ends the leak.
func TestSocketOlderThanTrace(t *testing.T) {
	t.Parallel()
	requirePrivileges(t)
	addr, accepted := loopbackServer(t, 17105)
	c := dial(t, addr)
	closedAt := time.Now()
	(<-accepted).Close() // the peer closes; c is left in CLOSE_WAIT
	fd := fdOf(t, c)
	// Wait for the FIN to land before the trace starts: EOF.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("peer close not seen: %v", err)
	}
	eofAt := time.Now()
	// Give it an age the start-up scan must see (the kernel's tcp_info
	// counts in jiffies: up to 10 ms coarse).
	time.Sleep(200 * time.Millisecond)
	scanFrom := time.Now()

	s := startSession(t, tracer.Config{LeakAfter: 200 * time.Millisecond}, 17105)
	recs := s.rec.Records()
	snaps := find(recs, func(r *record.Snapshot) bool {
		return r.Reason == "start" && r.Lport == localOf(c).Port() && r.Rport == 17105
	})
	if len(snaps) != 1 || snaps[0].State != "CLOSE_WAIT" {
		t.Fatalf("start snapshot of the old socket: %v\n%s", snaps, s.rec.dump())
	}
	const jiffy = 10 * time.Millisecond
	if age := time.Duration(snaps[0].StateNs); age < scanFrom.Sub(eofAt)-jiffy || age > time.Since(closedAt)+jiffy {
		t.Fatalf("found at start %v in CLOSE_WAIT; it entered it between %v and %v ago", age, time.Since(eofAt), time.Since(closedAt))
	}
	owned := false
	for _, o := range snaps[0].Owners {
		owned = owned || (o.PID == uint32(os.Getpid()) && o.FD == int32(fd))
	}
	if !owned {
		t.Fatalf("owners %+v, want pid %d fd %d", snaps[0].Owners, os.Getpid(), fd)
	}
	cookie := snaps[0].Cookie

	var leaks []*record.Leak
	s.rec.waitFor(t, 5*time.Second, "the old socket reported as a leak", func() bool {
		leaks = find(s.rec.Records(), func(r *record.Leak) bool { return r.Cookie == cookie })
		return len(leaks) == 1
	})
	if l := leaks[0]; l.Phase != "stuck" || !l.AgeAtLeast || l.AgeNs < snaps[0].StateNs ||
		!strings.Contains(l.Message, "in CLOSE_WAIT for at least ") {
		t.Fatalf("leak: %+v", l)
	}

	// Binding the same local address fails, and the holder is named.
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(localOf(c))}
	if _, err := d.Dial("tcp4", addr.String()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second bind: %v, want EADDRINUSE", err)
	}
	var binds []*record.BindConflict
	s.rec.waitFor(t, 5*time.Second, "bind_conflict", func() bool {
		binds = find(s.rec.Records(), func(r *record.BindConflict) bool { return r.Lport == localOf(c).Port() })
		return len(binds) == 1
	})
	// Another test's connection may share the ephemeral local port (a
	// different remote makes a different connection): find this one.
	var held *record.Holder
	for i, h := range binds[0].Holders {
		if h.Cookie == cookie {
			held = &binds[0].Holders[i]
		}
	}
	if held == nil || held.State != "CLOSE_WAIT" || !strings.Contains(binds[0].Message, fmt.Sprintf("never called close(fd %d)", fd)) {
		t.Fatalf("bind_conflict: %+v", binds[0])
	}

	c.Close()
	s.rec.waitFor(t, 5*time.Second, "the end of the leak", func() bool {
		leaks = find(s.rec.Records(), func(r *record.Leak) bool { return r.Cookie == cookie })
		return len(leaks) == 2
	})
	if leaks[1].Phase != "closed_late" || !strings.Contains(leaks[1].Message, fmt.Sprintf("close(fd %d)", fd)) {
		t.Fatalf("end of leak: %+v", leaks[1])
	}
}

// TestTimewaitPhases follows the two timewait sockets no tracepoint
// reports: the active closer's TIME_WAIT, and an orphaned FIN_WAIT2 whose
// peer never closes, each until the kernel drops it (60 s on Linux).
func TestTimewaitPhases(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 60s for timewait expiry")
	}
	t.Parallel()
	s := startSession(t, tracer.Config{LeakAfter: time.Hour}, 17106)
	addr, accepted := loopbackServer(t, 17106)
	phases := func(cookie uint64) []*record.Snapshot {
		return find(s.rec.Records(), func(r *record.Snapshot) bool { return r.Cookie == cookie })
	}

	// The kernel hands an orphaned FIN_WAIT2 socket to a timewait socket
	// when the ACK of its FIN arrives; but if its close() still held the
	// socket's lock then, it keeps the full socket, and hands it over at
	// the peer's FIN (or resets it when tcp_fin_timeout runs out). Both
	// happen, depending on timing: each is checked for what it is.

	// 1. The client closes first: a FIN_WAIT2 timewait socket, which the
	// server's FIN turns to TIME_WAIT; or, handed over late, a TIME_WAIT
	// one at once.
	a := dial(t, addr)
	aPeer := <-accepted
	a.Close()
	waitStep(t, s.rec, localOf(a), event.FinWait1, event.FinWait2)
	early, handedEarly := stepWithin(s.rec, localOf(a), event.FinWait2, event.Close, 2*time.Second)
	aPeer.Close()
	aPeerFIN := waitStep(t, s.rec, localOf(aPeer), event.CloseWait, event.LastAck)
	aEnd := early
	if !handedEarly {
		aEnd = waitStep(t, s.rec, localOf(a), event.FinWait2, event.Close)
	}
	var twFrom uint64 // when its TIME_WAIT began
	if handedEarly {
		s.rec.waitFor(t, 5*time.Second, "the active closer's two phases", func() bool { return len(phases(aEnd.Cookie)) == 2 })
		pa := phases(aEnd.Cookie)
		if pa[0].State != "FIN_WAIT2" || pa[0].MonoNs != aEnd.MonoNs || pa[1].State != "TIME_WAIT" || pa[1].MonoNs != aPeerFIN.MonoNs {
			t.Fatalf("active closer: %+v then %+v; want FIN_WAIT2 from the hand-over, TIME_WAIT from the peer's FIN", pa[0], pa[1])
		}
		twFrom = aPeerFIN.MonoNs
	} else {
		s.rec.waitFor(t, 5*time.Second, "the active closer's phase", func() bool { return len(phases(aEnd.Cookie)) == 1 })
		if p := phases(aEnd.Cookie)[0]; p.State != "TIME_WAIT" || p.MonoNs != aEnd.MonoNs {
			t.Fatalf("active closer handed over at the peer's FIN: %+v, want TIME_WAIT from the hand-over", p)
		}
		twFrom = aEnd.MonoNs
	}

	// 2. The server closes, the client never does: a FIN_WAIT2 timewait
	// socket until the kernel gives up waiting for the client's FIN.
	b := dial(t, addr)
	bPeer := <-accepted
	bPeer.Close()
	waitStep(t, s.rec, localOf(bPeer), event.FinWait1, event.FinWait2)
	bEnd, bHanded := stepWithin(s.rec, localOf(bPeer), event.FinWait2, event.Close, 5*time.Second)
	_ = b
	if bHanded {
		s.rec.waitFor(t, 5*time.Second, "the orphan's phase", func() bool { return len(phases(bEnd.Cookie)) == 1 })
		if p := phases(bEnd.Cookie)[0]; p.State != "FIN_WAIT2" || p.MonoNs != bEnd.MonoNs {
			t.Fatalf("orphan: %+v, want FIN_WAIT2 from the hand-over", p)
		}
	} else {
		// Kept as a full socket: the kernel's table must say so, and
		// the tracer must not have called it a timewait socket.
		ent, err := socktable.Lookup(localOf(bPeer), localOf(b))
		if err != nil || ent == nil || ent.State != uint8(event.FinWait2) || ent.Timer == 3 {
			t.Fatalf("orphan neither handed to timewait nor a full FIN_WAIT2 socket: %+v, %v", ent, err)
		}
		for _, p := range find(s.rec.Records(), func(r *record.Snapshot) bool {
			return r.Reason == "timewait" && r.Lport == localOf(bPeer).Port() && r.Rport == localOf(b).Port()
		}) {
			t.Errorf("a full FIN_WAIT2 socket reported as a timewait socket: %+v", p)
		}
		t.Logf("the orphan stayed a full FIN_WAIT2 socket (its close held the lock when the ACK came): its expiry is not followed here")
	}

	type watched struct {
		cookie uint64
		n      int    // its phases, expiry included
		from   uint64 // when its last timer started
	}
	ws := []watched{{aEnd.Cookie, len(phases(aEnd.Cookie)) + 1, twFrom}}
	if bHanded {
		ws = append(ws, watched{bEnd.Cookie, 2, bEnd.MonoNs})
	}
	s.rec.waitFor(t, 70*time.Second, "the timewait sockets to expire", func() bool {
		for _, w := range ws {
			if len(phases(w.cookie)) != w.n {
				return false
			}
		}
		return true
	})
	for _, w := range ws {
		ph := phases(w.cookie)
		gone := ph[len(ph)-1]
		lived := time.Duration(gone.MonoNs - w.from)
		// The timewait timer sits in the kernel's timer wheel, whose
		// buckets at 60 s are 512 jiffies wide at HZ=250 and 4096 at
		// HZ=1000 (2 s and 4.1 s): it fires up to that much late.
		if gone.Reason != "timewait_gone" || gone.Note != "expired" || lived < 60*time.Second || lived > 64100*time.Millisecond+500*time.Millisecond {
			t.Errorf("socket %d: %+v after %v, want expired after 60s", w.cookie, gone, lived)
		}
	}
}

// stepWithin waits up to d for a transition of the socket at local, and
// says whether it came.
func stepWithin(rec *recorder, local netip.AddrPort, old, nw event.State, d time.Duration) (Step, bool) {
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		steps := rec.Steps(func(s Step) bool { return s.Local == local && s.Old == old && s.New == nw })
		if len(steps) > 0 {
			return steps[0], true
		}
		select {
		case <-rec.wake:
		case <-deadline.C:
			return Step{}, false
		}
	}
}

func TestIPv6(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17107)
	ln, err := net.Listen("tcp6", "[::1]:17107")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no IPv6 loopback in CI: %v", err)
		}
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp6", "[::1]:17107")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	srv.Close()
	// Close the client only once the server's FIN arrived: closing both at
	// once is a simultaneous close (CLOSING on both ends), another story.
	local := localOf(c)
	waitStep(t, s.rec, local, event.Established, event.CloseWait)
	c.Close()
	st := waitStep(t, s.rec, local, event.LastAck, event.Close)
	if !st.Local.Addr().Is6() || st.Remote != netip.MustParseAddrPort("[::1]:17107") {
		t.Fatalf("IPv6 addresses: %v", st)
	}
	peer := waitStep(t, s.rec, localOf(srv), event.FinWait2, event.Close)
	if peer.Remote != local {
		t.Fatalf("server end: %v", peer)
	}
}

// TestPIDFilter traces one process: its sockets, including the ones whose
// transitions run in other tasks, and nobody else's.
func TestPIDFilter(t *testing.T) {
	requirePrivileges(t)
	srv := startServerAt(t, "127.0.0.1:17108")
	s := startSession(t, tracer.Config{Kernel: kernel.Config{PID: uint32(srv.Process.Pid)}})
	c, err := net.Dial("tcp4", "127.0.0.1:17108")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Read(make([]byte, 1)) // the server closes at once
	srvEnd := netip.MustParseAddrPort("127.0.0.1:17108")
	s.rec.waitFor(t, 5*time.Second, "the server end's FIN_WAIT2->CLOSE", func() bool {
		return len(s.rec.Steps(func(st Step) bool { return st.Local == srvEnd && st.New == event.Close })) == 1
	})
	steps := s.rec.Steps(func(Step) bool { return true })
	var got []pair
	for _, st := range steps {
		if st.Local != srvEnd || st.Remote != localOf(c) {
			t.Errorf("a socket the process does not own was traced: %v", st)
			continue
		}
		got = append(got, pair{st.Old, st.New})
	}
	if !equalPairs(got, serverLife) {
		t.Fatalf("server end with --pid: %v, want %v", got, serverLife)
	}
}

// TestSparseEventsArriveQuickly: the kernel batches reader wakeups, and the
// reader's deadline bounds how long a lone event waits: one polling period,
// plus what the machine takes to wake a sleeping goroutine and get the event
// through. That wake-up delay is measured beside the test (a goroutine's
// timer, the same path the reader's deadline takes), since an emulated guest
// on a busy host can take 100 ms and more where a real one takes 1 ms. The
// connections come 300 ms apart, so an event that waited for the next
// connection's wakeup instead of the deadline arrives too late even so.
func TestSparseEventsArriveQuickly(t *testing.T) {
	t.Parallel()
	s := startSession(t, tracer.Config{}, 17109)
	addr, accepted := loopbackServer(t, 17109)
	wake := measureWakeDelay(t)
	const gap = 300 * time.Millisecond
	for i := 0; i < 3; i++ {
		c := dial(t, addr)
		(<-accepted).Close()
		// The server's FIN first: no simultaneous close.
		waitStep(t, s.rec, localOf(c), event.Established, event.CloseWait)
		c.Close()
		waitStep(t, s.rec, localOf(c), event.LastAck, event.Close)
		time.Sleep(gap) // sparse: each connection alone in its poll period
	}
	worst := wake()
	bound := 3*tracer.DefaultPollInterval + 2*worst
	t.Logf("worst timer wake-up delay beside the test %v: lag bound %v", worst, bound)
	for _, st := range s.rec.Steps(func(Step) bool { return true }) {
		if lag := time.Duration(st.ArrivedNs - st.MonoNs); lag > bound {
			t.Errorf("%v reached the sink %v after it happened (bound %v)", st, lag, bound)
		}
	}
}

// measureWakeDelay sleeps 10 ms at a time in a goroutine until the returned
// function is called, which stops it and returns the longest a sleep
// overran: how late this machine wakes a goroutine whose timer fired.
func measureWakeDelay(t *testing.T) func() time.Duration {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan time.Duration)
	go func() {
		var worst time.Duration
		for {
			select {
			case <-stop:
				done <- worst
				return
			default:
			}
			start := time.Now()
			time.Sleep(10 * time.Millisecond)
			worst = max(worst, time.Since(start)-10*time.Millisecond)
		}
	}()
	var once sync.Once
	var worst time.Duration
	stopped := func() time.Duration {
		once.Do(func() { close(stop); worst = <-done })
		return worst
	}
	t.Cleanup(func() { stopped() })
	return stopped
}

// TestFinWait2Ends tells apart the two ways an orphaned FIN_WAIT2 socket
// whose peer never closes leaves for CLOSE, both with no call and no error:
// handed to a timewait socket that later expires in silence, or kept whole
// and reset by the kernel once its FIN timeout runs out, which its peer
// sees as a reset.
func TestFinWait2Ends(t *testing.T) {
	t.Parallel()

	// The kernel keeps an orphan whole when its FIN timeout is longer than
	// TIME_WAIT's 60 s, looks at the timeout again when its timer fires,
	// and resets it if the timeout is 60 s or less by then. In a namespace
	// of the test's own: close with tcp_fin_timeout at 61 s, then lower it.
	t.Run("reset at the FIN timeout", func(t *testing.T) {
		s := startSession(t, tracer.Config{LeakAfter: time.Hour}, 17115)
		ns := netnstest.New(t)
		setFinTimeout := func(sec int) {
			t.Helper()
			if err := ns.Do(func() error {
				return os.WriteFile("/proc/sys/net/ipv4/tcp_fin_timeout", []byte(strconv.Itoa(sec)), 0o644)
			}); err != nil {
				t.Fatalf("tcp_fin_timeout in %s: %v", ns.Name, err)
			}
		}
		setFinTimeout(61)
		var ln net.Listener
		var client, server net.Conn
		if err := ns.Do(func() (err error) {
			if ln, err = net.Listen("tcp4", "127.0.0.1:17115"); err != nil {
				return err
			}
			if client, err = net.Dial("tcp4", "127.0.0.1:17115"); err != nil {
				return err
			}
			server, err = ln.Accept()
			return err
		}); err != nil {
			t.Fatalf("a connection in %s: %v", ns.Name, err)
		}
		defer ln.Close()
		defer client.Close()
		local, peer := localOf(server), localOf(client)

		// Half-close first: the socket reaches FIN_WAIT2 whole, and close()
		// then finds a FIN timeout over 60 s and arms the timer for 1 s.
		if err := server.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		waitStep(t, s.rec, local, event.FinWait1, event.FinWait2)
		server.Close()
		setFinTimeout(1)
		end, ok := stepWithin(s.rec, local, event.FinWait2, event.Close, 10*time.Second)
		if !ok {
			t.Fatalf("%v never left FIN_WAIT2\n%s", local, s.rec.dump())
		}
		if end.CauseKind != timeline.CauseFinTimeout || end.Cause != "no FIN from the peer in time: RST sent" {
			t.Errorf("FIN_WAIT2→CLOSE at the FIN timeout: %q (%v), want fin_timeout", end.Cause, end.CauseKind)
		}
		if n := len(find(s.rec.Records(), func(r *record.Snapshot) bool { return r.Cookie == end.Cookie && r.Reason == "timewait" })); n > 0 {
			t.Errorf("the reset socket was followed as a timewait socket (%d snapshots)", n)
		}
		if got := waitStep(t, s.rec, peer, event.CloseWait, event.Close); got.CauseKind != timeline.CauseRSTReceived {
			t.Errorf("the peer of the reset socket: %q (%v), want rst_received", got.Cause, got.CauseKind)
		}
	})

	// Closed in one go, an orphan is handed over when the ACK of its FIN
	// comes after close() let go of it, and kept whole when the ACK came
	// while close() held it: timing decides. Each socket is checked
	// against what its peer saw, so whichever path it took must be named.
	// TCP_LINGER2 of one second makes both quick.
	t.Run("either way", func(t *testing.T) {
		s := startSession(t, tracer.Config{LeakAfter: time.Hour}, 17114)
		addr, accepted := loopbackServer(t, 17114)
		const n = 8
		var clients, servers []*net.TCPConn
		for range n {
			c := dial(t, addr)
			p := <-accepted
			rc, err := p.SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_LINGER2, 1)
			}); err != nil || serr != nil {
				t.Fatalf("TCP_LINGER2: %v %v", err, serr)
			}
			clients, servers = append(clients, c), append(servers, p)
		}
		for _, p := range servers {
			p.Close()
		}
		var handed, reset int
		for i, p := range servers {
			server, client := localOf(p), localOf(clients[i])
			end, ok := stepWithin(s.rec, server, event.FinWait2, event.Close, 10*time.Second)
			if !ok {
				t.Fatalf("%v never left FIN_WAIT2 (TCP_LINGER2 1s)\n%s", server, s.rec.dump())
			}
			switch end.CauseKind {
			case timeline.CauseFinTimeout:
				reset++
				if peer := waitStep(t, s.rec, client, event.CloseWait, event.Close); peer.CauseKind != timeline.CauseRSTReceived {
					t.Errorf("%v: the FIN timeout's reset reached the peer as %q (%v)", server, peer.Cause, peer.CauseKind)
				}
			case timeline.CauseTimewait:
				handed++
				// Once the timewait socket is gone no reset can come:
				// the peer must still be waiting in CLOSE_WAIT.
				s.rec.waitFor(t, 10*time.Second, fmt.Sprintf("%v's timewait socket to expire", server), func() bool {
					return len(find(s.rec.Records(), func(r *record.Snapshot) bool {
						return r.Cookie == end.Cookie && r.Reason == "timewait_gone"
					})) > 0
				})
				if steps := s.rec.Steps(func(st Step) bool { return st.Local == client && st.New == event.Close }); len(steps) > 0 {
					t.Errorf("%v was said to be handed to timewait, but its peer left CLOSE_WAIT: %v", server, steps[0])
				}
				ent, err := socktable.Lookup(client, server)
				if err != nil || ent == nil || ent.State != uint8(event.CloseWait) {
					t.Errorf("%v was said to be handed to timewait, but its peer is not in CLOSE_WAIT: %+v, %v", server, ent, err)
				}
			default:
				t.Errorf("%v: FIN_WAIT2→CLOSE with no FIN from the peer: %q (%v), want fin_timeout or timewait", server, end.Cause, end.CauseKind)
			}
		}
		t.Logf("of %d orphans, %d were handed to timewait and %d were reset at their FIN timeout", n, handed, reset)
	})
}

// TestDestroyed: ss -K destroys a connected socket (sock_diag's
// SOCK_DESTROY): it is named destroyed, and its peer gets the reset.
func TestDestroyed(t *testing.T) {
	t.Parallel()
	ss := testprog.Require(t, "ss")
	s := startSession(t, tracer.Config{}, 17116)
	addr, accepted := loopbackServer(t, 17116)
	c := dial(t, addr)
	p := <-accepted
	local, peer := localOf(p), localOf(c)
	out, err := exec.Command(ss, "-K", "-t", "-n", fmt.Sprintf("( sport = :%d and dport = :%d )", local.Port(), peer.Port())).CombinedOutput()
	if err != nil {
		t.Fatalf("ss -K: %v\n%s", err, out)
	}
	st := waitStep(t, s.rec, local, event.Established, event.Close)
	if st.CauseKind != timeline.CauseDestroyed || st.Cause != "destroyed (ss -K or bpf_sock_destroy)" {
		t.Errorf("destroyed by ss -K: %q (%v)", st.Cause, st.CauseKind)
	}
	if got := waitStep(t, s.rec, peer, event.Established, event.Close); got.CauseKind != timeline.CauseRSTReceived {
		t.Errorf("the destroyed socket's peer: %q (%v), want rst_received", got.Cause, got.CauseKind)
	}
}
