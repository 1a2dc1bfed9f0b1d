package tracer

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// DefaultLeakAfter: a healthy program closes a socket within milliseconds
// of reading EOF. Half a second in CLOSE_WAIT is already a forgotten close,
// and catches the story's client before its retry one second later.
const DefaultLeakAfter = 500 * time.Millisecond

// Diagnoser correlates the events into diagnoses: CLOSE_WAIT leaks, failed
// binds with their holders, failed connects, closes that changed nothing,
// and the timewait phases no tracepoint reports.
type Diagnoser struct {
	tracker   *timeline.Tracker
	clock     Clock
	leakAfter time.Duration
	emit      func(any)
	ports     map[uint16]bool
	pid       uint32

	// closeWaits holds the sockets in CLOSE_WAIT now and since when (0:
	// since before the trace): inserted when one enters, deleted when it
	// leaves or is reported. At most maxCloseWaits; the rest are counted.
	closeWaits     map[uint64]uint64
	closeWaitsFull uint64 // sockets not followed: closeWaits was full
	leaksOmitted   uint64 // leaks dropped from leaks, the oldest first
	nextLeakCheck  uint64
	stuck          map[uint64]*stuckLeak // reported, still in CLOSE_WAIT
	// detached: the programs are gone, so the kernel's tables may have
	// moved on without events; nothing is taken for a lost end from now on.
	detached bool
	leaks    []record.Leak // every leak's last record

	timewait    map[uint64]*twWatch
	twPerNS     map[uint32]int // watched timewait sockets per namespace
	twStartNS   map[uint32]int // of those, found at start
	twByTuple   tupleIndex     // the same sockets by (local, remote)
	lastTWPoll  uint64
	lastNSCheck uint64
	nsChecking  bool // a namespace check is on the query worker
	twUnwatched uint64
	table       SocketTable
	queries     *queries // the slow ones, off the reader's path
	// portTable and owners answer the bind diagnoses' questions (on the
	// query goroutine): a retry loop asks about the same port and holder
	// every time.
	portTable portTable
	owners    *socktable.OwnerCache
	// endWait bounds how long End waits for the answers on their way.
	endWait time.Duration
	sweeper sweeper // forgets sockets whose end was lost

	// finTimeoutMs is net.ipv4.tcp_fin_timeout: how long a FIN_WAIT2
	// timewait socket waits for the peer's FIN (0: unknown).
	finTimeoutMs int64

	// RecordCalls: emit a record for every call, routine ones included
	// (a capture wants them; the live table does not).
	RecordCalls bool
	// EmitCall, when set, receives the routine calls (those that need no
	// note) instead of emit, as events: no record is built for them.
	EmitCall func(e *event.Event, owners []timeline.Owner)
}

// tuple names a connection: namespaces reuse each other's addresses.
type tuple struct {
	netns         uint32
	local, remote netip.AddrPort
}

// twKey is a four-tuple as a map key without pointers (a netip.Addr holds
// one, for its zone), which the map hashes in one pass: the watched
// timewait sockets are looked up by it for several transitions of every
// connection.
type twKey struct {
	netns        uint32
	lport, rport uint16
	laddr, raddr [16]byte
}

func twKeyOf(netns uint32, local, remote netip.AddrPort) twKey {
	return twKey{netns: netns, lport: local.Port(), rport: remote.Port(), laddr: local.Addr().As16(), raddr: remote.Addr().As16()}
}

type stuckLeak struct {
	rec     record.Leak
	since   uint64 // entered CLOSE_WAIT (monotonic); 0: before the trace, when unknown
	atLeast bool   // since is the kernel's lower bound (before the trace)
}

type twWatch struct {
	fromStart     bool // found at start, not handed over during the trace
	netns         uint32
	local, remote netip.AddrPort
	family        uint16
	state         uint8 // the phase it is in
	since         uint64
	timerMs       int64
	nextPoll      uint64 // when to look it up next (monotonic)
	asking        bool   // a lookup is on its way
}

