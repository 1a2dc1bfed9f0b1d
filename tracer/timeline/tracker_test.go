package timeline

import (
	"net/netip"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
)

var (
	client = netip.MustParseAddrPort("127.0.0.1:10001")
	server = netip.MustParseAddrPort("127.0.0.1:7070")
)

// ev builds a transition event as the kernel would report it.
func ev(mono uint64, cookie uint64, local, remote netip.AddrPort, old, nw event.State, pid uint32, comm string) *event.Event {
	e := &event.Event{Kind: event.KindState, MonoNs: mono, Cookie: cookie, Family: event.AFInet,
		Local: local, Remote: remote, Old: old, New: nw, PID: pid, FD: -1}
	copy(e.Comm[:], comm)
	return e
}

func inCall(e *event.Event, call event.Call, fd int32) *event.Event {
	e.Call, e.FD = call, fd
	return e
}

func TestStoryCausesAndOwners(t *testing.T) {
	tr := New()
	const C, S = 4097, 4098
	type step struct {
		e         *event.Event
		cause     string
		owners    string
		prevState int64
	}
	accept := &event.Event{Kind: event.KindCall, Call: event.CallAccept, MonoNs: 45, Cookie: S, PID: 100, FD: 6}
	copy(accept.Comm[:], "server")
	exiting := ev(2000, C, client, server, event.CloseWait, event.LastAck, 200, "client")
	exiting.Flags = event.FlagExiting
	steps := []step{
		{inCall(ev(10, C, client, server, event.Close, event.SynSent, 200, "client"), event.CallConnect, 3), "connect(fd 3)", "client[200] fd 3", -1},
		{inCall(ev(20, C, client, server, event.SynSent, event.Established, 200, "client"), event.CallConnect, 3), "handshake done", "client[200] fd 3", 10},
		{ev(30, S, server, client, event.Listen, event.SynRecv, 200, "client"), "SYN received", "no process (owner unknown)", -1},
		{ev(40, S, server, client, event.SynRecv, event.Established, 200, "client"), "handshake done", "no process (owner unknown)", 10},
		{nil, "", "", 0}, // accept
		{inCall(ev(50, S, server, client, event.Established, event.FinWait1, 100, "server"), event.CallClose, 6), "close(fd 6)", "server[100] fd 6", 10},
		{ev(60, C, client, server, event.Established, event.CloseWait, 100, "server"), "peer closed (FIN)", "client[200] fd 3", 40},
		{ev(70, S, server, client, event.FinWait1, event.FinWait2, 0, "swapper/0"), "peer ACKed our FIN", "no process (owner unknown)", 20},
		{ev(80, S, server, client, event.FinWait2, event.Close, 0, "swapper/0"), "handed to timewait", "no process (owner unknown)", 10},
		{nil, "", "", 0}, // exit of the client
		{exiting, "exit of pid 200", "no process (owner unknown)", 1940},
		{ev(2010, C, client, server, event.LastAck, event.Close, 200, "client"), "peer ACKed our FIN", "no process (owner unknown)", 10},
	}
	for i, st := range steps {
		switch i {
		case 4:
			if s := tr.Call(accept); s == nil || len(s.Owners) != 1 {
				t.Fatalf("accept did not make the server an owner: %+v", s)
			}
			continue
		case 9:
			if !tr.Owns(200) {
				t.Fatal("client should own its socket before it exits")
			}
			tr.Exit(&event.Event{Kind: event.KindExit, PID: 200})
			continue
		}
		got := tr.Transition(st.e)
		if text := string(got.Cause.AppendText(nil)); text != st.cause {
			t.Errorf("step %d %v->%v: cause %q, want %q", i, st.e.Old, st.e.New, text, st.cause)
		}
		if o := OwnersText(got.Owners); o != st.owners {
			t.Errorf("step %d %v->%v: owners %q, want %q", i, st.e.Old, st.e.New, o, st.owners)
		}
		if got.PrevStateNs != st.prevState {
			t.Errorf("step %d %v->%v: prev state %d ns, want %d", i, st.e.Old, st.e.New, got.PrevStateNs, st.prevState)
		}
		if got.Gap {
			t.Errorf("step %d: unexpected gap", i)
		}
	}
	if tr.Socket(C) != nil || tr.Socket(S) != nil {
		t.Fatal("closed sockets must be forgotten")
	}
	if tr.Transitions != 10 || tr.SocketsSeen != 2 {
		t.Fatalf("counted %d transitions, %d sockets", tr.Transitions, tr.SocketsSeen)
	}
}

