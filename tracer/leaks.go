// The leak lifecycle: a socket stuck in CLOSE_WAIT, confirmed in the
// kernel's socket table, reported, and followed to its end.

package tracer

import (
	"fmt"
	"sort"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

func (d *Diagnoser) endLeak(leak *stuckLeak, tr *timeline.Transition) {
	e := tr.Event
	delete(d.stuck, e.Cookie)
	age := int64(e.MonoNs - d.leakStart(leak))
	after := leakAge(age, leak.atLeast)
	end := leak.rec
	end.Time, end.MonoNs = d.wall(e.MonoNs), e.MonoNs
	end.State = e.New.String()
	end.AgeNs = age
	switch tr.Cause.Kind {
	case timeline.CauseClose, timeline.CauseShutdown, timeline.CauseRSTSent:
		if tr.Cause.Call.Releases() || tr.Cause.Call == event.CallShutdown {
			end.Phase = "closed_late"
			end.Message = fmt.Sprintf("closed late: %s by %s[%d] after %s in CLOSE_WAIT",
				causeText(&tr.Cause), e.CommString(), e.PID, after)
			break
		}
		fallthrough
	case timeline.CauseExit:
		end.Phase = "closed_by_exit"
		end.Message = fmt.Sprintf("closed by the exit of pid %d after %s in CLOSE_WAIT: the program never called close()",
			tr.Cause.PID, after)
	default:
		end.Phase = "closed_late"
		end.Message = fmt.Sprintf("left CLOSE_WAIT (%s) after %s", causeText(&tr.Cause), after)
	}
	d.replaceLeak(end)
	d.emit(&end)
}

// leakStart is when a stuck leak entered CLOSE_WAIT, or for one older than
// the trace with no lower bound from the kernel, when the trace began.
func (d *Diagnoser) leakStart(leak *stuckLeak) uint64 {
	if leak.since == 0 {
		return d.clock.MonoNs
	}
	return leak.since
}

// leakAge formats a leak's age: "12.0s", or "at least 12.0s".
func leakAge(ns int64, atLeast bool) string {
	s := timeline.FmtDur(time.Duration(ns))
	if atLeast {
		return "at least " + s
	}
	return s
}

func (d *Diagnoser) replaceLeak(l record.Leak) {
	for i := range d.leaks {
		if d.leaks[i].Cookie == l.Cookie && d.leaks[i].Since.Equal(l.Since) {
			d.leaks[i] = l
			return
		}
	}
	if len(d.leaks) == maxSummaryLeaks {
		// A service that leaks all day: the summary keeps the latest.
		d.leaks = append(d.leaks[:0], d.leaks[1:]...)
		d.leaksOmitted++
	}
	d.leaks = append(d.leaks, l)
}

// maxSummaryLeaks bounds the leaks the summary repeats (each was reported
// as it happened).
const maxSummaryLeaks = 1000

// LeaksOmitted counts the leaks left out of the summary, the oldest.
func (d *Diagnoser) LeaksOmitted() uint64 { return d.leaksOmitted }

// maxCloseWaits bounds the sockets followed in CLOSE_WAIT at once: far
// more than a host holds but for a leak that big, which the ones followed
// show.
const maxCloseWaits = 1 << 20

// followCloseWait starts the clock of a socket that entered CLOSE_WAIT
// (since 0: before the trace).
func (d *Diagnoser) followCloseWait(cookie, since uint64) {
	if _, ok := d.closeWaits[cookie]; !ok && len(d.closeWaits) >= maxCloseWaits {
		d.closeWaitsFull++
		return
	}
	d.closeWaits[cookie] = since
}

// leakCheckEvery is how often the sockets in CLOSE_WAIT are looked over: a
// tenth of the threshold, so that a leak is reported at most 10% late,
// between every tick and once a second.
func leakCheckEvery(leakAfter time.Duration) time.Duration {
	return min(max(leakAfter/10, DefaultPollInterval), time.Second)
}

// checkLeaks asks about every socket in CLOSE_WAIT for longer than the
// threshold, oldest first. When the query worker is busy, the rest wait
// for the next check.
func (d *Diagnoser) checkLeaks(now uint64) {
	type due struct{ cookie, since uint64 }
	var dues []due
	limit := uint64(d.leakAfter)
	for cookie, since := range d.closeWaits {
		start := since
		if start == 0 {
			// Since before the trace: the kernel's lower bound, if it
			// told one, or the start of the trace.
			start = d.clock.MonoNs
			if s := d.tracker.Socket(cookie); s != nil && s.AtLeastSinceNs != 0 {
				start = s.AtLeastSinceNs
			}
		}
		if now >= start+limit {
			dues = append(dues, due{cookie, since})
		}
	}
	sort.Slice(dues, func(i, j int) bool { return dues[i].since < dues[j].since })
	for _, cw := range dues {
		if d.queries.full() {
			return
		}
		delete(d.closeWaits, cw.cookie)
		s := d.tracker.Socket(cw.cookie)
		if s == nil || s.State != event.CloseWait || s.SinceNs != cw.since || s.LeakReported {
			continue
		}
		s.LeakReported = true // asked: reported once the table answers
		d.confirmLeak(s, now)
	}
}

func causeText(c *timeline.Cause) string { return string(c.AppendText(nil)) }

// confirmLeak asks the socket table whether s is still in CLOSE_WAIT
// before it is called a leak: a false accusation is worse than a late one.
// The table is asked off the reader's path; the answer is applied at a
// later tick, if s is still in the same CLOSE_WAIT by then. When the table
// cannot be asked, the tracker's word stands.
func (d *Diagnoser) confirmLeak(s *timeline.Socket, now uint64) {
	cookie, since, netns, local, remote := s.Cookie, s.SinceNs, s.NetNS, s.Local, s.Remote
	// The answer comes later, and the fallback may run at the end of
	// tracing: by then the socket may have left CLOSE_WAIT, and its struct
	// serve another socket. Both look it up again.
	stillThere := func() *timeline.Socket {
		if s := d.tracker.Socket(cookie); s != nil && s.State == event.CloseWait && s.SinceNs == since {
			return s
		}
		return nil
	}
	query := func() func() {
		ent, err := d.table.Lookup(netns, local, remote)
		return func() {
			s := stillThere()
			if s == nil {
				return // it left CLOSE_WAIT meanwhile: no leak
			}
			if err != nil {
				d.reportStuck(s, now, false)
				return
			}
			if ent == nil || ent.Local != local || ent.Remote != remote ||
				!event.SameSocket(ent.Cookie, cookie) || ent.State != uint8(event.CloseWait) {
				if d.detached {
					return // it may have left CLOSE_WAIT after tracing stopped
				}
				// Its way out of CLOSE_WAIT was lost (the kernel skipped
				// those invocations, and counted them): no leak to report,
				// and nothing more will come for it.
				d.forget(s, now, "no longer in CLOSE_WAIT in the kernel's socket table: the events of its way out were lost")
				return
			}
			d.reportStuck(s, now, true)
		}
	}
	d.queries.post(query, func() {
		if s := stillThere(); s != nil {
			d.reportStuck(s, now, false)
		}
	})
}

func (d *Diagnoser) reportStuck(s *timeline.Socket, now uint64, confirmed bool) {
	h := timeline.Holder{Cookie: s.Cookie, Local: s.Local, Remote: s.Remote, State: s.State, StateNs: -1, Owners: s.Owners}
	start := s.SinceNs
	if start == 0 && s.AtLeastSinceNs != 0 {
		start, h.StateAtLeast = s.AtLeastSinceNs, true
	}
	since := d.clock.Time(start).UTC()
	if start != 0 {
		h.StateNs = int64(now - start)
	} else {
		since = time.Unix(0, d.clock.WallNs).UTC()
	}
	owner := "its owner (unknown)"
	if len(s.Owners) > 0 {
		owner = timeline.OwnersText(s.Owners)
	}
	leak := &record.Leak{
		Type: record.TypeLeak, Time: d.wall(now), MonoNs: now, Phase: "stuck",
		Socket: record.SocketOf(s.Cookie, s.NetNS, s.Family, s.Local, s.Remote),
		State:  s.State.String(), Since: since, AgeNs: h.StateNs, AgeAtLeast: h.StateAtLeast,
		Owners: record.Owners(s.Owners),
		Message: fmt.Sprintf("CLOSE_WAIT leak: %s, held by %s: %s",
			describeAge(&h), owner, h.Why()),
	}
	if !confirmed {
		leak.Unconfirmed = true
		leak.Message += " (not confirmed: the socket table could not be asked)"
	}
	d.stuck[s.Cookie] = &stuckLeak{rec: *leak, since: start, atLeast: h.StateAtLeast}
	d.replaceLeak(*leak)
	d.emit(leak)
}

func describeAge(h *timeline.Holder) string {
	s := h.Local.String() + "→" + h.Remote.String() + " in CLOSE_WAIT"
	if h.StateNs >= 0 {
		return s + " for " + leakAge(h.StateNs, h.StateAtLeast)
	}
	return s + " since before the trace"
}

// End closes the books: leaks still stuck are reported as still open.
func (d *Diagnoser) End(now uint64) {
	// The answers still on their way belong to the capture; those that do
	// not come in time are counted, and their diagnoses made without.
	d.queries.apply(d.endWait)
	d.queries.apply(0) // answers that came with the deadline
	d.queries.abandon()
	for _, leak := range d.stuck {
		end := leak.rec
		end.Phase = "still_open"
		end.Time, end.MonoNs = d.wall(now), now
		end.AgeNs = int64(now - d.leakStart(leak))
		end.Message = fmt.Sprintf("still in CLOSE_WAIT when tracing stopped, after %s: %s never called close()",
			leakAge(end.AgeNs, leak.atLeast), timeline.OwnersText(ownersFromRecord(end.Owners)))
		d.replaceLeak(end)
		d.emit(&end)
	}
}

func ownersFromRecord(in []record.Owner) []timeline.Owner {
	out := make([]timeline.Owner, len(in))
	for i, o := range in {
		out[i] = timeline.Owner{PID: o.PID, FD: o.FD, Container: o.Container}
		copy(out[i].Comm[:], o.Comm)
	}
	return out
}

// Leaks returns every leak's latest record.
func (d *Diagnoser) Leaks() []record.Leak {
	return append([]record.Leak{}, d.leaks...)
}
