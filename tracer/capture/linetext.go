package capture

import (
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// The constant stretches of a transition line between its variable fields,
// made once: one copy per stretch instead of one per field name and value.
// Copies of short pieces were a tenth of a capture's CPU.

const numStates = int(event.BoundInact) + 1

// stateTexts[old][new] is `,"old":"OLD","new":"NEW","prev_state_ns":`.
var stateTexts = func() (t [numStates][numStates]string) {
	for o := range numStates {
		for n := range numStates {
			t[o][n] = `,"old":"` + event.State(o).String() + `","new":"` + event.State(n).String() + `","prev_state_ns":`
		}
	}
	return t
}()

func stateText(old, new event.State) string {
	if int(old) < numStates && int(new) < numStates {
		return stateTexts[old][new]
	}
	return `,"old":"` + old.String() + `","new":"` + new.String() + `","prev_state_ns":`
}

const numCauseKinds = int(timeline.CauseDestroyed) + 1

// causeKindTexts[k] is `","cause_kind":"KIND","owners":`.
var causeKindTexts = func() (t [numCauseKinds]string) {
	for k := range numCauseKinds {
		t[k] = `","cause_kind":"` + timeline.CauseKind(k).String() + `","owners":`
	}
	return t
}()

func causeKindText(k timeline.CauseKind) string {
	if int(k) < numCauseKinds {
		return causeKindTexts[k]
	}
	return `","cause_kind":"` + k.String() + `","owners":`
}
