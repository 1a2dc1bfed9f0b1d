package tracer

import (
	"net/netip"
	"testing"
	"time"

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
