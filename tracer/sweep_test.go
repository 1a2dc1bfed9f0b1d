package tracer

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// The sweep forgets the sockets the kernel no longer has, and only those:
// not one it still has (by cookie, or by addresses for a made-up id), not
// one of a namespace it could not ask, not a busy one; a deleted
// namespace's sockets are all gone.
func TestSweepForgetsWhatTheKernelNoLongerHas(t *testing.T) {
	const nsDown, nsGone = 4026532003, 4026532004
	peer := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(server.Addr(), p) }
	alive := socktable.Entry{Cookie: 1, Local: server, Remote: peer(1), State: uint8(event.Established), NetNS: nsA}
	byAddr := socktable.Entry{Cookie: 99, Local: server, Remote: peer(3), State: uint8(event.Established), NetNS: nsA}
	table := &fakeTable{
		entries: map[uint32][]socktable.Entry{nsA: {alive, byAddr}},
		down:    map[uint32]bool{nsDown: true},
		gone:    map[uint32]bool{nsGone: true},
	}
	d, tr, recs := newTestDiagnoser(table)
	defer d.Close()
	now := uint64(10 * time.Minute)
	old := now - uint64(2*sweepQuiet)
	add := func(cookie uint64, ns uint32, remote netip.AddrPort, since uint64) {
		tr.Add(timeline.Socket{Cookie: cookie, NetNS: ns, Family: event.AFInet, Local: server, Remote: remote, State: event.Established, SinceNs: since})
	}
	add(1, nsA, peer(1), old)                     // in the kernel's table
	add(2, nsA, peer(2), old)                     // its end was lost
	add(3|event.SyntheticID, nsA, peer(3), old)   // a made-up id: found by its addresses
	add(4, nsDown, peer(4), old)                  // its namespace cannot be asked
	add(5, nsGone, peer(5), 0)                    // its namespace was deleted; from before the trace
	add(6, nsA, peer(6), now-uint64(time.Second)) // busy: not checked
	add(7, nsA, peer(1), old)                     // gone; another connection has its addresses now

	d.sweep(now)
	d.queries.apply(10 * time.Second)
	for _, c := range []struct {
		cookie uint64
		kept   bool
	}{{1, true}, {2, false}, {3 | event.SyntheticID, true}, {4, true}, {5, false}, {6, true}, {7, false}} {
		if kept := tr.Socket(c.cookie) != nil; kept != c.kept {
			t.Errorf("socket %#x kept %v, want %v", c.cookie, kept, c.kept)
		}
	}
	var gone []uint64
	for _, r := range *recs {
		if s, ok := r.(*record.Snapshot); ok && s.Reason == "gone" {
			gone = append(gone, s.Cookie)
		}
	}
	if len(gone) != 3 || d.sweeper.Forgotten != 3 {
		t.Errorf("gone records for %v (forgotten %d), want sockets 2, 5 and 7", gone, d.sweeper.Forgotten)
	}
	// Not again within the minute.
	d.sweep(now + uint64(time.Second))
	if d.sweeper.busy {
		t.Error("a second sweep within a minute")
	}
}

// The final sweep, at the end of a session: a socket tcptrail still sees
// open that the kernel no longer has lost its last transitions, and is
// counted as an end unseen, and so does one the kernel has in another state
// (a timewait socket has its full socket's cookie); not one the kernel
// still has as tcptrail saw it last, nor one whose end arrives in the ring
// buffer after the tables were read (it was only late), nor one that
// changed state meanwhile.
func TestFinalSweepCountsEndsUnseen(t *testing.T) {
	peer := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(server.Addr(), p) }
	alive := socktable.Entry{Cookie: 2, Local: server, Remote: peer(2), State: uint8(event.FinWait1), NetNS: nsA}
	timewait := socktable.Entry{Cookie: 5, Local: server, Remote: peer(5), State: uint8(event.TimeWait), Timer: 3, NetNS: nsA}
	// A timewait socket in its FIN_WAIT2 phase: the same state by name.
	twFinWait2 := socktable.Entry{Cookie: 6, Local: server, Remote: peer(6), State: uint8(event.FinWait2), Timer: 3, NetNS: nsA}
	// Still there, but the dump steps over it: a lookup finds it.
	steppedOver := socktable.Entry{Cookie: 7, Local: server, Remote: peer(7), State: uint8(event.FinWait1), NetNS: nsA}
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {alive, timewait, twFinWait2, steppedOver}},
		skipped: map[uint64]bool{7: true}}
	d, tr, recs := newTestDiagnoser(table)
	defer d.Close()
	state := func(cookie uint64, old, nw event.State, mono uint64) event.Event {
		return event.Event{Kind: event.KindState, Cookie: cookie, NetNS: nsA, Family: event.AFInet,
			Local: server, Remote: peer(uint16(cookie)), Old: old, New: nw, MonoNs: mono, PID: 1, FD: -1}
	}
	for _, cookie := range []uint64{1, 2, 3, 4, 5, 7} {
		transition(d, tr, state(cookie, event.Established, event.FinWait1, 100))
	}
	transition(d, tr, state(6, event.FinWait1, event.FinWait2, 100))

	awaitFinalSweep(t, d)
	// Read from the ring buffer after the tables were: 3's end, 4's next step.
	transition(d, tr, state(3, event.FinWait1, event.Close, 200))
	transition(d, tr, state(4, event.FinWait1, event.FinWait2, 200))
	d.EndFinalSweep()

	if got := d.EndsUnseen(); got != 3 {
		t.Errorf("ends unseen %d, want 3 (sockets 1, 5 and 6)", got)
	}
	for cookie, kept := range map[uint64]bool{1: false, 2: true, 4: true, 5: false, 6: false, 7: true} {
		if (tr.Socket(cookie) != nil) != kept {
			t.Errorf("socket %d kept %v, want %v", cookie, !kept, kept)
		}
	}
	var gone []*record.Snapshot
	for _, r := range *recs {
		if s, ok := r.(*record.Snapshot); ok && s.Reason == "gone" {
			gone = append(gone, s)
		}
	}
	if len(gone) != 3 {
		t.Fatalf("gone records %+v, want sockets 1, 5 and 6", gone)
	}
	for _, g := range gone {
		if g.Cookie == 5 && !strings.Contains(g.Note, "in TIME_WAIT in the kernel's socket table") {
			t.Errorf("socket 5's note %q does not say the kernel has it in TIME_WAIT", g.Note)
		}
	}
}