// NewDiagnoser returns a diagnoser that asks table and reports through emit.
func NewDiagnoser(tr *timeline.Tracker, table SocketTable, clock Clock, leakAfter time.Duration, emit func(any)) *Diagnoser {
	if leakAfter <= 0 {
		leakAfter = DefaultLeakAfter
	}
	return &Diagnoser{
		tracker:    tr,
		table:      table,
		queries:    newQueries(),
		owners:     socktable.NewOwnerCache(),
		endWait:    5 * time.Second,
		clock:      clock,
		leakAfter:  leakAfter,
		emit:       emit,
		stuck:      make(map[uint64]*stuckLeak),
		closeWaits: make(map[uint64]uint64),
		timewait:   make(map[uint64]*twWatch),
		twByTuple:  tupleIndex{m: make(map[twKey]uint64)},
		twPerNS:    make(map[uint32]int),
		twStartNS:  make(map[uint32]int),

		finTimeoutMs: readFinTimeoutMs(),
	}
}

// readFinTimeoutMs reads net.ipv4.tcp_fin_timeout (seconds), 0 if it can't.
func readFinTimeoutMs() int64 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/tcp_fin_timeout")
	if err != nil {
		return 0
	}
	sec, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return 0
	}
	return int64(sec) * 1000
}

func (d *Diagnoser) wall(mono uint64) time.Time { return d.clock.Time(mono).UTC() }

func (d *Diagnoser) wanted(s *socktable.Entry) bool {
	if len(d.ports) == 0 {
		return true
	}
	return d.ports[s.Local.Port()] || d.ports[s.Remote.Port()]
}

// Transition follows leaks, timewait hand-overs and failed connects.
func (d *Diagnoser) Transition(tr *timeline.Transition) {
	e := tr.Event
	if e.New == event.CloseWait {
		d.followCloseWait(e.Cookie, e.MonoNs)
	} else if e.Old == event.CloseWait || tr.Gap {
		delete(d.closeWaits, e.Cookie)
	}
	if e.Old == event.CloseWait {
		if leak := d.stuck[e.Cookie]; leak != nil {
			d.endLeak(leak, tr)
		}
	}
	if len(d.timewait) > 0 {
		d.timewaitPeer(e)
	}
	switch tr.Cause.Kind {
	case timeline.CauseTimewait:
		d.handedOver(e)
	case timeline.CauseRefused, timeline.CauseTimeout:
		if e.Old == event.SynSent {
			d.connectFailed(e, record.ErrnoName(e.SkErr), tr.Owners)
		}
	}
}

// Tick reports sockets that have been stuck in CLOSE_WAIT for too long and
// follows the timewait sockets.
func (d *Diagnoser) Tick(now uint64) {
	d.queries.apply(0)
	d.sweep(now)
	if now >= d.nextLeakCheck {
		d.nextLeakCheck = now + uint64(leakCheckEvery(d.leakAfter))
		d.checkLeaks(now)
	}
	if len(d.timewait) > 0 && now-d.lastTWPoll >= uint64(twPollInterval) {
		d.lastTWPoll = now
		d.pollTimewait(now)
	}
	if len(d.twPerNS) > 0 && now-d.lastNSCheck >= uint64(nsCheckInterval) {
		d.lastNSCheck = now
		d.checkNamespaces(now)
	}
}

// QueriesFailed counts the socket-table queries that failed.
// A query not made because too many were waiting counts as failed.
func (d *Diagnoser) QueriesFailed() uint64 { return d.table.Failed() + d.queries.dropped }

// Close stops the query worker. The diagnoser is not used after.
func (d *Diagnoser) Close() { d.queries.close() }

// CloseWaitUnfollowed counts sockets in CLOSE_WAIT not followed for leaks
// (too many at once).
func (d *Diagnoser) CloseWaitUnfollowed() uint64 { return d.closeWaitsFull }

// TimewaitUnwatched counts timewait sockets not followed (watch list full).
func (d *Diagnoser) TimewaitUnwatched() uint64 { return d.twUnwatched }
