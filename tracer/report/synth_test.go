package report

import (
	"io"
	"net/netip"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// synthStart is when synthetic captures start.
var synthStart = time.Date(2025, 11, 24, 5, 30, 0, 0, time.UTC)

const synthStartMono = 1_000_000_000_000

// synth writes a capture of conns story-like connections through the real
// tracker and writer, as 'tcptrail trace' would: a client connects to
// 127.0.0.1:7070, the server accepts and closes at once, the client closes
// after it. Every leakEvery-th client (0: none) instead sits in CLOSE_WAIT
// until the capture ends, with a leak record. Each connection is 11 events:
// 10 transitions and an accept (9 for a leak). It returns the number of
// events.
func synth(t testing.TB, w io.Writer, conns, leakEvery int) int {
	t.Helper()
	cw := capture.NewWriter(w)
	tr := timeline.New()
	events := 0
	mono := uint64(synthStartMono)
	wall := func(m uint64) int64 { return synthStart.UnixNano() + int64(m-synthStartMono) }
	must := func(err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	must(cw.Write(&record.Header{Type: record.TypeHeader, Schema: record.SchemaVersion, Tool: "tcptrail", Version: "test",
		Host: "box", Kernel: "6.18.0", StartTime: synthStart, StartMonoNs: synthStartMono,
		Filters: record.Filters{Ports: []uint16{7070}}, Attach: "tp_btf"}))

	server := netip.MustParseAddrPort("127.0.0.1:7070")
	var comm [16]byte
	copy(comm[:], "client")
	var scomm [16]byte
	copy(scomm[:], "server")
	const serverPID = 100
	var leaked []*event.Event
	for i := range conns {
		client := netip.AddrPortFrom(server.Addr(), uint16(10000+i%50000))
		cpid := uint32(1000 + i%30000)
		cc, sc := uint64(2*i+10), uint64(2*i+11)
		leak := leakEvery > 0 && i%leakEvery == leakEvery-1
		start := mono
		// step applies one transition at start+at.
		step := func(cookie uint64, local, remote netip.AddrPort, old, nw event.State, at uint64, pid uint32, c [16]byte, call event.Call, fd int32) {
			e := &event.Event{Kind: event.KindState, Call: call, Old: old, New: nw, MonoNs: start + at, Cookie: cookie,
				Family: event.AFInet, Local: local, Remote: remote, PID: pid, TID: pid, FD: fd, Comm: c}
			must(cw.WriteTransition(tr.Transition(e), wall(e.MonoNs)))
			events++
		}
		step(cc, client, server, event.Close, event.SynSent, 0, cpid, comm, event.CallConnect, 3)
		step(cc, client, server, event.SynSent, event.Established, 50_000, cpid, comm, event.CallConnect, 3)
		// The server's end changes in the client's context, but not inside
		// a call on that socket.
		step(sc, server, client, event.Listen, event.SynRecv, 56_000, cpid, comm, event.CallNone, -1)
		step(sc, server, client, event.SynRecv, event.Established, 61_000, cpid, comm, event.CallNone, -1)
		acc := &event.Event{Kind: event.KindCall, Call: event.CallAccept, Old: event.Established, MonoNs: start + 200_000,
			Cookie: sc, Family: event.AFInet, Local: server, Remote: client, PID: serverPID, TID: serverPID, FD: 7, Comm: scomm}
		tr.Call(acc)
		var owners []timeline.Owner
		if s := tr.Socket(sc); s != nil {
			owners = s.Owners
		}
		must(cw.Write(record.CallRecord(acc, time.Unix(0, wall(acc.MonoNs)).UTC(), owners)))
		events++
		step(sc, server, client, event.Established, event.FinWait1, 300_000, serverPID, scomm, event.CallClose, 7)
		step(cc, client, server, event.Established, event.CloseWait, 330_000, serverPID, scomm, event.CallClose, 7)
		step(sc, server, client, event.FinWait1, event.FinWait2, 360_000, 0, [16]byte{'s', 'w', 'a', 'p', 'p', 'e', 'r'}, event.CallNone, -1)
		step(sc, server, client, event.FinWait2, event.Close, 365_000, 0, [16]byte{'s', 'w', 'a', 'p', 'p', 'e', 'r'}, event.CallNone, -1)
		if leak {
			leaked = append(leaked, &event.Event{Cookie: cc, Local: client, Remote: server, PID: cpid, MonoNs: start + 330_000})
			must(cw.Write(&record.Leak{Type: record.TypeLeak, Time: time.Unix(0, wall(start+1_330_000)).UTC(), MonoNs: start + 1_330_000,
				Phase: "stuck", Socket: record.SocketOf(cc, 0, event.AFInet, client, server), State: "CLOSE_WAIT",
				Since: time.Unix(0, wall(start+330_000)).UTC(), AgeNs: 1_000_000,
				Owners:  []record.Owner{{PID: cpid, Comm: "client", FD: 3}},
				Message: "stuck in CLOSE_WAIT: the peer closed and client never closed fd 3"}))
		} else {
			step(cc, client, server, event.CloseWait, event.LastAck, 400_000, cpid, comm, event.CallClose, 3)
			step(cc, client, server, event.LastAck, event.Close, 410_000, cpid, comm, event.CallNone, -1)
		}
		mono += 10_000 // a connection every 10µs, each lasting about 0.4ms
	}
	end := mono + 1_000_000
	var leaks []record.Leak
	for _, e := range leaked {
		leaks = append(leaks, record.Leak{Type: record.TypeLeak, Time: time.Unix(0, wall(end)).UTC(), MonoNs: end, Phase: "still_open",
			Socket: record.SocketOf(e.Cookie, e.NetNS, event.AFInet, e.Local, e.Remote), State: "CLOSE_WAIT",
			Since: time.Unix(0, wall(e.MonoNs)).UTC(), AgeNs: int64(end - e.MonoNs),
			Owners: []record.Owner{{PID: e.PID, Comm: "client", FD: 3}}, Message: "still in CLOSE_WAIT at the end"})
	}
	must(cw.Write(&record.Summary{Type: record.TypeSummary, Time: time.Unix(0, wall(end)).UTC(), MonoNs: end,
		DurationNs: int64(end - synthStartMono), Events: uint64(events), Transitions: tr.Transitions,
		Sockets: tr.SocketsSeen, Leaks: leaks}))
	must(cw.Close())
	return events
}