func TestGapIsReported(t *testing.T) {
	tr := New()
	tr.Transition(ev(10, 1, client, server, event.Close, event.SynSent, 1, "c"))
	// SYN_SENT -> ESTABLISHED and ESTABLISHED -> CLOSE_WAIT were lost.
	got := tr.Transition(ev(50, 1, client, server, event.CloseWait, event.LastAck, 1, "c"))
	if !got.Gap || got.ExpectedOld != event.SynSent {
		t.Fatalf("gap not reported: %+v", got)
	}
	if got.PrevStateNs != -1 {
		t.Fatalf("time in a state after a gap is unknown, got %d", got.PrevStateNs)
	}
	if tr.Gaps != 1 {
		t.Fatalf("gaps = %d", tr.Gaps)
	}
}

func TestForkAndSharedClose(t *testing.T) {
	tr := New()
	tr.Transition(inCall(ev(10, 1, client, server, event.Close, event.SynSent, 10, "parent"), event.CallConnect, 5))
	tr.Fork(&event.Event{Kind: event.KindFork, PID: 10, Arg: 11})
	s := tr.Socket(1)
	if got := OwnersText(s.Owners); got != "parent[10] fd 5, parent[11] fd 5" {
		t.Fatalf("owners after fork: %s", got)
	}
	// The parent closes its fd: nothing changes state, the child holds it.
	tr.Call(&event.Event{Kind: event.KindCall, Call: event.CallClose, Cookie: 1, PID: 10, FD: 5})
	if got := OwnersText(s.Owners); got != "parent[11] fd 5" {
		t.Fatalf("owners after the parent's close: %s", got)
	}
	if tr.Owns(10) || !tr.Owns(11) {
		t.Fatal("ownership counts wrong")
	}
}

func TestClassify(t *testing.T) {
	const (
		refused = 111
		reset   = 104
		timeout = 110
		aborted = 103
	)
	tests := []struct {
		old, nw event.State
		call    event.Call
		skErr   int32
		exiting bool
		rstSent bool // the kernel had just reset it itself
		want    CauseKind
	}{
		{event.SynSent, event.Close, event.CallNone, refused, false, false, CauseRefused},
		{event.SynSent, event.Close, event.CallNone, timeout, false, false, CauseTimeout},
		{event.Established, event.Close, event.CallNone, reset, false, false, CauseRSTReceived},
		{event.Established, event.Close, event.CallClose, 0, false, false, CauseRSTSent},
		{event.Established, event.FinWait1, event.CallShutdown, 0, false, false, CauseShutdown},
		{event.Established, event.FinWait1, event.CallNone, 0, true, false, CauseExit},
		{event.CloseWait, event.LastAck, event.CallClose, 0, false, false, CauseClose},
		{event.Close, event.Listen, event.CallListen, 0, false, false, CauseListen},
		{event.FinWait1, event.Closing, event.CallNone, 0, false, false, CausePeerFIN},
		{event.Closing, event.Close, event.CallNone, 0, false, false, CauseTimewait},
		{event.Listen, event.Close, event.CallClose, 0, false, false, CauseClose},
		// Softirq work for this socket while its owner is in some other
		// syscall: no call matched, so no call is blamed.
		{event.Established, event.FinWait1, event.CallNone, 0, false, false, CauseUnknown},
		// FIN_WAIT2 leaves for CLOSE with no call and no error both when
		// it is handed to a timewait socket and when its tcp_fin_timeout
		// runs out: only the kernel's own reset tells them apart.
		{event.FinWait2, event.Close, event.CallNone, 0, false, false, CauseTimewait},
		{event.FinWait2, event.Close, event.CallNone, 0, false, true, CauseFinTimeout},
		{event.FinWait1, event.Close, event.CallNone, 0, false, true, CauseAborted},
		// Destroyed on request (tcp_abort): ECONNABORTED, with or without
		// the reset it sends in connected states.
		{event.Established, event.Close, event.CallNone, aborted, false, true, CauseDestroyed},
		{event.FinWait2, event.Close, event.CallNone, aborted, false, true, CauseDestroyed},
		{event.SynSent, event.Close, event.CallNone, aborted, false, false, CauseDestroyed},
		// An error the peer caused decides first.
		{event.FinWait2, event.Close, event.CallNone, reset, false, true, CauseRSTReceived},
	}
	for _, tt := range tests {
		e := ev(1, 1, client, server, tt.old, tt.nw, 1, "x")
		e.Call, e.SkErr = tt.call, tt.skErr
		if tt.call != event.CallNone {
			e.FD = 3
		}
		if tt.exiting {
			e.Flags = event.FlagExiting
		}
		if tt.rstSent {
			e.Flags |= event.FlagRSTSent
		}
		if got := classify(e, 0); got.Kind != tt.want {
			t.Errorf("%v->%v call=%v err=%d exiting=%v rst sent=%v: %v, want %v", tt.old, tt.nw, tt.call, tt.skErr, tt.exiting, tt.rstSent, got.Kind, tt.want)
		}
	}
}

