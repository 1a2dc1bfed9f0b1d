// Calls: owners from accept/bind/dup, closes that changed nothing, and the
// explanation of failed binds and connects.

package tracer

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
	"golang.org/x/sys/unix"
)

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
	d.emit(&record.ConnectFail{
		Type: record.TypeConnectFail, Time: d.wall(e.MonoNs), MonoNs: e.MonoNs,
		Socket: record.SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
		Errno:  errno, Owners: record.Owners(owners),
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
	if !noChange && e.Ret >= 0 {
		// A routine accept, bind or dup: it updated the owners. Its record
		// only if a sink wants it, and without building one where the
		// sinks write it straight from the event.
		switch {
		case !d.RecordCalls:
		case d.EmitCall != nil:
			d.EmitCall(e, owners)
		default:
			d.emit(record.CallRecord(e, d.wall(e.MonoNs), owners))
		}
		return
	}
	rec := record.CallRecord(e, d.wall(e.MonoNs), owners)
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
			d.connectFailed(e, record.ErrnoName(e.Errno()), owners)
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
	d.tracker.OnLocalPort(addr.Port(), func(s *timeline.Socket) { found = found || holds(s.Local, addr) })
	for _, w := range d.timewait {
		found = found || holds(w.local, addr)
	}
	return found
}

// bindConflict explains a bind or connect that found its address taken:
// every socket holding that local address, from the tracker, the timewait
// watch and the kernel's socket table (for sockets older than the trace).
func (d *Diagnoser) bindConflict(e *event.Event) {
	ev := *e // the session reuses e
	want := ev.Local
	now := ev.MonoNs
	var holders []timeline.Holder
	seen := make(map[uint64]bool)
	seenTuple := make(map[tuple]bool) // sockets known by a synthetic id
	d.tracker.OnLocalPort(want.Port(), func(s *timeline.Socket) {
		if s.NetNS != ev.NetNS || !holds(s.Local, want) {
			return
		}
		h := timeline.Holder{Cookie: s.Cookie, Local: s.Local, Remote: s.Remote, State: s.State,
			StateNs: -1, Owners: append([]timeline.Owner(nil), s.Owners...)}
		if s.SinceNs != 0 && now >= s.SinceNs {
			h.StateNs = int64(now - s.SinceNs)
		}
		seen[s.Cookie] = true
		// A socket of the table on the same connected four-tuple is a
		// later one (the table is asked after the failure, when a
		// retry may have connected again from the same port): two
		// sockets never hold one at once. Listeners may share theirs
		// (SO_REUSEPORT). Sockets known by a synthetic id are matched
		// by their four-tuple too.
		if s.Cookie&event.SyntheticID != 0 || s.Remote.Port() != 0 {
			seenTuple[tuple{s.NetNS, s.Local, s.Remote}] = true
		}
		holders = append(holders, h)
	})
	if want.Port() == 0 {
		// No port to look for (bind to port 0 found no ephemeral port
		// free): the table has nothing to say.
		d.explainBind(&ev, holders, nil, nil, true)
		return
	}
	// The kernel's table for the holders tcptrail does not know (older
	// than the trace, not traced): off the reader's path.
	query := func() func() {
		entries, err := d.portTable.sockets(d.table, ev.NetNS, want.Port())
		entries = slices.DeleteFunc(entries, func(t socktable.Entry) bool {
			return seen[t.Cookie] || seenTuple[tuple{ev.NetNS, t.Local, t.Remote}] || !holds(t.Local, want)
		})
		var owners map[uint32][]socktable.FDOwner
		if err == nil {
			inodes := make(map[uint32]bool)
			for _, t := range entries {
				if t.Inode != 0 {
					inodes[t.Inode] = true
				}
			}
			owners = d.owners.Of(inodes)
		}
		return func() { d.explainBind(&ev, holders, entries, owners, err == nil) }
	}
	d.queries.post(query, func() { d.explainBind(&ev, holders, nil, nil, false) })
}

// explainBind reports a failed bind with the holders the tracker knows and
// those the socket table listed (entries, with the owners of their inodes;
// asked is false when the table could not be asked).
func (d *Diagnoser) explainBind(e *event.Event, holders []timeline.Holder, entries []socktable.Entry, owners map[uint32][]socktable.FDOwner, asked bool) {
	want := e.Local
	now := e.MonoNs
	for _, t := range entries {
		h := timeline.Holder{Cookie: t.Cookie, Local: t.Local, Remote: t.Remote, State: event.State(t.State),
			StateNs: -1, Owners: d.toOwners(owners[t.Inode])}
		// Timer 3 is a timewait socket's. An orphan (closed by its
		// process, still sending its FIN) has no inode either, but it is
		// a full socket in its own state.
		if t.Timer == timewaitTimer {
			h.Timewait = true
			h.TimerMs = int64(t.Expires)
			if w := d.timewait[t.Cookie]; w != nil && w.since != 0 && now >= w.since {
				h.StateNs = int64(now - w.since)
			}
		}
		holders = append(holders, h)
	}

	who := fmt.Sprintf("%s[%d]", e.CommString(), e.PID)
	msg := fmt.Sprintf("%s %s failed (%s) in %s", e.Call, want, record.ErrnoName(e.Errno()), who)
	rec := &record.BindConflict{
		Type: record.TypeBindConflict, Time: d.wall(now), MonoNs: now,
		Call: e.Call.String(), Errno: record.ErrnoName(e.Errno()), PID: e.PID, Comm: e.CommString(), FD: e.FD, NetNS: e.NetNS,
		Laddr: want.Addr().String(), Lport: want.Port(), Holders: []record.Holder{},
	}
	for i, h := range holders {
		if i == 0 {
			msg += ": held by "
		} else {
			msg += "; and by "
		}
		msg += h.Describe()
		rec.Holders = append(rec.Holders, record.Holder{
			Socket: record.SocketOf(h.Cookie, e.NetNS, e.Family, h.Local, h.Remote),
			State:  h.State.String(), StateNs: h.StateNs, Owners: record.Owners(h.Owners), Why: h.Why(),
		})
	}
	if len(holders) == 0 {
		if e.Errno() == int32(unix.EADDRNOTAVAIL) {
			msg += ": the address is not local, or no ephemeral port is free"
		} else if asked {
			msg += ": no socket holding it was found (it may have gone in the meantime)"
		} else {
			msg += ": no traced socket holds it, and the kernel's socket table could not be asked"
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
