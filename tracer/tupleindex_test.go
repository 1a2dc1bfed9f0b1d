package tracer

import (
	"net/netip"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// The index answers exactly as its map would: the port counts only skip
// lookups that cannot match, and follow entries taken over by a newer
// socket on the same four-tuple.
func TestTupleIndex(t *testing.T) {
	ap := netip.MustParseAddrPort
	srv, cli := ap("127.0.0.1:7070"), ap("127.0.0.1:10001")
	x := tupleIndex{m: make(map[twKey]uint64)}
	x.set(twKeyOf(1, srv, cli), 5)

	if c, ok := x.get(1, srv, cli); !ok || c != 5 {
		t.Fatalf("watched four-tuple not found: %d %v", c, ok)
	}
	// Same ports, so the same bucket: the map still decides.
	for _, miss := range []struct {
		netns         uint32
		local, remote netip.AddrPort
	}{
		{1, cli, srv},                   // the other orientation
		{2, srv, cli},                   // another namespace
		{1, ap("10.0.0.1:7070"), cli},   // another address
		{1, srv, ap("127.0.0.1:10002")}, // another port
	} {
		if c, ok := x.get(miss.netns, miss.local, miss.remote); ok {
			t.Errorf("%d %v %v: found %d", miss.netns, miss.local, miss.remote, c)
		}
	}

	// A newer socket takes the entry over; the older one's removal leaves it.
	x.set(twKeyOf(1, srv, cli), 6)
	x.deleteIf(twKeyOf(1, srv, cli), 5)
	if c, ok := x.get(1, srv, cli); !ok || c != 6 {
		t.Fatalf("entry of the newer socket lost: %d %v", c, ok)
	}
	x.deleteIf(twKeyOf(1, srv, cli), 6)
	if _, ok := x.get(1, srv, cli); ok || len(x.m) != 0 {
		t.Fatalf("entry left after its removal (%d entries)", len(x.m))
	}
	for i, n := range x.byPort {
		if n != 0 {
			t.Fatalf("bucket %d counts %d with the index empty", i, n)
		}
	}
}

// BenchmarkTimewaitPeer: a busy port's handshakes and LAST_ACKs looked up
// against a full timewait watch, nearly all missing (as at high churn).
func BenchmarkTimewaitPeer(b *testing.B) {
	d, _, _ := newTestDiagnoser(&fakeTable{entries: map[uint32][]socktable.Entry{nsA: {}}, gone: map[uint32]bool{}})
	for i := range maxTimewaitWatch {
		remote := netip.AddrPortFrom(client.Addr(), uint16(20000+i))
		d.watchTimewait(uint64(1000+i), nsA, event.AFInet, server, remote, uint8(event.TimeWait), 1, 60_000, false)
	}
	states := [3]event.State{event.SynSent, event.SynRecv, event.LastAck}
	n := 0
	for b.Loop() {
		port := uint16(33000 + n%20000)
		e := event.Event{Kind: event.KindState, Cookie: uint64(n), NetNS: nsA, Family: event.AFInet,
			Local: server, Remote: netip.AddrPortFrom(client.Addr(), port), New: states[n%3]}
		if e.New != event.SynRecv {
			e.Local, e.Remote = e.Remote, server
		}
		d.timewaitPeer(&e)
		n++
	}
}
