// Package metrics turns a tracing session into Prometheus metrics: sockets
// in CLOSE_WAIT by owning program and how old the oldest is, leaks, bind
// conflicts, connect failures, transitions, losses. It is a sink of the
// session (Begin, Transition, Record, Flush, End) and a
// prometheus.Collector.
//
// The hot path (Transition) is an array increment and, for the few
// transitions into or out of CLOSE_WAIT, a map operation under a mutex the
// scrapes share; everything else is computed when Prometheus scrapes.
//
// Cardinality is bounded by design: no port, address or pid labels; the
// (comm, container) pairs are capped at MaxOwners, the rest share the
// label value "other"; the sockets followed in CLOSE_WAIT are capped at
// MaxCloseWait. What the caps turn away is counted in
// tcptrail_dropped_total.
package metrics

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Caps on what the metrics keep.
const (
	// MaxOwners bounds the (comm, container) label pairs.
	MaxOwners = 200
	// MaxCloseWait bounds the CLOSE_WAIT sockets followed at once.
	MaxCloseWait = 1 << 16
	// maxErrnos bounds the errno label values of connect failures.
	maxErrnos = 32
)

// Other is the label value that stands for every value over a cap.
const Other = "other"

const (
	numStates = 16 // event.State fits in 4 bits
	numCauses = 16 // timeline.CauseKind values
)

// owner is a (comm, container) label pair.
type owner struct{ comm, container string }

// closeWait is a socket in CLOSE_WAIT.
type closeWait struct {
	since time.Time
	owner owner
}

// StateCounter reports the live sockets by state (timeline.Tracker's
// LiveByState).
type StateCounter interface {
	LiveByState() [16]int64
}

// Metrics is a session sink and a Prometheus collector.
type Metrics struct {
	now func() time.Time

	// transitions[old][new][cause]: touched by the reader only, read by
	// scrapes, hence atomic.
	transitions [numStates][numStates][numCauses]atomic.Uint64
	binds       atomic.Uint64

	states atomic.Pointer[StateCounter]

	mu         sync.Mutex
	closeWait  map[uint64]closeWait
	owners     map[owner]bool // label pairs given out, at most MaxOwners
	leaks      map[owner]uint64
	connErrnos map[string]uint64
	lost       record.Losses
	dropped    map[string]uint64 // by table: close_wait, owners, errnos

	descs descs
}

type descs struct {
	closeWait, oldest, leaks, sockets, transitions, binds, connFails, lost, dropped, build *prometheus.Desc
}

// New returns empty metrics; version and the Go version label the build
// info.
func New(version string) *Metrics {
	m := &Metrics{
		now:        time.Now,
		closeWait:  make(map[uint64]closeWait),
		owners:     make(map[owner]bool),
		leaks:      make(map[owner]uint64),
		connErrnos: make(map[string]uint64),
		dropped:    make(map[string]uint64),
	}
	d := &m.descs
	d.closeWait = prometheus.NewDesc("tcptrail_close_wait_sockets",
		"Sockets in CLOSE_WAIT now, by owning program: the peer closed and the program has not (yet).",
		[]string{"comm", "container"}, nil)
	d.oldest = prometheus.NewDesc("tcptrail_close_wait_oldest_seconds",
		"How long the program's oldest socket has been in CLOSE_WAIT (for sockets found at start: at least since the peer's last ACK).",
		[]string{"comm", "container"}, nil)
	d.leaks = prometheus.NewDesc("tcptrail_leaks_total",
		"Sockets reported as leaked: in CLOSE_WAIT for longer than --leak-after.",
		[]string{"comm", "container"}, nil)
	d.sockets = prometheus.NewDesc("tcptrail_sockets",
		"Traced sockets by TCP state (timewait sockets are the kernel's, not counted).",
		[]string{"state"}, nil)
	d.transitions = prometheus.NewDesc("tcptrail_transitions_total",
		"TCP state transitions, by old and new state and by cause (connect, close, exit, peer_fin, rst_received, ...).",
		[]string{"old", "new", "cause_kind"}, nil)
	d.binds = prometheus.NewDesc("tcptrail_bind_conflicts_total",
		"bind() or connect() calls that failed with EADDRINUSE or EADDRNOTAVAIL.", nil, nil)
	d.connFails = prometheus.NewDesc("tcptrail_connect_failures_total",
		"Connection attempts that failed, by errno (ECONNREFUSED, ETIMEDOUT, ...).",
		[]string{"errno"}, nil)
	d.lost = prometheus.NewDesc("tcptrail_lost_events_total",
		"Events lost, by reason: ringbuf_full and recursion (the kernel), inflight_full (a syscall not correlated), queue_full (tcptrail's output), gap (transitions missing from a socket's timeline), end_unseen (sockets whose last transitions never arrived).",
		[]string{"reason"}, nil)
	d.dropped = prometheus.NewDesc("tcptrail_dropped_total",
		"What tcptrail did not keep because a bounded table was full, by table: close_wait (sockets not followed), owners (label pairs reported as \"other\"), errnos.",
		[]string{"table"}, nil)
	d.build = prometheus.NewDesc("tcptrail_build_info",
		"Always 1: the tcptrail version and the Go version it was built with.",
		nil, prometheus.Labels{"version": version, "goversion": goVersion()})
	return m
}

