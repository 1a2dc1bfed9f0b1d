package tracer

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/container"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/live"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// churnConnection writes the kernel's records of one loopback connection
// as the churn load makes them (the server closes first): 10 transitions
// and the accept, with the cookies, client port and times given.
func churnConnection(recs [][]byte, client, server uint64, port uint16, mono uint64, pid uint32) {
	srv := netip.MustParseAddrPort("127.0.0.1:7070")
	cli := netip.AddrPortFrom(srv.Addr(), port)
	steps := []struct {
		cookie   uint64
		kind     event.Kind
		old, new event.State
		call     event.Call
		fd       int32
		flags    uint8
	}{
		{client, event.KindState, event.Close, event.SynSent, event.CallConnect, 3, 0},
		{client, event.KindState, event.SynSent, event.Established, event.CallConnect, 3, 0},
		{server, event.KindState, event.Listen, event.SynRecv, 0, -1, 0},
		{server, event.KindState, event.SynRecv, event.Established, 0, -1, 0},
		{server, event.KindCall, event.Established, event.Established, event.CallAccept, 5, 0},
		{server, event.KindState, event.Established, event.FinWait1, event.CallClose, 5, 0},
		{client, event.KindState, event.Established, event.CloseWait, 0, -1, 0},
		{server, event.KindState, event.FinWait1, event.FinWait2, 0, -1, 0},
		{client, event.KindState, event.CloseWait, event.LastAck, event.CallClose, 3, 0},
		{server, event.KindState, event.FinWait2, event.Close, 0, -1, event.FlagPeerFIN},
		{client, event.KindState, event.LastAck, event.Close, 0, -1, 0},
	}
	for i, st := range steps {
		e := event.Event{Kind: st.kind, MonoNs: mono + uint64(i)*3000, Cookie: st.cookie, PID: pid, TID: pid,
			FD: st.fd, Family: event.AFInet, Protocol: 6, Old: st.old, New: st.new, Call: st.call, Flags: st.flags,
			Cgroup: 1, NetNS: 4026531833}
		e.Local, e.Remote = cli, srv
		if st.cookie == server {
			e.Local, e.Remote = srv, cli
		}
		if st.new == event.SynSent {
			e.Local = netip.AddrPortFrom(cli.Addr(), 0) // not bound yet
		}
		copy(e.Comm[:], "churn")
		event.Encode(recs[i], &e)
	}
}

const recordsPerConnection = 11

// BenchmarkSession is the reader's whole path per kernel record at high
// churn, as a session runs it: decode, track, diagnose (leaks, timewait
// hand-overs filling the watch) and the sink, for each output of trace.
// Unlike the churn bench it has no kernel and no other load: what it
// measures moves little from run to run, so it tells small changes apart.
func BenchmarkSession(b *testing.B) {
	for _, mode := range []string{"capture-file", "json", "table", "no-output"} {
		b.Run(mode, func(b *testing.B) {
			var sink Sink
			switch mode {
			case "capture-file":
				f, err := capture.Create(filepath.Join(b.TempDir(), "capture.jsonl"))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				sink = capture.NewWriter(f)
			case "json":
				sink = capture.NewWriter(io.Discard)
			case "table":
				sink = live.NewTable(io.Discard)
			case "no-output":
				sink = noOutput{}
			}
			s := benchSession(b, sink)
			// Records made beforehand, so that only the session is timed:
			// enough connections that their sockets and ports come back
			// no sooner than at a busy port (the ports then meet their
			// timewait sockets, as they do there).
			const conns = 8192
			recs := make([][]byte, conns*recordsPerConnection)
			for i := range recs {
				recs[i] = make([]byte, event.Size)
			}
			pid := uint32(os.Getpid())
			mono := uint64(time.Now().UnixNano())
			for c := range uint64(conns) {
				churnConnection(recs[c*recordsPerConnection:], 2*c+2, 2*c+3, uint16(32768+c), mono+c*30_000, pid)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.handle(recs[s.events%uint64(len(recs))]); err != nil {
					b.Fatal(err)
				}
				if s.events%4096 == 0 {
					if err := s.flush(); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := s.flush(); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// noOutput is a sink that writes nothing, routine calls included (as the
// capture writer and the table, it takes them as events): what a record
// costs before any output.
type noOutput struct{}

func (noOutput) Begin(*record.Header) error                            { return nil }
func (noOutput) Transition(*timeline.Transition, int64) error          { return nil }
func (noOutput) CallEvent(*event.Event, int64, []timeline.Owner) error { return nil }
func (noOutput) Record(any) error                                      { return nil }
func (noOutput) Flush() error                                          { return nil }
func (noOutput) End(*record.Summary) error                             { return nil }

// benchSession is a session as Run makes it, with its sink, but no kernel:
// records are handed to it.
func benchSession(b *testing.B, sink Sink) *Session {
	s := &Session{sinks: []Sink{sink}, tracker: timeline.New(), log: io.Discard}
	s.clock = NewClock()
	s.containers = container.NewCache(container.DefaultCacheSize)
	s.tracker.ContainerOf = s.containers.Lookup
	s.diag = NewDiagnoser(s.tracker, &fakeTable{entries: map[uint32][]socktable.Entry{4026531833: {}}}, s.clock, DefaultLeakAfter, s.emit)
	b.Cleanup(s.diag.Close)
	s.diag.RecordCalls = wantsRoutineCalls(sink)
	s.diag.EmitCall = s.emitCall
	return s
}
