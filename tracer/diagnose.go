package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/container"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// DefaultLeakAfter: a healthy program closes a socket within milliseconds
// of reading EOF. Half a second in CLOSE_WAIT is already a forgotten close,
// and catches the story's client before its retry one second later.
const DefaultLeakAfter = 500 * time.Millisecond

// twPollInterval: how often watched timewait sockets are looked up, so that
// their phase changes are timed within 100 ms.
const twPollInterval = 50 * time.Millisecond

// maxTimewaitWatch bounds the timewait sockets followed individually, per
// network namespace: at high churn there are tens of thousands, and each
// costs a netlink query. Sockets that went into timewait during the trace
// come first: those found at start give way to them.
const maxTimewaitWatch = 256

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

	closeWaits []closeWait           // in order of entry
	stuck      map[uint64]*stuckLeak // reported, still in CLOSE_WAIT
	leaks      []capture.Leak        // every leak's last record

	timewait    map[uint64]*twWatch
	twPerNS     map[uint32]int   // watched timewait sockets per namespace
	twByTuple   map[tuple]uint64 // the same sockets by (local, remote)
	lastTWPoll  uint64
	lastNSCheck uint64
	twUnwatched uint64
	table       SocketTable

	// finTimeoutMs is net.ipv4.tcp_fin_timeout: how long a FIN_WAIT2
	// timewait socket waits for the peer's FIN (0: unknown).
	finTimeoutMs int64

	// RecordCalls: emit a record for every call, routine ones included
	// (a capture wants them; the live table does not).
	RecordCalls bool
}

// tuple names a connection: namespaces reuse each other's addresses.
type tuple struct {
	netns         uint32
	local, remote netip.AddrPort
}

type stuckLeak struct {
	rec   capture.Leak
	since uint64 // entered CLOSE_WAIT (monotonic); 0: before the trace
}

type closeWait struct {
	cookie uint64
	since  uint64
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
}

