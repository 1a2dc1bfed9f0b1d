package report

import (
	"slices"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// evKind says what a storyEvent tells.
type evKind uint8

const (
	evTransition evKind = iota // a state change
	evCall                     // a syscall that changed no state
	evSnapshot                 // a state seen in the socket table
	evExit                     // an owner exited
	evEnd                      // the capture ended with the socket open
	evOmitted                  // steps not kept
	evWindow                   // the state the time window opens on
)

// storyEvent is one line of a socket's story, as both renderings tell it.
type storyEvent struct {
	mono uint64
	kind evKind
	step *Step // transition, call, snapshot
	// durNs is the time spent in the state a transition entered; -1 when
	// unknown (a gap or omitted steps follow, or the socket closed). toEnd:
	// it was still in it when the capture ended.
	durNs int64
	toEnd bool
	// ranIn names the task a transition ran in when that was not an owner.
	ranIn string
	// ownersChanged: the step's owners differ from the previous step's.
	ownersChanged bool
	count         int         // evOmitted
	task          string      // evExit
	state         event.State // evEnd, evWindow
	timewait      bool        // evEnd, evWindow: in a timewait socket
	since         uint64      // evWindow
}

// story tells socket s inside the window of sel, in time order.
func story(c *Capture, sel *Selection, s *Socket) []storyEvent {
	steps := s.Steps()
	var out []storyEvent

	// The state the window opens on, when the socket had a past.
	if sel.Windowed() && s.FirstNs < sel.FromNs && s.EndNs() >= sel.FromNs {
		var st event.State
		var since uint64
		for _, x := range steps {
			if x.MonoNs >= sel.FromNs {
				break
			}
			if x.Kind == StepTransition || (x.Kind == StepSnapshot && x.New != 0) {
				st, since = x.New, x.MonoNs
			}
		}
		if st != 0 {
			out = append(out, storyEvent{mono: sel.FromNs, kind: evWindow, state: st, since: since,
				timewait: s.ClosedNs != 0 && s.ClosedNs < sel.FromNs})
		}
	}

	var prevOwners []record.Owner
	for i := range steps {
		x := &steps[i]
		if s.Omitted > 0 && i == s.omitAt && sel.In(x.MonoNs) {
			out = append(out, storyEvent{mono: x.MonoNs, kind: evOmitted, count: s.Omitted})
		}
		// Snapshots of timewait sockets have no owners by nature: that is
		// no news.
		changed := !slices.Equal(prevOwners, x.Owners) && !(x.Kind == StepSnapshot && len(x.Owners) == 0)
		if x.Kind != StepSnapshot || len(x.Owners) > 0 {
			prevOwners = x.Owners
		}
		if !sel.In(x.MonoNs) {
			continue
		}
		ev := storyEvent{mono: x.MonoNs, step: x, durNs: -1, ownersChanged: changed}
		switch x.Kind {
		case StepTransition:
			ev.kind = evTransition
			ev.durNs, ev.toEnd = stateDuration(c, s, steps, i)
			if (x.PID != 0 || x.Comm != "") &&
				!slices.ContainsFunc(x.Owners, func(o record.Owner) bool { return o.PID == x.PID }) {
				ev.ranIn = task(x.PID, x.Comm)
			}
		case StepCall:
			ev.kind = evCall
		case StepSnapshot:
			ev.kind = evSnapshot
		}
		out = append(out, ev)
	}
	if s.Omitted > 0 && s.omitAt >= len(steps) && sel.In(s.LastNs) {
		out = append(out, storyEvent{mono: s.LastNs, kind: evOmitted, count: s.Omitted})
	}

	// The exits of its owners while it lived: they close what they hold.
	var pids []uint32
	for _, x := range steps {
		for _, o := range x.Owners {
			if !slices.Contains(pids, o.PID) {
				pids = append(pids, o.PID)
			}
		}
	}
	for _, pid := range pids {
		for _, e := range c.ExitsOf(pid) {
			if e.MonoNs >= s.FirstNs && e.MonoNs <= s.liveEndNs() && sel.In(e.MonoNs) {
				out = append(out, storyEvent{mono: e.MonoNs, kind: evExit, task: task(pid, e.Comm)})
			}
		}
	}

	if s.State != event.Close && sel.In(c.EndNs) && c.EndNs >= s.LastNs {
		out = append(out, storyEvent{mono: c.EndNs, kind: evEnd, state: s.State, timewait: s.ClosedNs != 0})
	}
	slices.SortStableFunc(out, func(a, b storyEvent) int {
		switch {
		case a.mono < b.mono:
			return -1
		case a.mono > b.mono:
			return 1
		}
		return 0
	})
	return out
}

// stateDuration is how long the socket stayed in the state steps[i]
// entered: -1 when unknown; toEnd when it was still in it at the end.
func stateDuration(c *Capture, s *Socket, steps []Step, i int) (ns int64, toEnd bool) {
	x := &steps[i]
	for j := i + 1; j < len(steps); j++ {
		n := &steps[j]
		if n.Kind != StepTransition {
			continue
		}
		if n.Old != x.New || n.Gap || (s.Omitted > 0 && i < s.omitAt && j >= s.omitAt) {
			return -1, false // what came between was lost
		}
		if n.PrevStateNs >= 0 {
			return n.PrevStateNs, false
		}
		return int64(n.MonoNs - x.MonoNs), false
	}
	if x.New == event.Close || s.ClosedNs != 0 || (s.Omitted > 0 && i < s.omitAt) {
		return -1, false
	}
	return int64(c.EndNs - x.MonoNs), true
}
