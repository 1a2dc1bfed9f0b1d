package tracer

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// blockedLookups is a table whose lookups wait until hold is closed.
type blockedLookups struct {
	fakeTable
	hold chan struct{}
}

func (b *blockedLookups) Lookup(netns uint32, l, r netip.AddrPort) (*socktable.Entry, error) {
	<-b.hold
	return b.fakeTable.Lookup(netns, l, r)
}

// A leak check still waiting for the table when tracing ends, for a socket
// that left CLOSE_WAIT meanwhile, accuses nobody: not that socket, and not
// the socket whose struct the tracker handed the closed one's to.
func TestLeakCheckPendingAtEndOfAClosedSocket(t *testing.T) {
	table := &blockedLookups{fakeTable: fakeTable{entries: map[uint32][]socktable.Entry{nsA: {}}}, hold: make(chan struct{})}
	defer close(table.hold)
	d, tr, recs := newTestDiagnoser(table)
	defer d.Close()
	d.endWait = 50 * time.Millisecond
	step := func(cookie uint64, local netip.AddrPort, old, new event.State, at time.Duration) {
		transition(d, tr, event.Event{Kind: event.KindState, Cookie: cookie, NetNS: nsA, Family: event.AFInet,
			Local: local, Remote: server, Old: old, New: new, MonoNs: uint64(at), FD: -1})
	}
	step(11, client, event.Established, event.CloseWait, 10)
	d.Tick(uint64(time.Second)) // the check is posted; its lookup waits
	step(11, client, event.CloseWait, event.LastAck, 2*time.Second)
	step(11, client, event.LastAck, event.Close, 2*time.Second)
	step(99, netip.MustParseAddrPort("127.0.0.1:20002"), event.SynSent, event.Established, 3*time.Second)
	d.End(uint64(4 * time.Second))
	if leaks := records[*record.Leak](*recs); len(leaks) != 0 {
		for _, l := range leaks {
			t.Errorf("leak %s of %s:%d in %s: %s", l.Phase, l.Laddr, l.Lport, l.State, l.Message)
		}
	}
}
