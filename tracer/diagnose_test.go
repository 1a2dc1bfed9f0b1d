package tracer

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// fakeTable is a socket table of hand-made entries, per namespace; a
// namespace in down answers every query with an error.
type fakeTable struct {
	entries map[uint32][]socktable.Entry
	down    map[uint32]bool
	gone    map[uint32]bool
	failed  uint64
	// skipped: sockets a dump steps over (as one resumed under churn can),
	// though a lookup finds them.
	skipped map[uint64]bool
	// dumped counts the entries dumps went through: those in the states
	// and on the ports asked for (what the kernel would send).
	dumped int
	// lookupFails: lookups fail (dumps answer).
	lookupFails bool
	// block, when set, holds every dump until it is closed.
	block chan struct{}
}

func (f *fakeTable) Namespaces() ([]uint32, error) {
	var out []uint32
	for ns := range f.entries {
		out = append(out, ns)
	}
	return out, nil
}

func (f *fakeTable) Dump(netns uint32, states uint32, ports socktable.Ports, keep func(*socktable.Entry) bool) ([]socktable.Entry, error) {
	if f.block != nil {
		<-f.block
	}
	if f.down[netns] {
		f.failed++
		return nil, errors.New("query failed")
	}
	var out []socktable.Entry
	for _, e := range f.entries[netns] {
		if f.skipped[e.Cookie] || states&(1<<e.State) == 0 || !ports.Match(&e) {
			continue
		}
		f.dumped++
		if keep == nil || keep(&e) {
			out = append(out, e)
		}
	}
	return out, nil
}

func (f *fakeTable) Lookup(netns uint32, local, remote netip.AddrPort) (*socktable.Entry, error) {
	if f.down[netns] || f.lookupFails {
		f.failed++
		return nil, errors.New("query failed")
	}
	for _, e := range f.entries[netns] {
		if e.Local == local && e.Remote == remote {
			return &e, nil
		}
	}
	return nil, nil
}

func (f *fakeTable) Hint(netns, pid uint32) {}
func (f *fakeTable) Gone(netns uint32) bool { return f.gone[netns] }
func (f *fakeTable) Failed() uint64         { return f.failed }
func (f *fakeTable) Close() error           { return nil }

var (
	client = netip.MustParseAddrPort("127.0.0.1:10001")
	server = netip.MustParseAddrPort("127.0.0.1:7070")
)

const nsA, nsB = 4026532001, 4026532002

func newTestDiagnoser(table SocketTable) (*Diagnoser, *timeline.Tracker, *[]any) {
	var recs []any
	tr := timeline.New()
	d := NewDiagnoser(tr, table, Clock{WallNs: time.Now().UnixNano(), MonoNs: 1}, 300*time.Millisecond,
		func(r any) { recs = append(recs, r) })
	return d, tr, &recs
}

func transition(d *Diagnoser, tr *timeline.Tracker, e event.Event) {
	d.Transition(tr.Transition(&e))
}