// NewDiagnoser returns a diagnoser that asks table and reports through emit.
func NewDiagnoser(tr *timeline.Tracker, table SocketTable, clock Clock, leakAfter time.Duration, emit func(any)) *Diagnoser {
	if leakAfter <= 0 {
		leakAfter = DefaultLeakAfter
	}
	return &Diagnoser{
		tracker:   tr,
		table:     table,
		clock:     clock,
		leakAfter: leakAfter,
		emit:      emit,
		stuck:     make(map[uint64]*stuckLeak),
		timewait:  make(map[uint64]*twWatch),
		twByTuple: make(map[tuple]uint64),
		twPerNS:   make(map[uint32]int),

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

// Start records the sockets that exist already, with their owners, so that
// a leak or a port holder older than the trace is still found.
// netns and cgroups narrow it as the kernel side's filters do (0, nil: all).
func (d *Diagnoser) Start(ports []uint16, pid uint32, netns uint32, cgroups []uint64) error {
	d.ports = make(map[uint16]bool, len(ports))
	for _, p := range ports {
		d.ports[p] = true
	}
	d.pid = pid
	namespaces, err := d.table.Namespaces()
	if err != nil {
		return fmt.Errorf("list network namespaces: %w", err)
	}
	if netns != 0 {
		namespaces = []uint32{netns}
	}
	inScope := ownersInCgroups(cgroups)
	var mine []socktable.Entry
	for _, ns := range namespaces {
		found, err := d.table.Dump(ns, d.wanted)
		if err != nil {
			// A namespace that went away meanwhile has no sockets left;
			// the query is counted as failed.
			continue
		}
		mine = append(mine, found...)
	}
	inodes := make(map[uint32]bool)
	for _, e := range mine {
		if e.Inode != 0 {
			inodes[e.Inode] = true
		}
	}
	owners := socktable.OwnersOf(inodes)
	now := MonoNow()
	for _, e := range mine {
		own := d.toOwners(owners[e.Inode])
		if pid != 0 && !ownedBy(own, pid) {
			continue
		}
		if inScope != nil && !inScope(own) {
			continue
		}
		rec := &capture.Snapshot{
			Type: capture.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "start",
			Socket: capture.SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
			State:  event.State(e.State).String(), Owners: capture.Owners(own),
		}
		if e.Inode == 0 {
			// A timewait socket: the kernel holds it, no process does.
			rec.TimerMs = int64(e.Expires)
			d.watchTimewait(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote, e.State, now, int64(e.Expires), true)
		} else {
			s := d.tracker.Add(timeline.Socket{
				Cookie: e.Cookie, NetNS: e.NetNS, Family: e.Family, Local: e.Local, Remote: e.Remote,
				State: event.State(e.State), Owners: own,
			})
			if s.State == event.CloseWait {
				d.closeWaits = append(d.closeWaits, closeWait{e.Cookie, 0})
			}
		}
		d.emit(rec)
	}
	return nil
}

func (d *Diagnoser) toOwners(in []socktable.FDOwner) []timeline.Owner {
	out := make([]timeline.Owner, 0, len(in))
	for _, o := range in {
		var comm [16]byte
		copy(comm[:], o.Comm)
		own := timeline.Owner{PID: o.PID, FD: o.FD, Comm: comm}
		if d.tracker.ContainerOf != nil {
			own.Container = d.tracker.ContainerOf(o.PID)
		}
		out = append(out, own)
	}
	return out
}

// ownersInCgroups says whether one of a socket's owners runs in one of
// cgroups: for sockets older than the trace, whose creator is unknown. Nil
// when cgroups is empty (every socket is in scope).
func ownersInCgroups(cgroups []uint64) func([]timeline.Owner) bool {
	if len(cgroups) == 0 {
		return nil
	}
	want := make(map[uint64]bool, len(cgroups))
	for _, c := range cgroups {
		want[c] = true
	}
	return func(owners []timeline.Owner) bool {
		for _, o := range owners {
			cgs, err := container.ReadProcCgroups(o.PID)
			if err != nil {
				continue
			}
			if path, ok := cgs.Unified(); ok {
				if id, err := container.CgroupID(path); err == nil && want[id] {
					return true
				}
			}
		}
		return false
	}
}

func ownedBy(owners []timeline.Owner, pid uint32) bool {
	for _, o := range owners {
		if o.PID == pid {
			return true
		}
	}
	return false
}

// Transition follows leaks, timewait hand-overs and failed connects.
func (d *Diagnoser) Transition(tr *timeline.Transition) {
	e := tr.Event
	if e.New == event.CloseWait {
		d.closeWaits = append(d.closeWaits, closeWait{e.Cookie, e.MonoNs})
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
			d.connectFailed(e, capture.ErrnoName(e.SkErr), tr.Owners)
		}
	}
}

func (d *Diagnoser) endLeak(leak *stuckLeak, tr *timeline.Transition) {
	e := tr.Event
	delete(d.stuck, e.Cookie)
	since := leak.since
	if since == 0 {
		since = d.clock.MonoNs
	}
	age := int64(e.MonoNs - since)
	end := leak.rec
	end.Time, end.MonoNs = d.wall(e.MonoNs), e.MonoNs
	end.State = e.New.String()
	end.AgeNs = age
	switch tr.Cause.Kind {
	case timeline.CauseClose, timeline.CauseShutdown, timeline.CauseRSTSent:
		if tr.Cause.Call.Releases() || tr.Cause.Call == event.CallShutdown {
			end.Phase = "closed_late"
			end.Message = fmt.Sprintf("closed late: %s by %s[%d] after %s in CLOSE_WAIT",
				causeText(&tr.Cause), e.CommString(), e.PID, timeline.FmtDur(time.Duration(age)))
			break
		}
		fallthrough
	case timeline.CauseExit:
		end.Phase = "closed_by_exit"
		end.Message = fmt.Sprintf("closed by the exit of pid %d after %s in CLOSE_WAIT: the program never called close()",
			tr.Cause.PID, timeline.FmtDur(time.Duration(age)))
	default:
		end.Phase = "closed_late"
		end.Message = fmt.Sprintf("left CLOSE_WAIT (%s) after %s", causeText(&tr.Cause), timeline.FmtDur(time.Duration(age)))
	}
	d.replaceLeak(end)
	d.emit(&end)
}

func (d *Diagnoser) replaceLeak(l capture.Leak) {
	for i := range d.leaks {
		if d.leaks[i].Cookie == l.Cookie && d.leaks[i].Since.Equal(l.Since) {
			d.leaks[i] = l
			return
		}
	}
	d.leaks = append(d.leaks, l)
}

func causeText(c *timeline.Cause) string { return string(c.AppendText(nil)) }

func (d *Diagnoser) connectFailed(e *event.Event, errno string, owners []timeline.Owner) {
	var why string
	switch errno {
	case "ECONNREFUSED":
		why = "the peer answered with RST: nothing listens on that port"
	case "ETIMEDOUT":
		why = "no answer: the peer or the path dropped the packets"
	case "ENETUNREACH", "EHOSTUNREACH":
		why = "no route to the peer"
	default:
		why = "the connection could not be made"
	}
	who := fmt.Sprintf("%s[%d]", e.CommString(), e.PID)
	if len(owners) > 0 {
		who = timeline.OwnersText(owners)
	}
	d.emit(&capture.ConnectFail{
		Type: capture.TypeConnectFail, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs,
		Socket: capture.SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
		Errno:  errno, Owners: capture.Owners(owners),
		Message: fmt.Sprintf("connect to %s failed (%s) in %s: %s", e.Remote, errno, who, why),
	})
}

// Call handles accept, bind, failed calls and closes that changed nothing.
func (d *Diagnoser) Call(e *event.Event) {
	if e.NetNS != 0 {
		// The caller works on a socket of that namespace: a way into it
		// for the socket-table queries.
		d.table.Hint(e.NetNS, e.PID)
	}
	s := d.tracker.Call(e)
	var owners []timeline.Owner
	if s != nil {
		owners = s.Owners
	}
	noChange := (e.Call == event.CallClose || e.Call == event.CallShutdown) && e.Ret == 0
	if !d.RecordCalls && !noChange && e.Ret >= 0 {
		// A routine accept, bind or dup: it updated the owners, and no
		// sink wants the record itself.
		return
	}
	rec := capture.CallRecord(e, d.wall(e.MonoNs), owners)
	if noChange && e.New != 0 && e.New != e.Old {
		// The state changed during the call, yet no transition arrived:
		// the kernel skipped them (and counted them as lost).
		rec.Note = fmt.Sprintf("%s in %s[%d] moved the socket from %v to %v, but those transitions were lost (skipped by the kernel)",
			callText(e), e.CommString(), e.PID, e.Old, e.New)
	} else if noChange {
		verb := callText(e)
		if len(owners) > 0 {
			rec.Note = fmt.Sprintf("%s in %s[%d] changed nothing: the socket is still held by %s",
				verb, e.CommString(), e.PID, timeline.OwnersText(owners))
		} else {
			rec.Note = fmt.Sprintf("%s in %s[%d] changed nothing: another fd or process still holds the socket",
				verb, e.CommString(), e.PID)
		}
	}
	inUse := e.Errno() == int32(unix.EADDRINUSE) || e.Errno() == int32(unix.EADDRNOTAVAIL)
	if inUse && !d.portWanted(e.Local.Port()) && !d.portWanted(e.Remote.Port()) && !d.tracked(e.Local) {
		// The kernel reports every failed bind: this one concerns no
		// traced port and no traced socket.
		return
	}
	d.emit(rec)

	switch e.Errno() {
	case int32(unix.EADDRINUSE), int32(unix.EADDRNOTAVAIL):
		d.bindConflict(e)
	case int32(unix.ECONNREFUSED), int32(unix.ETIMEDOUT), int32(unix.ENETUNREACH), int32(unix.EHOSTUNREACH):
		if e.Call == event.CallConnect {
			d.connectFailed(e, capture.ErrnoName(e.Errno()), owners)
		}
	}
}

func callText(e *event.Event) string {
	return fmt.Sprintf("%s(fd %d)", e.Call, e.FD)
}

func (d *Diagnoser) portWanted(p uint16) bool { return len(d.ports) == 0 || d.ports[p] }

// tracked reports whether a traced socket (live or timewait) holds addr.
func (d *Diagnoser) tracked(addr netip.AddrPort) bool {
	found := false
	d.tracker.Sockets(func(s *timeline.Socket) { found = found || holds(s.Local, addr) })
	for _, w := range d.timewait {
		found = found || holds(w.local, addr)
	}
	return found
}

// bindConflict explains a bind or connect that found its address taken:
// every socket holding that local address, from the tracker, the timewait
// watch and the kernel's socket table (for sockets older than the trace).
func (d *Diagnoser) bindConflict(e *event.Event) {
	want := e.Local
	now := e.MonoNs
	var holders []timeline.Holder
	seen := make(map[uint64]bool)
	seenTuple := make(map[tuple]bool) // sockets known by a synthetic id
	d.tracker.Sockets(func(s *timeline.Socket) {
		if s.NetNS != e.NetNS || !holds(s.Local, want) {
			return
		}
		h := timeline.Holder{Cookie: s.Cookie, Local: s.Local, Remote: s.Remote, State: s.State,
			StateNs: -1, Owners: append([]timeline.Owner(nil), s.Owners...)}
		if s.SinceNs != 0 && now >= s.SinceNs {
			h.StateNs = int64(now - s.SinceNs)
		}
		seen[s.Cookie] = true
		if s.Cookie&event.SyntheticID != 0 {
			seenTuple[tuple{s.NetNS, s.Local, s.Remote}] = true
		}
		holders = append(holders, h)
	})
	entries, _ := d.table.Dump(e.NetNS, func(t *socktable.Entry) bool {
		return !seen[t.Cookie] && !seenTuple[tuple{e.NetNS, t.Local, t.Remote}] && holds(t.Local, want)
	})
	var unknown []socktable.Entry
	inodes := make(map[uint32]bool)
	for _, t := range entries {
		if t.Inode != 0 {
			inodes[t.Inode] = true
		}
		unknown = append(unknown, t)
	}
	owners := socktable.OwnersOf(inodes)
	for _, t := range unknown {
		h := timeline.Holder{Cookie: t.Cookie, Local: t.Local, Remote: t.Remote, State: event.State(t.State),
			StateNs: -1, Owners: d.toOwners(owners[t.Inode])}
		if t.Inode == 0 {
			h.Timewait = true
			h.TimerMs = int64(t.Expires)
			if w := d.timewait[t.Cookie]; w != nil && w.since != 0 && now >= w.since {
				h.StateNs = int64(now - w.since)
			}
		}
		holders = append(holders, h)
	}

	who := fmt.Sprintf("%s[%d]", e.CommString(), e.PID)
	msg := fmt.Sprintf("%s %s failed (%s) in %s", e.Call, want, capture.ErrnoName(e.Errno()), who)
	rec := &capture.BindConflict{
		Type: capture.TypeBindConflict, Time: d.wall(now), MonoNs: now,
		Call: e.Call.String(), Errno: capture.ErrnoName(e.Errno()), PID: e.PID, Comm: e.CommString(), FD: e.FD,
		Laddr: want.Addr().String(), Lport: want.Port(), Holders: []capture.Holder{},
	}
	for i, h := range holders {
		if i == 0 {
			msg += ": held by "
		} else {
			msg += "; and by "
		}
		msg += h.Describe()
		rec.Holders = append(rec.Holders, capture.Holder{
			Socket: capture.SocketOf(h.Cookie, e.NetNS, e.Family, h.Local, h.Remote),
			State:  h.State.String(), StateNs: h.StateNs, Owners: capture.Owners(h.Owners), Why: h.Why(),
		})
	}
	if len(holders) == 0 {
		if e.Errno() == int32(unix.EADDRNOTAVAIL) {
			msg += ": the address is not local, or no ephemeral port is free"
		} else {
			msg += ": no socket holding it was found (it may have gone in the meantime)"
		}
	}
	rec.Message = msg
	d.emit(rec)
}

// holds reports whether a socket bound to have blocks a bind to want: same
// port, and same address or either one the wildcard.
func holds(have, want netip.AddrPort) bool {
	if have.Port() != want.Port() || have.Port() == 0 {
		return false
	}
	a, b := have.Addr(), want.Addr()
	return a == b || a.IsUnspecified() || b.IsUnspecified() || !a.IsValid() || !b.IsValid()
}

// Exit records the exit of a process that owns traced sockets.
func (d *Diagnoser) Exit(e *event.Event) {
	if !d.tracker.Owns(e.PID) {
		return
	}
	d.emit(&capture.Exit{Type: capture.TypeExit, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, PID: e.PID, Comm: e.CommString()})
	d.tracker.Exit(e)
}

// Fork records a fork of a process that owns traced sockets.
func (d *Diagnoser) Fork(e *event.Event) {
	if !d.tracker.Owns(e.PID) {
		return
	}
	d.emit(&capture.Fork{Type: capture.TypeFork, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, PID: e.PID, Comm: e.CommString(), Child: e.Arg})
	d.tracker.Fork(e)
}

// Tick reports sockets that have been stuck in CLOSE_WAIT for too long and
// follows the timewait sockets.
func (d *Diagnoser) Tick(now uint64) {
	limit := uint64(d.leakAfter)
	for len(d.closeWaits) > 0 {
		cw := d.closeWaits[0]
		start := cw.since
		if start == 0 {
			start = d.clock.MonoNs // since before the trace
		}
		if now < start+limit {
			break
		}
		d.closeWaits = d.closeWaits[1:]
		s := d.tracker.Socket(cw.cookie)
		if s == nil || s.State != event.CloseWait || s.SinceNs != cw.since || s.LeakReported {
			continue
		}
		still, confirmed := d.stillCloseWait(s)
		if !still {
			// Its way out of CLOSE_WAIT was lost (the kernel skipped those
			// invocations, and counted them): no leak to report, and
			// nothing more will come for it.
			d.tracker.Forget(s.Cookie)
			continue
		}
		s.LeakReported = true
		d.reportStuck(s, now, confirmed)
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

// stillCloseWait asks the socket table whether s is still in CLOSE_WAIT
// before it is called a leak: a false accusation is worse than a late one.
// When the table cannot be asked, the tracker's word stands.
func (d *Diagnoser) stillCloseWait(s *timeline.Socket) (still, confirmed bool) {
	ent, err := d.table.Lookup(s.NetNS, s.Local, s.Remote)
	if err != nil {
		return true, false
	}
	return ent != nil && ent.Local == s.Local && ent.Remote == s.Remote &&
		event.SameSocket(ent.Cookie, s.Cookie) && ent.State == uint8(event.CloseWait), true
}

func (d *Diagnoser) reportStuck(s *timeline.Socket, now uint64, confirmed bool) {
	h := timeline.Holder{Cookie: s.Cookie, Local: s.Local, Remote: s.Remote, State: s.State, StateNs: -1, Owners: s.Owners}
	since := d.clock.Time(s.SinceNs).UTC()
	if s.SinceNs != 0 {
		h.StateNs = int64(now - s.SinceNs)
	} else {
		since = time.Unix(0, d.clock.WallNs).UTC()
	}
	owner := "its owner (unknown)"
	if len(s.Owners) > 0 {
		owner = timeline.OwnersText(s.Owners)
	}
	leak := &capture.Leak{
		Type: capture.TypeLeak, Time: d.wall(now), MonoNs: now, Phase: "stuck",
		Socket: capture.SocketOf(s.Cookie, s.NetNS, s.Family, s.Local, s.Remote),
		State:  s.State.String(), Since: since, AgeNs: h.StateNs,
		Owners: capture.Owners(s.Owners),
		Message: fmt.Sprintf("CLOSE_WAIT leak: %s, held by %s: %s",
			describeAge(&h), owner, h.Why()),
	}
	if !confirmed {
		leak.Unconfirmed = true
		leak.Message += " (not confirmed: the socket table could not be asked)"
	}
	d.stuck[s.Cookie] = &stuckLeak{rec: *leak, since: s.SinceNs}
	d.replaceLeak(*leak)
	d.emit(leak)
}

func describeAge(h *timeline.Holder) string {
	s := h.Local.String() + "→" + h.Remote.String() + " in CLOSE_WAIT"
	if h.StateNs >= 0 {
		return s + " for " + timeline.FmtDur(time.Duration(h.StateNs))
	}
	return s + " since before the trace"
}

// watchTimewait adds a timewait socket to the watch; false when the watch
// is full (counted) or already has it.
func (d *Diagnoser) watchTimewait(cookie uint64, netns uint32, family uint16, local, remote netip.AddrPort, state uint8, now uint64, timerMs int64, fromStart bool) bool {
	if _, ok := d.timewait[cookie]; ok {
		return false
	}
	if d.twPerNS[netns] >= maxTimewaitWatch && !d.makeTimewaitRoom(netns, fromStart) {
		d.twUnwatched++
		return false
	}
	w := &twWatch{fromStart: fromStart, netns: netns, local: local, remote: remote, family: family, state: state, since: now, timerMs: timerMs}
	d.schedule(w, now)
	d.timewait[cookie] = w
	d.twByTuple[tuple{netns, local, remote}] = cookie
	d.twPerNS[netns]++
	return true
}

// makeTimewaitRoom lets a socket handed to timewait during the trace take
// the place of one found at start in the same namespace (counted as not
// followed). False when there is none, or the newcomer is from the start.
func (d *Diagnoser) makeTimewaitRoom(netns uint32, fromStart bool) bool {
	if fromStart {
		return false
	}
	for cookie, w := range d.timewait {
		if w.fromStart && w.netns == netns {
			d.unwatch(cookie, w)
			d.twUnwatched++
			return true
		}
	}
	return false
}

func (d *Diagnoser) unwatch(cookie uint64, w *twWatch) {
	delete(d.timewait, cookie)
	if d.twPerNS[w.netns]--; d.twPerNS[w.netns] <= 0 {
		delete(d.twPerNS, w.netns)
	}
	if k := (tuple{w.netns, w.local, w.remote}); d.twByTuple[k] == cookie {
		delete(d.twByTuple, k)
	}
}

// handedOver starts following a socket the kernel just replaced with a
// timewait socket (same cookie). Its first phase is known exactly from the
// transition itself: TIME_WAIT if the peer's FIN had arrived, FIN_WAIT2
// (waiting for it) if not.
func (d *Diagnoser) handedOver(e *event.Event) {
	state, timer := event.FinWait2, d.finTimeoutMs
	if e.PeerFIN() {
		state, timer = event.TimeWait, 60_000
	}
	if !d.watchTimewait(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote, uint8(state), e.MonoNs, timer, false) {
		return
	}
	d.emit(&capture.Snapshot{
		Type: capture.TypeSnapshot, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, Reason: "timewait",
		Socket: capture.SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
		State:  state.String(), TimerMs: timer, Owners: []capture.Owner{},
		Note: "at the hand-over",
	})
}

// timewaitPeer infers timewait phase changes from transitions on this
// host: the peer's FIN (its CLOSE_WAIT→LAST_ACK) moves a FIN_WAIT2 timewait
// socket to TIME_WAIT, and a new handshake on the same four-tuple replaces a
// timewait socket. The lookups confirm these and catch the rest (expiry,
// peers on other hosts), but only every twPollInterval.
func (d *Diagnoser) timewaitPeer(e *event.Event) {
	// The peer's FIN: the watched socket's remote end is this socket.
	if e.New == event.LastAck {
		if cookie, ok := d.twByTuple[tuple{e.NetNS, e.Remote, e.Local}]; ok {
			w := d.timewait[cookie]
			if w.state != uint8(event.TimeWait) {
				w.state, w.since, w.timerMs = uint8(event.TimeWait), e.MonoNs, 60_000
				d.schedule(w, e.MonoNs)
				d.emit(&capture.Snapshot{
					Type: capture.TypeSnapshot, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, Reason: "timewait",
					Socket: capture.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
					State:  event.TimeWait.String(), TimerMs: w.timerMs, Owners: []capture.Owner{},
					Note: "the peer's FIN arrived",
				})
			}
		}
	}
	// A new handshake on the same four-tuple, from either end.
	if e.New == event.SynSent || e.New == event.SynRecv {
		for _, key := range [2]tuple{{e.NetNS, e.Local, e.Remote}, {e.NetNS, e.Remote, e.Local}} {
			cookie, ok := d.twByTuple[key]
			if !ok || cookie == e.Cookie {
				continue
			}
			w := d.timewait[cookie]
			d.unwatch(cookie, w)
			d.emit(&capture.Snapshot{
				Type: capture.TypeSnapshot, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs, Reason: "timewait_gone",
				Socket: capture.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
				State:  event.Close.String(), Owners: []capture.Owner{},
				Note: "a new connection on the same addresses replaced it",
			})
		}
	}
}

// schedule sets when w is looked up next. A TIME_WAIT socket changes only
// when its timer fires, so it is left alone until shortly before; a
// FIN_WAIT2 one may change whenever the peer's FIN arrives.
func (d *Diagnoser) schedule(w *twWatch, now uint64) {
	w.nextPoll = now + uint64(twPollInterval)
	if w.state == uint8(event.TimeWait) && w.timerMs > 200 {
		w.nextPoll = now + uint64(time.Duration(w.timerMs-150)*time.Millisecond)
	}
}

// nsCheckInterval: how often the namespaces of followed timewait sockets
// are checked. A TIME_WAIT socket is looked up only near its expiry; one
// whose namespace was deleted is gone at once, with no event.
const nsCheckInterval = time.Second

// checkNamespaces ends the watch of timewait sockets whose network
// namespace is gone.
func (d *Diagnoser) checkNamespaces(now uint64) {
	for netns := range d.twPerNS {
		if !d.table.Gone(netns) {
			continue
		}
		for cookie, w := range d.timewait {
			if w.netns == netns {
				d.namespaceGone(cookie, w, now)
			}
		}
	}
}

// namespaceGone reports a timewait socket that went with its namespace.
func (d *Diagnoser) namespaceGone(cookie uint64, w *twWatch, now uint64) {
	d.unwatch(cookie, w)
	d.emit(&capture.Snapshot{
		Type: capture.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "timewait_gone",
		Socket: capture.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
		State:  event.Close.String(), Owners: []capture.Owner{},
		Note: "its network namespace was deleted",
	})
}

// pollTimewait looks each watched timewait socket up and reports its phase
// changes (FIN_WAIT2 → TIME_WAIT) and its end.
func (d *Diagnoser) pollTimewait(now uint64) {
	for cookie, w := range d.timewait {
		if now < w.nextPoll {
			continue
		}
		ent, err := d.table.Lookup(w.netns, w.local, w.remote)
		if errors.Is(err, socktable.ErrNamespaceGone) {
			d.namespaceGone(cookie, w, now) // and every socket with it
			continue
		}
		if err != nil {
			w.nextPoll = now + uint64(twPollInterval)
			continue
		}
		// An exact lookup falls back to a listener on the local port when
		// the four-tuple is gone: only the same four-tuple counts.
		if ent != nil && (ent.Local != w.local || ent.Remote != w.remote) {
			ent = nil
		}
		if ent == nil || !event.SameSocket(ent.Cookie, cookie) || ent.Inode != 0 {
			rec := &capture.Snapshot{
				Type: capture.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "timewait_gone",
				Socket: capture.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
				State:  event.Close.String(), Owners: []capture.Owner{},
				Note: "expired",
			}
			if ent != nil {
				rec.Note = "a new connection on the same addresses replaced it"
			}
			d.unwatch(cookie, w)
			d.emit(rec)
			continue
		}
		if ent.State != w.state {
			// A change no transition on this host showed (the peer is
			// elsewhere): dated by the lookup, at most twPollInterval late.
			w.state, w.since, w.timerMs = ent.State, now, int64(ent.Expires)
			d.emit(&capture.Snapshot{
				Type: capture.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "timewait",
				Socket: capture.SocketOf(cookie, w.netns, w.family, w.local, w.remote),
				State:  event.State(ent.State).String(), TimerMs: int64(ent.Expires), Owners: []capture.Owner{},
				Note: "socket table",
			})
		}
		w.timerMs = int64(ent.Expires)
		d.schedule(w, now)
	}
}

// End closes the books: leaks still stuck are reported as still open.
func (d *Diagnoser) End(now uint64) {
	for _, leak := range d.stuck {
		end := leak.rec
		end.Phase = "still_open"
		end.Time, end.MonoNs = d.wall(now), now
		since := leak.since
		if since == 0 {
			since = d.clock.MonoNs
		}
		end.AgeNs = int64(now - since)
		end.Message = fmt.Sprintf("still in CLOSE_WAIT when tracing stopped, after %s: %s never called close()",
			timeline.FmtDur(time.Duration(end.AgeNs)), timeline.OwnersText(ownersFromRecord(end.Owners)))
		d.replaceLeak(end)
		d.emit(&end)
	}
}

// QueriesFailed counts the socket-table queries that failed.
func (d *Diagnoser) QueriesFailed() uint64 { return d.table.Failed() }

// TimewaitUnwatched counts timewait sockets not followed (watch list full).
func (d *Diagnoser) TimewaitUnwatched() uint64 { return d.twUnwatched }

func ownersFromRecord(in []capture.Owner) []timeline.Owner {
	out := make([]timeline.Owner, len(in))
	for i, o := range in {
		out[i] = timeline.Owner{PID: o.PID, FD: o.FD, Container: o.Container}
		copy(out[i].Comm[:], o.Comm)
	}
	return out
}

// Leaks returns every leak's latest record.
func (d *Diagnoser) Leaks() []capture.Leak {
	return append([]capture.Leak{}, d.leaks...)
}