// UseStates makes the metrics report the live sockets by state from sc.
func (m *Metrics) UseStates(sc StateCounter) { m.states.Store(&sc) }

// UseTracker reports the live sockets of a session's tracker; the session
// calls it before the first event.
func (m *Metrics) UseTracker(t *timeline.Tracker) {
	t.CountLive()
	m.UseStates(t)
}

// Begin does nothing: the header says nothing the metrics count.
func (m *Metrics) Begin(*record.Header) error { return nil }

// RoutineCalls: accepts, binds and dups are not counted.
func (m *Metrics) RoutineCalls() bool { return false }

// Transition counts a transition and follows sockets into and out of
// CLOSE_WAIT. It does not allocate except to remember a socket entering
// CLOSE_WAIT.
func (m *Metrics) Transition(t *timeline.Transition, wallNs int64) error {
	e := t.Event
	m.transitions[e.Old&15][e.New&15][t.Cause.Kind&15].Add(1)
	left := e.Old == event.CloseWait || (t.Gap && t.ExpectedOld == event.CloseWait)
	if e.New != event.CloseWait && !left {
		return nil
	}
	m.mu.Lock()
	if left {
		delete(m.closeWait, e.Cookie)
	}
	if e.New == event.CloseWait {
		o := owner{comm: "unknown"}
		if len(t.Owners) > 0 {
			o = owner{comm: t.Owners[0].CommString(), container: t.Owners[0].Container}
		}
		m.enterCloseWait(e.Cookie, time.Unix(0, wallNs), o)
	}
	m.mu.Unlock()
	return nil
}

// enterCloseWait remembers a socket in CLOSE_WAIT. m.mu is held.
func (m *Metrics) enterCloseWait(cookie uint64, since time.Time, o owner) {
	if _, ok := m.closeWait[cookie]; !ok && len(m.closeWait) >= MaxCloseWait {
		m.dropped["close_wait"]++
		return
	}
	m.closeWait[cookie] = closeWait{since: since, owner: m.label(o)}
}

// label caps the label pairs: past MaxOwners, new pairs become "other".
// m.mu is held.
func (m *Metrics) label(o owner) owner {
	if m.owners[o] {
		return o
	}
	if len(m.owners) >= MaxOwners {
		m.dropped["owners"]++
		return owner{Other, Other}
	}
	m.owners[o] = true
	return o
}

func ownerOf(owners []record.Owner) owner {
	if len(owners) == 0 {
		return owner{comm: "unknown"}
	}
	return owner{comm: owners[0].Comm, container: owners[0].Container}
}

// Record counts diagnoses and losses, and takes the CLOSE_WAIT sockets
// found at start.
func (m *Metrics) Record(rec any) error {
	switch r := rec.(type) {
	case *record.Snapshot:
		switch {
		case r.Reason == "start" && r.State == event.CloseWait.String():
			// In CLOSE_WAIT since before the trace: since the peer's last
			// ACK at least, where the kernel told, else since now.
			m.mu.Lock()
			m.enterCloseWait(r.Cookie, r.Time.Add(-time.Duration(r.StateNs)), ownerOf(r.Owners))
			m.mu.Unlock()
		case r.Reason == "gone":
			// The kernel no longer has it; the events of its end were lost.
			m.mu.Lock()
			delete(m.closeWait, r.Cookie)
			m.mu.Unlock()
		}
	case *record.Leak:
		m.mu.Lock()
		switch r.Phase {
		case "stuck":
			m.leaks[m.label(ownerOf(r.Owners))]++
		case "closed_late", "closed_by_exit":
			// Its end: in case the transition out of CLOSE_WAIT was lost.
			delete(m.closeWait, r.Cookie)
		}
		m.mu.Unlock()
	case *record.BindConflict:
		m.binds.Add(1)
	case *record.ConnectFail:
		m.mu.Lock()
		errno := r.Errno
		if _, ok := m.connErrnos[errno]; !ok && len(m.connErrnos) >= maxErrnos {
			m.dropped["errnos"]++
			errno = Other
		}
		m.connErrnos[errno]++
		m.mu.Unlock()
	case *record.Lost:
		m.mu.Lock()
		m.lost = r.Losses
		m.mu.Unlock()
	}
	return nil
}

