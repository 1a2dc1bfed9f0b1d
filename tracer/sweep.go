package tracer

import (
	"fmt"
	"slices"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"

	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// A socket whose last transitions were lost (counted losses) would stay in
// the tracker for as long as tcptrail runs: days, for watch. The sweep
// checks the sockets it has not heard of for a while against the kernel's
// socket table, off the reader's path, and forgets those the kernel no
// longer has.
const (
	sweepInterval = time.Minute
	// sweepQuiet: only sockets unchanged this long are checked; a busy
	// socket proves itself alive with its events.
	sweepQuiet = time.Minute
)

// timewaitTimer is sock_diag's idiag_timer of a timewait socket.
const timewaitTimer = 3

// sweeper is the sweep's state in the diagnoser.
type sweeper struct {
	last uint64 // when the last sweep was posted (monotonic)
	busy bool   // a sweep is on the query worker
	// Forgotten counts the sockets the kernel no longer had, or had in
	// another state: their last transitions were lost (ends unseen).
	Forgotten uint64
	// final is the last sweep's answer, kept until the ring buffer is
	// drained (see StartFinalSweep); finalDone tells it arrived.
	final     map[uint32][]sweepCandidate
	finalDone bool
}

// sweepCandidate is a socket to check, as it was when the sweep began.
type sweepCandidate struct {
	cookie uint64
	since  uint64
	tuple  tuple
	state  event.State
	// kernelState, for a socket the final sweep found in another state:
	// that state (0: not found).
	kernelState event.State
}

func candidateOf(s *timeline.Socket) sweepCandidate {
	return sweepCandidate{cookie: s.Cookie, since: s.SinceNs, tuple: tuple{s.NetNS, s.Local, s.Remote}, state: s.State}
}

// StartFinalSweep checks every socket tcptrail believes open against the
// kernel's socket tables, on the query worker, at the end of a session and
// while the programs are still attached. The kernel can run a state change
// without running the programs and without counting it (seen under heavy
// loopback churn: a few per million, confirmed by perf counting the same
// tracepoint); a socket whose last transitions were lost so would end the
// capture in FIN_WAIT1, say, as if still there. It reports false while
// the query queue is full (try again: the reader drains it). The reader
// keeps reading until FinalSweepDone, then detaches, drains, and calls
// EndFinalSweep. No periodic sweep starts after it: one answered after the
// detach could take a socket that closed since for one whose end was lost.
func (d *Diagnoser) StartFinalSweep() bool {
	if d.queries.full() {
		return false
	}
	d.sweeper.last = MonoNow()
	byNS := make(map[uint32][]sweepCandidate)
	d.tracker.Sockets(func(s *timeline.Socket) {
		byNS[s.NetNS] = append(byNS[s.NetNS], candidateOf(s))
	})
	if len(byNS) == 0 {
		d.sweeper.finalDone = true
		return true
	}
	table := d.table
	return d.queries.post(func() func() {
		gone := make(map[uint32][]sweepCandidate)
		for netns, cands := range byNS {
			if missing, ok := missingFrom(table, netns, cands, true); ok {
				gone[netns] = missing
			}
		}
		return func() { d.sweeper.final, d.sweeper.finalDone = gone, true }
	}, nil)
}

// FinalSweepDone applies the answers that arrived and reports whether the
// final sweep's is among them.
func (d *Diagnoser) FinalSweepDone() bool {
	d.queries.apply(0)
	return d.sweeper.finalDone
}

// EndFinalSweep forgets, and counts as ends unseen, the sockets the final
// sweep did not find in the kernel, unless an event about them came since:
// called after the drain, so that a transition already in the ring buffer
// when the tables were read is not taken for a lost one. An answer that
// comes later than that is never used: its tables may have been read after
// the detach.
func (d *Diagnoser) EndFinalSweep() {
	d.detached = true
	if d.sweeper.final != nil {
		d.forgetGone(d.sweeper.final)
		d.sweeper.final = nil
	}
}

// EndsUnseen counts the sockets the kernel closed, or moved on, without
// tcptrail seeing their last transitions.
func (d *Diagnoser) EndsUnseen() uint64 { return d.sweeper.Forgotten }

// sweep posts a check of the quiet sockets, at most once a minute.
func (d *Diagnoser) sweep(now uint64) {
	// A full queue: another time (a post would fail, and count as a failed
	// query).
	if d.sweeper.busy || now-d.sweeper.last < uint64(sweepInterval) || len(d.queries.jobs) == cap(d.queries.jobs) {
		return
	}
	d.sweeper.last = now
	byNS := make(map[uint32][]sweepCandidate)
	d.tracker.Sockets(func(s *timeline.Socket) {
		if s.SinceNs != 0 && now-s.SinceNs < uint64(sweepQuiet) {
			return
		}
		byNS[s.NetNS] = append(byNS[s.NetNS], candidateOf(s))
	})
	if len(byNS) == 0 {
		return
	}
	table := d.table
	d.sweeper.busy = d.queries.post(func() func() {
		gone := make(map[uint32][]sweepCandidate)
		for netns, cands := range byNS {
			if missing, ok := missingFrom(table, netns, cands, false); ok {
				gone[netns] = missing
			}
		}
		return func() {
			d.sweeper.busy = false
			if !d.detached { // see EndFinalSweep
				d.forgetGone(gone)
			}
		}
	}, nil)
}

// maxSweepPorts is how many local ports a sweep has the kernel filter by
// (see socktable.Ports).
const maxSweepPorts = 64

// missingFrom returns the candidates the kernel's table of netns does not
// hold, matched by cookie or, for made-up ids, by addresses; with movedOn,
// also those it holds in another state than the candidate's (a timewait
// socket, for one: its full socket's end was never seen). Only the final
// sweep asks that: it decides after the ring buffer was drained, while the
// periodic sweep decides while a socket's newest event may still be in it.
// ok is false when the table could not be asked: then nothing is
// forgotten, unless the namespace itself is gone.
func missingFrom(table SocketTable, netns uint32, cands []sweepCandidate, movedOn bool) (missing []sweepCandidate, ok bool) {
	cookies := make(map[uint64]event.State, len(cands))
	tuples := make(map[tuple]bool, len(cands))
	for _, c := range cands {
		cookies[c.cookie] = c.state
		tuples[c.tuple] = true
	}
	seenCookie := make(map[uint64]bool)
	seenAs := make(map[uint64]event.State)
	seenTuple := make(map[tuple]bool)
	// A busy port's table is mostly TIME_WAIT sockets, which no candidate
	// is in (no transition goes there): the kernel leaves them out of the
	// dump, and a candidate that moved on to TIME_WAIT is asked for by
	// name below. Made-up ids are matched by addresses, which a TIME_WAIT
	// socket may still hold: those sweeps take every state.
	states := uint32(socktable.AllStates &^ (1 << event.TimeWait))
	if slices.ContainsFunc(cands, func(c sweepCandidate) bool { return c.cookie&event.SyntheticID != 0 }) {
		states = socktable.AllStates
	}
	// The kernel sends only the candidates' local ports: the rest of a
	// busy host's table costs nothing. A candidate whose local port is
	// not known (a connect's SYN_SENT comes before the port is chosen),
	// or too many ports, and the whole table is read.
	var ports []uint16
	for _, c := range cands {
		p := c.tuple.local.Port()
		if p == 0 {
			ports = nil
			break
		}
		if !slices.Contains(ports, p) {
			if len(ports) == maxSweepPorts {
				ports = nil
				break
			}
			ports = append(ports, p)
		}
	}
	_, err := table.Dump(netns, states, socktable.Ports{List: ports, LocalOnly: true}, func(e *socktable.Entry) bool {
		if st, ok := cookies[e.Cookie]; ok {
			// A timewait socket (timer 3) stands in for a full socket
			// that is gone, even in its FIN_WAIT2 phase.
			if !movedOn || (uint8(st) == e.State && e.Timer != timewaitTimer) {
				seenCookie[e.Cookie] = true
			} else {
				seenAs[e.Cookie] = event.State(e.State)
			}
		}
		if t := (tuple{netns, e.Local, e.Remote}); tuples[t] {
			seenTuple[t] = true
		}
		return false // nothing is kept: the sets say it all
	})
	if err != nil && !table.Gone(netns) {
		return nil, false
	}
	for _, c := range cands {
		// Addresses only stand for a made-up id: on a busy port they are
		// soon another connection's.
		if seenCookie[c.cookie] || (c.cookie&event.SyntheticID != 0 && seenTuple[c.tuple]) {
			continue
		}
		// A dump resumes by position in a hash bucket: under churn it can
		// step over a socket that never moved. Ask for this one by name.
		if c.cookie&event.SyntheticID == 0 {
			e, err := table.Lookup(netns, c.tuple.local, c.tuple.remote)
			if err != nil && !table.Gone(netns) {
				continue // unanswered: not taken for gone
			}
			if err == nil && e != nil && e.Cookie == c.cookie {
				if !movedOn || (uint8(c.state) == e.State && e.Timer != timewaitTimer) {
					continue
				}
				seenAs[c.cookie] = event.State(e.State)
			}
		}
		c.kernelState = seenAs[c.cookie]
		missing = append(missing, c)
	}
	return missing, true
}

// forgetGone forgets the sockets the kernel no longer has, unless they
// changed since the sweep began, and tells the sinks.
func (d *Diagnoser) forgetGone(gone map[uint32][]sweepCandidate) {
	now := MonoNow()
	for _, cands := range gone {
		for _, c := range cands {
			s := d.tracker.Socket(c.cookie)
			if s == nil || s.SinceNs != c.since {
				continue
			}
			note := "no longer in the kernel's socket table: the events of its end were lost"
			if c.kernelState != 0 {
				note = fmt.Sprintf("in %s in the kernel's socket table: the events that took it there were lost", c.kernelState)
			}
			d.forget(s, now, note)
		}
	}
}

// forget drops a socket the kernel's table says is gone or has moved on
// without the events that should have said so, counts it as an end unseen,
// and tells the sinks (the metrics stop counting it).
func (d *Diagnoser) forget(s *timeline.Socket, now uint64, note string) {
	d.sweeper.Forgotten++
	// Not in CLOSE_WAIT any more, as far as anyone can tell: no leak to
	// follow, nor to call still open at the end.
	delete(d.closeWaits, s.Cookie)
	delete(d.stuck, s.Cookie)
	d.emit(&record.Snapshot{
		Type: record.TypeSnapshot, Time: d.wall(now), MonoNs: now, Reason: "gone",
		Socket: record.SocketOf(s.Cookie, s.NetNS, s.Family, s.Local, s.Remote),
		State:  s.State.String(), Owners: record.Owners(s.Owners), Note: note,
	})
	d.tracker.Forget(s.Cookie)
}