func records[T any](recs []any) []T {
	var out []T
	for _, r := range recs {
		if t, ok := r.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// The same addresses in two namespaces: a CLOSE_WAIT in one is a leak of
// that one only, confirmed in its own namespace's table; when that table
// cannot be asked the leak is still reported, marked unconfirmed.
func TestLeakPerNamespace(t *testing.T) {
	table := &fakeTable{
		entries: map[uint32][]socktable.Entry{
			nsA: {{Local: client, Remote: server, State: uint8(event.CloseWait), Cookie: 11, Inode: 5}},
			nsB: {},
		},
		down: map[uint32]bool{nsB: true},
	}
	d, tr, recs := newTestDiagnoser(table)
	for _, c := range []struct {
		cookie uint64
		netns  uint32
	}{{11, nsA}, {12, nsB}} {
		transition(d, tr, event.Event{Kind: event.KindState, Cookie: c.cookie, NetNS: c.netns, Family: event.AFInet,
			Local: client, Remote: server, Old: event.Established, New: event.CloseWait, MonoNs: 10, FD: -1})
	}
	d.Tick(uint64(time.Second))
	d.queries.apply(5 * time.Second) // the table is asked off the reader's path
	leaks := records[*record.Leak](*recs)
	if len(leaks) != 2 {
		t.Fatalf("leaks: %v", leaks)
	}
	for _, l := range leaks {
		wantUnconfirmed := l.NetNS == nsB
		if l.Unconfirmed != wantUnconfirmed || strings.Contains(l.Message, "not confirmed") != wantUnconfirmed {
			t.Errorf("leak in %d: unconfirmed %v: %s", l.NetNS, l.Unconfirmed, l.Message)
		}
	}
	if d.QueriesFailed() != 1 {
		t.Errorf("failed queries: %d, want 1", d.QueriesFailed())
	}
}

// A failed bind in one namespace names the holders of that namespace only,
// and the tracker's holders when the table cannot be asked.
func TestBindConflictPerNamespace(t *testing.T) {
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {}, nsB: {}}, down: map[uint32]bool{nsA: true, nsB: true}}
	d, tr, recs := newTestDiagnoser(table)
	for _, c := range []struct {
		cookie uint64
		netns  uint32
	}{{11, nsA}, {12, nsB}} {
		transition(d, tr, event.Event{Kind: event.KindState, Cookie: c.cookie, NetNS: c.netns, Family: event.AFInet,
			Local: client, Remote: server, Old: event.Established, New: event.CloseWait, MonoNs: 10, FD: -1})
	}
	d.Call(&event.Event{Kind: event.KindCall, Call: event.CallBind, NetNS: nsB, Family: event.AFInet,
		Local: client, Ret: -98, FD: 8, PID: 42, MonoNs: 20})
	d.queries.apply(5 * time.Second) // the table is asked off the reader's path
	binds := records[*record.BindConflict](*recs)
	if len(binds) != 1 || len(binds[0].Holders) != 1 || binds[0].Holders[0].Cookie != 12 || binds[0].Holders[0].NetNS != nsB {
		t.Fatalf("bind conflict in namespace %d: %+v", nsB, binds)
	}
}

// The table is asked after the failure: by then a retry may have made a
// new connection on the holder's four-tuple (the story's fixed client,
// dialing from the same port as soon as the buggy one exits). Two sockets
// never share a connected four-tuple, so that one is not named; listeners
// may share theirs (SO_REUSEPORT), and one the tracker does not know is.
func TestBindConflictLeavesOutLaterSockets(t *testing.T) {
	listener := netip.MustParseAddrPort("0.0.0.0:10001")
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {
		// The retry's connection, made after the failure.
		{Cookie: 99, Family: event.AFInet, Local: client, Remote: server, State: uint8(event.Established), Inode: 5, NetNS: nsA},
		// A second listener on the port, older than the trace.
		{Cookie: 98, Family: event.AFInet, Local: listener, State: uint8(event.Listen), Inode: 6, NetNS: nsA},
	}}}
	d, tr, recs := newTestDiagnoser(table)
	transition(d, tr, event.Event{Kind: event.KindState, Cookie: 11, NetNS: nsA, Family: event.AFInet,
		Local: client, Remote: server, Old: event.Established, New: event.CloseWait, MonoNs: 10, FD: -1})
	transition(d, tr, event.Event{Kind: event.KindState, Cookie: 12, NetNS: nsA, Family: event.AFInet,
		Local: listener, Old: event.Close, New: event.Listen, MonoNs: 11, FD: 3, PID: 7, Call: event.CallListen})
	d.Call(&event.Event{Kind: event.KindCall, Call: event.CallBind, NetNS: nsA, Family: event.AFInet,
		Local: client, Ret: -98, FD: 8, PID: 42, MonoNs: 20})
	d.queries.apply(5 * time.Second)
	binds := records[*record.BindConflict](*recs)
	if len(binds) != 1 {
		t.Fatalf("%d bind conflicts, want 1", len(binds))
	}
	var got []uint64
	for _, h := range binds[0].Holders {
		got = append(got, h.Cookie)
	}
	slices.Sort(got)
	if !slices.Equal(got, []uint64{11, 12, 98}) {
		t.Fatalf("holders %v, want the CLOSE_WAIT socket and both listeners (11, 12, 98): %s", got, binds[0].Message)
	}
}