// Flush does nothing: scrapes read the counts as they are.
func (m *Metrics) Flush() error { return nil }

// End takes the final loss counts.
func (m *Metrics) End(s *record.Summary) error {
	m.mu.Lock()
	m.lost = s.Lost
	m.mu.Unlock()
	return nil
}

// Describe sends every metric's description.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	d := &m.descs
	for _, x := range []*prometheus.Desc{d.closeWait, d.oldest, d.leaks, d.sockets, d.transitions, d.binds, d.connFails, d.lost, d.dropped, d.build} {
		ch <- x
	}
}

// Collect computes every metric now.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	d := &m.descs
	now := m.now()
	ch <- prometheus.MustNewConstMetric(d.build, prometheus.GaugeValue, 1)
	ch <- prometheus.MustNewConstMetric(d.binds, prometheus.CounterValue, float64(m.binds.Load()))

	for o := range m.transitions {
		for n := range m.transitions[o] {
			for c := range m.transitions[o][n] {
				if v := m.transitions[o][n][c].Load(); v > 0 {
					ch <- prometheus.MustNewConstMetric(d.transitions, prometheus.CounterValue, float64(v),
						event.State(o).String(), event.State(n).String(), timeline.CauseKind(c).String())
				}
			}
		}
	}
	if sc := m.states.Load(); sc != nil {
		live := (*sc).LiveByState()
		for st, v := range live {
			switch event.State(st) {
			case event.Established, event.SynSent, event.SynRecv, event.FinWait1, event.FinWait2,
				event.CloseWait, event.LastAck, event.Listen, event.Closing:
			default:
				// Not a state a full socket rests in: CLOSE is the end,
				// TIME_WAIT and NEW_SYN_RECV are the kernel's mini sockets.
				continue
			}
			ch <- prometheus.MustNewConstMetric(d.sockets, prometheus.GaugeValue, float64(v), event.State(st).String())
		}
	}

	m.mu.Lock()
	type agg struct {
		n      int
		oldest time.Time
	}
	byOwner := make(map[owner]*agg)
	for _, cw := range m.closeWait {
		a := byOwner[cw.owner]
		if a == nil {
			a = &agg{oldest: cw.since}
			byOwner[cw.owner] = a
		}
		a.n++
		if cw.since.Before(a.oldest) {
			a.oldest = cw.since
		}
	}
	for o, a := range byOwner {
		ch <- prometheus.MustNewConstMetric(d.closeWait, prometheus.GaugeValue, float64(a.n), o.comm, o.container)
		age := now.Sub(a.oldest).Seconds()
		if age < 0 {
			age = 0
		}
		ch <- prometheus.MustNewConstMetric(d.oldest, prometheus.GaugeValue, age, o.comm, o.container)
	}
	for o, n := range m.leaks {
		ch <- prometheus.MustNewConstMetric(d.leaks, prometheus.CounterValue, float64(n), o.comm, o.container)
	}
	for errno, n := range m.connErrnos {
		ch <- prometheus.MustNewConstMetric(d.connFails, prometheus.CounterValue, float64(n), errno)
	}
	lost := m.lost
	for _, table := range []string{"close_wait", "owners", "errnos"} {
		ch <- prometheus.MustNewConstMetric(d.dropped, prometheus.CounterValue, float64(m.dropped[table]), table)
	}
	m.mu.Unlock()

	for _, l := range []struct {
		reason string
		n      uint64
	}{
		{"ringbuf_full", lost.RingbufFull}, {"recursion", lost.RecursionMisses},
		{"inflight_full", lost.InflightFull}, {"queue_full", lost.QueueFull}, {"gap", lost.Gaps},
		{"end_unseen", lost.EndsUnseen},
	} {
		ch <- prometheus.MustNewConstMetric(d.lost, prometheus.CounterValue, float64(l.n), l.reason)
	}
}

func goVersion() string { return runtime.Version() }
