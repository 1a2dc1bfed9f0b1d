package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

var t0 = time.Date(2026, 12, 2, 3, 0, 0, 0, time.UTC)

func owner16(comm string) [16]byte {
	var c [16]byte
	copy(c[:], comm)
	return c
}

// step applies one transition of socket cookie, owned by comm (in
// container), at t0+at.
func step(m *Metrics, cookie uint64, old, new event.State, kind timeline.CauseKind, comm, container string, at time.Duration) {
	e := &event.Event{Kind: event.KindState, Cookie: cookie, Old: old, New: new}
	tr := &timeline.Transition{Event: e, PrevStateNs: -1, Cause: timeline.Cause{Kind: kind}}
	if comm != "" {
		tr.Owners = []timeline.Owner{{PID: 42, FD: 7, Comm: owner16(comm), Container: container}}
	}
	m.Transition(tr, t0.Add(at).UnixNano())
}

func newAt(now time.Duration) *Metrics {
	m := New("1.2.3")
	m.now = func() time.Time { return t0.Add(now) }
	return m
}

func TestCloseWaitByOwnerAndAge(t *testing.T) {
	m := newAt(10 * time.Minute)
	// Two leaked sockets of one program, one of another in a container,
	// and one that left CLOSE_WAIT (closed late).
	step(m, 1, event.Established, event.CloseWait, timeline.CausePeerFIN, "client", "", 1*time.Minute)
	step(m, 2, event.Established, event.CloseWait, timeline.CausePeerFIN, "client", "", 4*time.Minute)
	step(m, 3, event.Established, event.CloseWait, timeline.CausePeerFIN, "worker", "3f2a9c", 9*time.Minute)
	step(m, 4, event.Established, event.CloseWait, timeline.CausePeerFIN, "client", "", 2*time.Minute)
	step(m, 4, event.CloseWait, event.LastAck, timeline.CauseClose, "client", "", 3*time.Minute)

	want := `
# HELP tcptrail_close_wait_oldest_seconds How long the program's oldest socket has been in CLOSE_WAIT (for sockets found at start: at least since the peer's last ACK).
# TYPE tcptrail_close_wait_oldest_seconds gauge
tcptrail_close_wait_oldest_seconds{comm="client",container=""} 540
tcptrail_close_wait_oldest_seconds{comm="worker",container="3f2a9c"} 60
# HELP tcptrail_close_wait_sockets Sockets in CLOSE_WAIT now, by owning program: the peer closed and the program has not (yet).
# TYPE tcptrail_close_wait_sockets gauge
tcptrail_close_wait_sockets{comm="client",container=""} 2
tcptrail_close_wait_sockets{comm="worker",container="3f2a9c"} 1
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "tcptrail_close_wait_sockets", "tcptrail_close_wait_oldest_seconds"); err != nil {
		t.Fatal(err)
	}

	// A gap out of CLOSE_WAIT (the transition that left it was lost), a
	// leak's end, and the sweep finding it gone all forget the socket.
	e := &event.Event{Kind: event.KindState, Cookie: 1, Old: event.LastAck, New: event.Close}
	m.Transition(&timeline.Transition{Event: e, Gap: true, ExpectedOld: event.CloseWait}, t0.Add(5*time.Minute).UnixNano())
	m.Record(&record.Leak{Type: record.TypeLeak, Phase: "closed_by_exit", Socket: record.Socket{Cookie: 3}})
	m.Record(&record.Snapshot{Type: record.TypeSnapshot, Reason: "gone", Socket: record.Socket{Cookie: 2}})
	if got := gatherGauge(t, m, "tcptrail_close_wait_sockets"); len(got) != 0 {
		t.Fatalf("sockets left in CLOSE_WAIT: %v, want none", got)
	}
}

// Sockets found in CLOSE_WAIT at start are aged from the kernel's lower
// bound where it told one (state_ns), from the start otherwise: a restart
// of tcptrail does not make an old leak young.
func TestStartupCloseWaitCountsFromStart(t *testing.T) {
	m := newAt(90 * time.Second)
	m.Record(&record.Snapshot{Type: record.TypeSnapshot, Reason: "start", Time: t0, State: "CLOSE_WAIT",
		Socket: record.Socket{Cookie: 9}, Owners: []record.Owner{{PID: 1, Comm: "redis-server", FD: 12}}})
	m.Record(&record.Snapshot{Type: record.TypeSnapshot, Reason: "start", Time: t0, State: "CLOSE_WAIT", StateNs: int64(time.Hour),
		Socket: record.Socket{Cookie: 11}, Owners: []record.Owner{{PID: 2, Comm: "psql", FD: 3}}})
	m.Record(&record.Snapshot{Type: record.TypeSnapshot, Reason: "start", Time: t0, State: "ESTABLISHED",
		Socket: record.Socket{Cookie: 10}})
	want := `
# HELP tcptrail_close_wait_oldest_seconds How long the program's oldest socket has been in CLOSE_WAIT (for sockets found at start: at least since the peer's last ACK).
# TYPE tcptrail_close_wait_oldest_seconds gauge
tcptrail_close_wait_oldest_seconds{comm="psql",container=""} 3690
tcptrail_close_wait_oldest_seconds{comm="redis-server",container=""} 90
`
	if err := testutil.CollectAndCompare(m, strings.NewReader(want), "tcptrail_close_wait_oldest_seconds"); err != nil {
		t.Fatal(err)
	}
}

func TestCountersFromRecords(t *testing.T) {
	m := newAt(0)
	step(m, 1, event.Close, event.SynSent, timeline.CauseConnect, "client", "", 0)
	step(m, 1, event.SynSent, event.Close, timeline.CauseRefused, "client", "", 0)
	step(m, 2, event.Close, event.SynSent, timeline.CauseConnect, "client", "", 0)
	m.Record(&record.ConnectFail{Type: record.TypeConnectFail, Errno: "ECONNREFUSED"})
	m.Record(&record.BindConflict{Type: record.TypeBindConflict, Errno: "EADDRINUSE"})
	m.Record(&record.BindConflict{Type: record.TypeBindConflict, Errno: "EADDRINUSE"})
	m.Record(&record.Leak{Type: record.TypeLeak, Phase: "stuck", Owners: []record.Owner{{Comm: "client", Container: "ab12"}}})
	m.Record(&record.Lost{Type: record.TypeLost, Losses: record.Losses{RingbufFull: 5, Gaps: 2}})
	m.Record(&record.Lost{Type: record.TypeLost, Losses: record.Losses{RingbufFull: 7, Gaps: 2}})

	for _, c := range []struct {
		name, want string
	}{
		{"tcptrail_transitions_total", `
# HELP tcptrail_transitions_total TCP state transitions, by old and new state and by cause (connect, close, exit, peer_fin, rst_received, ...).
# TYPE tcptrail_transitions_total counter
tcptrail_transitions_total{cause_kind="connect",new="SYN_SENT",old="CLOSE"} 2
tcptrail_transitions_total{cause_kind="refused",new="CLOSE",old="SYN_SENT"} 1
`},
		{"tcptrail_connect_failures_total", `
# HELP tcptrail_connect_failures_total Connection attempts that failed, by errno (ECONNREFUSED, ETIMEDOUT, ...).
# TYPE tcptrail_connect_failures_total counter
tcptrail_connect_failures_total{errno="ECONNREFUSED"} 1
`},
		{"tcptrail_bind_conflicts_total", `
# HELP tcptrail_bind_conflicts_total bind() or connect() calls that failed with EADDRINUSE or EADDRNOTAVAIL.
# TYPE tcptrail_bind_conflicts_total counter
tcptrail_bind_conflicts_total 2
`},
		{"tcptrail_leaks_total", `
# HELP tcptrail_leaks_total Sockets reported as leaked: in CLOSE_WAIT for longer than --leak-after.
# TYPE tcptrail_leaks_total counter
tcptrail_leaks_total{comm="client",container="ab12"} 1
`},
	} {
		if err := testutil.CollectAndCompare(m, strings.NewReader(c.want), c.name); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	// Losses are totals since the start: the last record wins.
	lost := gatherGauge(t, m, "tcptrail_lost_events_total")
	if lost["ringbuf_full"] != 7 || lost["gap"] != 2 || lost["recursion"] != 0 {
		t.Errorf("lost events: %v, want ringbuf_full 7, gap 2, recursion 0", lost)
	}
}

// The label pairs are capped: programs past the cap share "other", and
// each one turned away is counted.
func TestOwnerLabelsCapped(t *testing.T) {
	m := newAt(time.Minute)
	for i := 0; i < MaxOwners+5; i++ {
		step(m, uint64(i+1), event.Established, event.CloseWait, timeline.CausePeerFIN, fmt.Sprintf("prog%d", i), "", 0)
	}
	if n := testutil.CollectAndCount(m, "tcptrail_close_wait_sockets"); n != MaxOwners+1 {
		t.Errorf("%d series, want %d (the cap plus other)", n, MaxOwners+1)
	}
	got := gatherGauge(t, m, "tcptrail_close_wait_sockets")
	if got["other/other"] != 5 || got["prog0/"] != 1 {
		t.Errorf("other/other = %v, prog0 = %v; want 5 and 1", got["other/other"], got["prog0/"])
	}
	if d := gatherGauge(t, m, "tcptrail_dropped_total")["owners"]; d != 5 {
		t.Errorf("dropped owners = %v, want 5", d)
	}
}

// gatherGauge returns a gauge's or counter's values keyed by its label values joined
// with "/".
func gatherGauge(t *testing.T, m *Metrics, name string) map[string]float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, mt := range mf.GetMetric() {
			var key []string
			for _, l := range mt.GetLabel() {
				key = append(key, l.GetValue())
			}
			v := mt.GetGauge().GetValue()
			if mt.GetCounter() != nil {
				v = mt.GetCounter().GetValue()
			}
			out[strings.Join(key, "/")] = v
		}
	}
	return out
}

type fixedStates [16]int64

func (f fixedStates) LiveByState() [16]int64 { return f }

func TestSocketsByState(t *testing.T) {
	m := newAt(0)
	var st fixedStates
	st[event.Established] = 12
	st[event.Listen] = 2
	st[event.CloseWait] = 1
	m.UseStates(st)
	got := gatherGauge(t, m, "tcptrail_sockets")
	if got["ESTABLISHED"] != 12 || got["LISTEN"] != 2 || got["CLOSE_WAIT"] != 1 || got["SYN_SENT"] != 0 {
		t.Errorf("sockets by state: %v", got)
	}
	if _, ok := got["CLOSE"]; ok {
		t.Errorf("CLOSE is not a state a live socket is in: %v", got)
	}
}

// The metrics pass the registry's own consistency checks (names, help,
// label sets) with every kind of series present.
func TestPedanticRegistry(t *testing.T) {
	m := newAt(time.Minute)
	m.UseStates(fixedStates{})
	step(m, 1, event.Established, event.CloseWait, timeline.CausePeerFIN, "client", "", 0)
	m.Record(&record.Leak{Type: record.TypeLeak, Phase: "stuck"})
	m.Record(&record.ConnectFail{Type: record.TypeConnectFail, Errno: "ETIMEDOUT"})
	if problems, err := testutil.CollectAndLint(m); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", err, problems)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	if _, err := reg.Gather(); err != nil {
		t.Fatal(err)
	}
}

// Transitions that neither enter nor leave CLOSE_WAIT cost no allocation.
func BenchmarkTransition(b *testing.B) {
	m := newAt(0)
	e := &event.Event{Kind: event.KindState, Cookie: 1, Old: event.SynSent, New: event.Established}
	tr := &timeline.Transition{Event: e, Cause: timeline.Cause{Kind: timeline.CauseHandshake}}
	b.ReportAllocs()
	for b.Loop() {
		m.Transition(tr, 0)
	}
}