// Sockets handed to timewait during the trace take the places of those
// found at start; a namespace that is gone takes its timewait sockets along.
func TestTimewaitWatchPriorityAndGoneNamespace(t *testing.T) {
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {}}, gone: map[uint32]bool{}}
	d, _, recs := newTestDiagnoser(table)
	for i := 0; i < maxTimewaitWatch; i++ {
		local := netip.AddrPortFrom(client.Addr(), uint16(20000+i))
		d.watchTimewait(uint64(1000+i), nsA, event.AFInet, local, server, uint8(event.TimeWait), 1, 60_000, true)
	}
	e := event.Event{Kind: event.KindState, Cookie: 7, NetNS: nsA, Family: event.AFInet, Local: server, Remote: client,
		Old: event.FinWait2, New: event.Close, MonoNs: 5, Flags: event.FlagPeerFIN}
	d.handedOver(&e)
	if _, ok := d.timewait[7]; !ok || len(d.timewait) != maxTimewaitWatch || d.TimewaitUnwatched() != 1 {
		t.Fatalf("a socket of the trace did not take a start-up socket's place: watched %d, unwatched %d", len(d.timewait), d.TimewaitUnwatched())
	}
	table.gone[nsA] = true
	d.Tick(uint64(2 * time.Second))
	d.queries.apply(5 * time.Second) // the namespace is asked off the reader's path
	gone := records[*record.Snapshot](*recs)
	n := 0
	for _, s := range gone {
		if s.Reason == "timewait_gone" {
			n++
			if s.Note != "its network namespace was deleted" {
				t.Fatalf("note %q", s.Note)
			}
		}
	}
	if n != maxTimewaitWatch || len(d.timewait) != 0 {
		t.Fatalf("%d timewait sockets gone with their namespace, %d still watched", n, len(d.timewait))
	}
}

// Sockets that pass through CLOSE_WAIT leave nothing behind (a busy host
// sends thousands a second through it), and one that stays is reported
// once, within a tenth of the threshold of it.
func TestCloseWaitsFollowedWhileThere(t *testing.T) {
	table := &fakeTable{entries: map[uint32][]socktable.Entry{
		nsA: {{Local: client, Remote: server, State: uint8(event.CloseWait), Cookie: 1, Inode: 5}},
	}}
	d, tr, recs := newTestDiagnoser(table) // leak after 300 ms
	defer d.Close()
	step := func(cookie uint64, local netip.AddrPort, old, new event.State, at time.Duration) {
		transition(d, tr, event.Event{Kind: event.KindState, Cookie: cookie, NetNS: nsA, Family: event.AFInet,
			Local: local, Remote: server, Old: old, New: new, MonoNs: uint64(at), FD: -1})
	}
	step(1, client, event.Established, event.CloseWait, time.Second)
	for i := uint64(2); i < 10_000; i++ {
		local := netip.AddrPortFrom(client.Addr(), uint16(20000+i))
		step(i, local, event.Established, event.CloseWait, time.Second)
		step(i, local, event.CloseWait, event.LastAck, time.Second+time.Millisecond)
	}
	if len(d.closeWaits) != 1 {
		t.Fatalf("%d sockets followed in CLOSE_WAIT, want the one still there", len(d.closeWaits))
	}
	d.Tick(uint64(time.Second + 200*time.Millisecond))
	d.queries.apply(5 * time.Second)
	if n := len(records[*record.Leak](*recs)); n != 0 {
		t.Fatalf("%d leaks before the threshold", n)
	}
	d.Tick(uint64(time.Second + 330*time.Millisecond))
	d.queries.apply(5 * time.Second)
	d.Tick(uint64(time.Second + 400*time.Millisecond))
	d.queries.apply(5 * time.Second)
	if leaks := records[*record.Leak](*recs); len(leaks) != 1 || leaks[0].Cookie != 1 || leaks[0].Phase != "stuck" {
		t.Fatalf("leaks: %+v, want socket 1 stuck, once", leaks)
	}
	if len(d.closeWaits) != 0 {
		t.Errorf("a reported socket is still followed")
	}
}

// The summary's leaks are bounded: a service leaking all day keeps the
// latest, and the rest are counted.
func TestSummaryLeaksBounded(t *testing.T) {
	d, _, _ := newTestDiagnoser(&fakeTable{})
	defer d.Close()
	for i := 0; i < maxSummaryLeaks+10; i++ {
		d.replaceLeak(record.Leak{Type: record.TypeLeak, Phase: "closed_late", Socket: record.Socket{Cookie: uint64(i)}})
	}
	leaks := d.Leaks()
	if len(leaks) != maxSummaryLeaks || d.LeaksOmitted() != 10 || leaks[0].Cookie != 10 || leaks[len(leaks)-1].Cookie != maxSummaryLeaks+9 {
		t.Fatalf("%d leaks kept from %d, %d omitted: want the latest %d, 10 omitted", len(leaks), leaks[0].Cookie, d.LeaksOmitted(), maxSummaryLeaks)
	}
}