// On a busy port the socket table is mostly TIME_WAIT sockets, which no
// socket tcptrail follows is in: the final sweep leaves them to the kernel
// to skip, unless a made-up id (matched by addresses) needs them.
func TestFinalSweepLeavesTimeWaitOut(t *testing.T) {
	peer := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(server.Addr(), p) }
	for _, synthetic := range []bool{false, true} {
		entries := []socktable.Entry{{Cookie: 1, Local: server, Remote: peer(1), State: uint8(event.FinWait1), NetNS: nsA}}
		for i := range 1000 {
			entries = append(entries, socktable.Entry{Cookie: uint64(100 + i), Local: server, Remote: peer(uint16(1000 + i)),
				State: uint8(event.TimeWait), Timer: 3, NetNS: nsA})
		}
		table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: entries}}
		d, tr, _ := newTestDiagnoser(table)
		cookie := uint64(1)
		if synthetic {
			cookie |= event.SyntheticID
		}
		transition(d, tr, event.Event{Kind: event.KindState, Cookie: cookie, NetNS: nsA, Family: event.AFInet,
			Local: server, Remote: peer(1), Old: event.Established, New: event.FinWait1, MonoNs: 100, PID: 1, FD: -1})
		awaitFinalSweep(t, d)
		d.EndFinalSweep()
		if got := d.EndsUnseen(); got != 0 {
			t.Errorf("synthetic id %v: ends unseen %d, want 0: the socket is in the table", synthetic, got)
		}
		want := 1
		if synthetic {
			want = len(entries)
		}
		if table.dumped != want {
			t.Errorf("synthetic id %v: the dump went through %d sockets, want %d", synthetic, table.dumped, want)
		}
		d.Close()
	}
}

// A socket the dump leaves out (it moved on to TIME_WAIT, or the dump
// stepped over it) whose lookup fails is unanswered, not gone.
func TestFinalSweepKeepsWhatALookupCouldNotAnswer(t *testing.T) {
	peer := netip.AddrPortFrom(server.Addr(), 1)
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {
		{Cookie: 1, Local: server, Remote: peer, State: uint8(event.TimeWait), Timer: 3, NetNS: nsA}}},
		lookupFails: true}
	d, tr, _ := newTestDiagnoser(table)
	defer d.Close()
	transition(d, tr, event.Event{Kind: event.KindState, Cookie: 1, NetNS: nsA, Family: event.AFInet,
		Local: server, Remote: peer, Old: event.Established, New: event.FinWait1, MonoNs: 100, PID: 1, FD: -1})
	awaitFinalSweep(t, d)
	d.EndFinalSweep()
	if got := d.EndsUnseen(); got != 0 {
		t.Errorf("ends unseen %d after a failed lookup, want 0", got)
	}
	if tr.Socket(1) == nil {
		t.Error("the socket was forgotten on a failed lookup")
	}
}

// A CLOSE_WAIT leak whose way out was lost: the final sweep finds the
// socket in LAST_ACK, and the end of the session must not then call it
// still open in CLOSE_WAIT.
func TestFinalSweepEndsALeakThatMovedOn(t *testing.T) {
	peer := netip.AddrPortFrom(server.Addr(), 40001)
	moved := socktable.Entry{Cookie: 9, Local: server, Remote: peer, State: uint8(event.LastAck), NetNS: nsA}
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {moved}}}
	d, tr, recs := newTestDiagnoser(table)
	defer d.Close()
	transition(d, tr, event.Event{Kind: event.KindState, Cookie: 9, NetNS: nsA, Family: event.AFInet,
		Local: server, Remote: peer, Old: event.Established, New: event.CloseWait, MonoNs: 100, PID: 1, FD: -1})
	// Reported as stuck earlier (while the table still had it in CLOSE_WAIT).
	d.reportStuck(tr.Socket(9), uint64(time.Second), true)

	awaitFinalSweep(t, d)
	d.EndFinalSweep()
	d.End(uint64(2 * time.Second))
	if d.EndsUnseen() != 1 {
		t.Errorf("ends unseen %d, want 1", d.EndsUnseen())
	}
	for _, l := range records[*record.Leak](*recs) {
		if l.Phase == "still_open" {
			t.Errorf("a leak the kernel shows in LAST_ACK is called still open: %s", l.Message)
		}
	}
}

// awaitFinalSweep starts the final sweep and waits for its answer.
func awaitFinalSweep(t *testing.T, d *Diagnoser) {
	t.Helper()
	if !d.StartFinalSweep() {
		t.Fatal("the final sweep could not be posted")
	}
	testwait.Until(t, 10*time.Second, "the final sweep's answer", d.FinalSweepDone)
}
