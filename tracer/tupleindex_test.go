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

// The port counts keep nearly every lookup of a busy port (its new
// connections, none of them watched) away from the map, and every lookup
// of a connecting socket whose local port is not bound yet.
func TestTupleIndexFilters(t *testing.T) {
	srv := netip.MustParseAddrPort("127.0.0.1:7070")
	x := tupleIndex{m: make(map[twKey]uint64)}
	for i := range maxTimewaitWatch {
		x.set(twKeyOf(1, srv, netip.AddrPortFrom(srv.Addr(), uint16(32768+i))), uint64(i+1))
	}
	const lookups = 8192
	for i := range lookups {
		cli := netip.AddrPortFrom(srv.Addr(), uint16(32768+maxTimewaitWatch+i))
		for _, ends := range [][2]netip.AddrPort{{srv, cli}, {cli, srv}} {
			if c, ok := x.get(1, ends[0], ends[1]); ok {
				t.Fatalf("%v %v: found %d", ends[0], ends[1], c)
			}
		}
	}
	if x.probes > 2*lookups/10 {
		t.Errorf("%d of %d lookups of unwatched four-tuples went to the map", x.probes, 2*lookups)
	}
	// A watched socket in the bucket of the unbound ports, as one of
	// a few hundred watched sockets is, now and then.
	unbound := netip.AddrPortFrom(srv.Addr(), 0)
	for p := uint16(1); p != 0; p++ {
		if portBucket(srv.Port(), p) == portBucket(0, srv.Port()) {
			x.set(twKeyOf(1, srv, netip.AddrPortFrom(srv.Addr(), p)), 9999)
			break
		}
	}
	before := x.probes
	for range 100 {
		x.get(1, unbound, srv)
		x.get(1, srv, unbound)
	}
	if x.probes != before {
		t.Errorf("%d lookups with an unbound port went to the map", x.probes-before)
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