// A socket-table answer about a timewait socket that the peer's
// transitions moved on while the table was asked is older than what is
// known: it must not take the socket back to FIN_WAIT2.
func TestTimewaitStaleAnswerIgnored(t *testing.T) {
	table := &fakeTable{entries: map[uint32][]socktable.Entry{
		nsA: {{Cookie: 7, Local: server, Remote: client, State: uint8(event.FinWait2), Timer: 3, Expires: 50_000}},
	}}
	d, _, recs := newTestDiagnoser(table)
	defer d.Close()
	d.watchTimewait(7, nsA, event.AFInet, server, client, uint8(event.FinWait2), 1, 60_000, false)
	now := uint64(10 * time.Second)
	d.pollTimewait(now) // asks while it is in FIN_WAIT2
	w := d.timewait[7]
	if w == nil || !w.asking {
		t.Fatal("the watched socket was not asked about")
	}
	// The peer's FIN arrives before the answer is applied.
	w.state, w.since = uint8(event.TimeWait), now+1
	d.queries.apply(5 * time.Second)
	for _, s := range records[*record.Snapshot](*recs) {
		if s.State == "FIN_WAIT2" || s.Reason == "timewait_gone" {
			t.Errorf("a stale answer was applied: %+v", s)
		}
	}
	if w.state != uint8(event.TimeWait) || w.asking {
		t.Errorf("state %d, asking %v: want TIME_WAIT, not asking", w.state, w.asking)
	}
}

// A socket in CLOSE_WAIT since before the trace: the kernel's table says
// the peer's last ACK came ten minutes ago (less on a machine up for less),
// so it has been there at least that long. The start-up snapshot says so, and the leak is reported at the
// first look, with that age, as a lower bound.
func TestLeakFoundAtStartAgedByKernel(t *testing.T) {
	// No older than the monotonic clock (a freshly booted machine).
	ago := min(10*time.Minute, time.Duration(MonoNow()/2)).Truncate(time.Millisecond)
	table := &fakeTable{entries: map[uint32][]socktable.Entry{
		nsA: {{NetNS: nsA, Local: client, Remote: server, State: uint8(event.CloseWait), Cookie: 11, Inode: 5, LastAckRecvMs: ago.Milliseconds()}},
	}}
	// The real clocks: the start-up scan dates by the monotonic clock.
	var recs []any
	d := NewDiagnoser(timeline.New(), table, NewClock(), 300*time.Millisecond, func(r any) { recs = append(recs, r) })
	if err := d.Start([]uint16{7070}, 0, 0, nil); err != nil {
		t.Fatal(err)
	}
	snaps := records[*record.Snapshot](recs)
	if len(snaps) != 1 || snaps[0].Reason != "start" || snaps[0].StateNs != int64(ago) {
		t.Fatalf("start-up snapshots: %+v, want one with state_ns %d", snaps, int64(ago))
	}
	now := MonoNow()
	d.Tick(now)
	d.queries.apply(5 * time.Second) // confirmed off the reader's path
	leaks := records[*record.Leak](recs)
	if len(leaks) != 1 {
		t.Fatalf("leaks right after start: %+v", leaks)
	}
	l := leaks[0]
	if !l.AgeAtLeast || l.AgeNs < int64(ago) || l.AgeNs > int64(ago+time.Minute) ||
		!strings.Contains(l.Message, "in CLOSE_WAIT for at least ") {
		t.Fatalf("leak found at start: age %v (at least: %v), %q", time.Duration(l.AgeNs), l.AgeAtLeast, l.Message)
	}
	if since := time.Since(l.Since); since < ago || since > ago+time.Minute {
		t.Fatalf("leak since %v, %v ago; want about %v ago", l.Since, since, ago)
	}
}

