package tracer_test

import (
	"bytes"
	"io"
	"net/netip"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/live"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// rawConnection builds the 10 raw records of one loopback connection, as
// the kernel writes them.
func rawConnection() [][]byte {
	type tr struct {
		cookie   uint64
		sport    uint16
		dport    uint16
		old, new event.State
		call     event.Call
	}
	steps := []tr{
		{1, 10001, 7070, event.Close, event.SynSent, event.CallConnect},
		{1, 10001, 7070, event.SynSent, event.Established, event.CallConnect},
		{2, 7070, 10001, event.Listen, event.SynRecv, 0},
		{2, 7070, 10001, event.SynRecv, event.Established, 0},
		{2, 7070, 10001, event.Established, event.FinWait1, event.CallClose},
		{1, 10001, 7070, event.Established, event.CloseWait, 0},
		{2, 7070, 10001, event.FinWait1, event.FinWait2, 0},
		{2, 7070, 10001, event.FinWait2, event.Close, 0},
		{1, 10001, 7070, event.CloseWait, event.LastAck, event.CallClose},
		{1, 10001, 7070, event.LastAck, event.Close, event.CallClose},
	}
	var out [][]byte
	for i, s := range steps {
		e := event.Event{Kind: event.KindState, MonoNs: uint64(1000 * (i + 1)), Cookie: s.cookie, PID: 4242, FD: 3,
			Family: event.AFInet, Protocol: 6, Old: s.old, New: s.new, Call: s.call,
			Local:  netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), s.sport),
			Remote: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), s.dport)}
		copy(e.Comm[:], "client")
		b := make([]byte, event.Size)
		event.Encode(b, &e)
		out = append(out, b)
	}
	return out
}

// BenchmarkPipeline is the user-space cost per event: decode, track,
// format a table line and a JSON line. It must not allocate.
func BenchmarkPipeline(b *testing.B) {
	conn := rawConnection()
	tracker := timeline.New()
	table := live.NewTable(io.Discard)
	jsonOut := capture.NewWriter(io.Discard)
	var e event.Event
	var cookie uint64
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		raw := conn[n%len(conn)]
		if n%len(conn) == 0 {
			cookie += 2
		}
		n++
		_ = event.Decode(raw, &e)
		e.Cookie += cookie
		tr := tracker.Transition(&e)
		table.Transition(tr, 1)
		jsonOut.WriteTransition(tr, 1)
	}
}

// TestPipelineAllocations: once warm, a connection's events cost no
// allocation in decode, tracking and formatting.
func TestPipelineAllocations(t *testing.T) {
	conn := rawConnection()
	tracker := timeline.New()
	table := live.NewTable(io.Discard)
	jsonOut := capture.NewWriter(&bytes.Buffer{})
	var e event.Event
	cookie := uint64(0)
	run := func() {
		cookie += 2
		for _, raw := range conn {
			_ = event.Decode(raw, &e)
			e.Cookie += cookie
			tr := tracker.Transition(&e)
			table.Transition(tr, 1)
			jsonOut.WriteTransition(tr, 1)
		}
		table.Flush()
		jsonOut.Flush()
	}
	run()
	if n := testing.AllocsPerRun(200, run); n > 0.5 {
		t.Fatalf("%v allocations per connection (10 events)", n)
	}
}