func TestHolderWhy(t *testing.T) {
	var comm [16]byte
	copy(comm[:], "client")
	h := Holder{Local: client, Remote: server, State: event.CloseWait, StateNs: 1e9,
		Owners: []Owner{{PID: 4242, FD: 3, Comm: comm}}}
	want := "127.0.0.1:10001→127.0.0.1:7070 in CLOSE_WAIT for 1.0s, owned by client[4242] fd 3: the peer closed and this process never called close(fd 3)"
	if got := h.Describe(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func BenchmarkTransition(b *testing.B) {
	tr := New()
	events := []*event.Event{
		inCall(ev(10, 0, client, server, event.Close, event.SynSent, 200, "client"), event.CallConnect, 3),
		inCall(ev(20, 0, client, server, event.SynSent, event.Established, 200, "client"), event.CallConnect, 3),
		ev(60, 0, client, server, event.Established, event.CloseWait, 100, "server"),
		inCall(ev(70, 0, client, server, event.CloseWait, event.LastAck, 200, "client"), event.CallClose, 3),
		ev(80, 0, client, server, event.LastAck, event.Close, 200, "client"),
	}
	b.ReportAllocs()
	var cookie uint64
	for b.Loop() {
		cookie++
		for _, e := range events {
			e.Cookie = cookie
			tr.Transition(e)
		}
	}
}

// The live sockets by state follow every way a socket comes and goes: a
// transition, one found at start, a close, one the socket table says is
// gone, and a gap.
func TestLiveByState(t *testing.T) {
	tr := New()
	tr.CountLive()
	a, b := netip.MustParseAddrPort("127.0.0.1:1"), netip.MustParseAddrPort("127.0.0.1:2")
	tr.Transition(ev(1, 1, a, b, event.Close, event.SynSent, 1, "c"))
	tr.Transition(ev(2, 1, a, b, event.SynSent, event.Established, 1, "c"))
	tr.Add(Socket{Cookie: 2, State: event.Listen})
	tr.Add(Socket{Cookie: 3, State: event.CloseWait})
	tr.Transition(ev(3, 4, a, b, event.FinWait1, event.FinWait2, 1, "c")) // first sight
	want := func(what string, st event.State, n int64) {
		t.Helper()
		if got := tr.LiveByState()[st]; got != n {
			t.Errorf("%s: %d sockets in %v, want %d", what, got, st, n)
		}
	}
	want("connected", event.Established, 1)
	want("connected", event.SynSent, 0)
	want("found at start", event.Listen, 1)
	want("first sight", event.FinWait2, 1)
	tr.Transition(ev(4, 1, a, b, event.Established, event.Close, 1, "c")) // a reset
	want("closed", event.Established, 0)
	want("closed", event.Close, 0)
	tr.Forget(3)
	want("forgotten", event.CloseWait, 0)
	tr.Transition(ev(5, 4, a, b, event.TimeWait, event.Close, 1, "c")) // gap: FIN_WAIT2 expected
	want("after a gap", event.FinWait2, 0)
	total := int64(0)
	for _, n := range tr.LiveByState() {
		total += n
	}
	if total != 1 {
		t.Errorf("%d live sockets in all, want 1 (the listener)", total)
	}
}