// Failed binds of one port in quick succession (a retry loop) share the
// socket table's answer for portTableReuse: one walk of the kernel's table,
// not one per failure. A reused answer's timewait timers have run since,
// and a timewait socket whose timer ran out is no longer named.
func TestBindRetriesShareATableAnswer(t *testing.T) {
	long := netip.MustParseAddrPort("127.0.0.1:40001")
	short := netip.MustParseAddrPort("127.0.0.1:40002")
	orphan := netip.MustParseAddrPort("127.0.0.1:40003")
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {
		{Local: client, Remote: long, State: uint8(event.TimeWait), Timer: 3, Expires: 30000, Cookie: 21},
		{Local: client, Remote: short, State: uint8(event.TimeWait), Timer: 3, Expires: 300, Cookie: 22},
		// An orphan after close(): inode 0 too, but its timer (here a
		// retransmit) is armed again and again, not its end.
		{Local: client, Remote: orphan, State: uint8(event.FinWait1), Timer: 1, Expires: 200, Cookie: 24},
		{Local: server, Remote: long, State: uint8(event.Established), Cookie: 23, Inode: 9}, // another port
	}}}
	d, _, recs := newTestDiagnoser(table)
	now := time.Unix(1000, 0)
	d.portTable.now = func() time.Time { return now }
	fail := func(after time.Duration) *record.BindConflict {
		t.Helper()
		now = now.Add(after)
		d.Call(&event.Event{Kind: event.KindCall, Call: event.CallBind, NetNS: nsA, Family: event.AFInet,
			Local: client, Ret: -98, FD: 8, PID: 42, MonoNs: 20})
		d.queries.apply(5 * time.Second)
		binds := records[*record.BindConflict](*recs)
		return binds[len(binds)-1]
	}
	left := func(b *record.BindConflict) []string {
		var out []string
		for _, h := range b.Holders {
			if !strings.Contains(h.Why, "TIME_WAIT") {
				out = append(out, h.State) // no timer to age
				continue
			}
			i := strings.LastIndex(h.Why, "(")
			out = append(out, h.Why[i:i+strings.Index(h.Why[i:], ")")+1])
		}
		return out
	}

	b := fail(0)
	if got := left(b); !slices.Equal(got, []string{"(30.0s left)", "(300ms left)", "FIN_WAIT1"}) || table.dumped != 3 {
		t.Fatalf("first failure: %v after %d entries dumped, want the three holders, 3 entries", got, table.dumped)
	}
	b = fail(200 * time.Millisecond)
	if got := left(b); !slices.Equal(got, []string{"(29.8s left)", "(100ms left)", "FIN_WAIT1"}) || table.dumped != 3 {
		t.Fatalf("200ms later: %v after %d entries dumped, want the first answer aged by 200ms", got, table.dumped)
	}
	b = fail(200 * time.Millisecond)
	if got := left(b); !slices.Equal(got, []string{"(29.6s left)", "FIN_WAIT1"}) || table.dumped != 3 {
		t.Fatalf("400ms later: %v after %d entries dumped, want the first answer without the expired timewait holder", got, table.dumped)
	}
	b = fail(portTableReuse)
	if got := left(b); len(got) != 3 || table.dumped != 6 {
		t.Fatalf("past the reuse time: %v after %d entries dumped, want a new dump", got, table.dumped)
	}
}

// Answers that have not come when tracing ends are not waited for without
// end, and not lost either: each pending bind diagnosis is made without
// the table and counted as a failed query, and an answer that comes later
// is never applied.
func TestEndAnswersEveryPendingQuery(t *testing.T) {
	block := make(chan struct{})
	table := &fakeTable{entries: map[uint32][]socktable.Entry{nsA: {}}, block: block}
	d, _, recs := newTestDiagnoser(table)
	d.endWait = 50 * time.Millisecond
	for i := range 3 {
		d.Call(&event.Event{Kind: event.KindCall, Call: event.CallBind, NetNS: nsA, Family: event.AFInet,
			Local: netip.AddrPortFrom(client.Addr(), uint16(10001+i)), Ret: -98, FD: 8, PID: 42, MonoNs: uint64(20 + i)})
	}
	d.queries.apply(0)
	if n := len(records[*record.BindConflict](*recs)); n != 0 {
		t.Fatalf("%d bind diagnoses before the table answered", n)
	}
	start := time.Now()
	d.End(100)
	if time.Since(start) > 2*time.Second {
		t.Fatalf("End waited %v for a table that does not answer", time.Since(start))
	}
	binds := records[*record.BindConflict](*recs)
	if len(binds) != 3 || d.QueriesFailed() != 3 {
		t.Fatalf("after End: %d bind diagnoses, %d failed queries; want 3 and 3", len(binds), d.QueriesFailed())
	}
	for i, b := range binds {
		if b.Lport != uint16(10001+i) || !strings.Contains(b.Message, "the kernel's socket table could not be asked") {
			t.Errorf("diagnosis %d: %s", i, b.Message)
		}
	}
	close(block)
	d.queries.apply(100 * time.Millisecond)
	d.Close()
	// The worker skips what is queued and ends.
	timeout := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-d.queries.results:
		case <-timeout:
			t.Fatal("the query worker did not end")
		}
	}
	if n := len(records[*record.BindConflict](*recs)); n != 3 {
		t.Fatalf("%d bind diagnoses once the table answered late, want still 3", n)
	}
}
