package timeline

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// OnLocalPort finds exactly the live sockets on a local port, whatever
// happened before: connects whose first transition has no local port yet,
// timewait hand-overs that clear it, sockets added from the socket table,
// releases and forgets. Checked against a walk over every socket after
// each step of random histories.
func TestOnLocalPort(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	tr := New()
	ports := []uint16{0, 7070, 10001, 10002, 40000}
	addr := func() netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), ports[r.IntN(len(ports))])
	}
	states := []event.State{event.SynSent, event.Established, event.CloseWait, event.FinWait1, event.Listen, event.Close}
	for i := range 20000 {
		cookie := uint64(1 + r.IntN(50))
		switch r.IntN(10) {
		case 0:
			tr.Add(Socket{Cookie: cookie, Local: addr(), Remote: addr(), State: event.Established})
		case 1:
			tr.Forget(cookie)
		default:
			old := event.Established
			if s := tr.Socket(cookie); s != nil {
				old = s.State
			}
			tr.Transition(ev(uint64(i+1), cookie, addr(), addr(), old, states[r.IntN(len(states))], 1, "x"))
		}
		for _, p := range ports[1:] {
			var want, got []uint64
			tr.Sockets(func(s *Socket) {
				if s.Local.Port() == p {
					want = append(want, s.Cookie)
				}
			})
			tr.OnLocalPort(p, func(s *Socket) { got = append(got, s.Cookie) })
			slices.Sort(want)
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: sockets on port %d: %v, want %v", i, p, got, want)
			}
		}
	}
	tr.Sockets(func(s *Socket) { tr.Forget(s.Cookie) })
	for p, n := range tr.byPort {
		if n != 0 && p != 0 {
			t.Fatalf("every socket gone, yet %d counted on port %d", n, p)
		}
	}
}
