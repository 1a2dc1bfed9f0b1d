package capture

import (
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Begin writes the header.
func (w *Writer) Begin(h *record.Header) error { return w.Write(h) }

// Transition writes a transition.
func (w *Writer) Transition(t *timeline.Transition, wallNs int64) error {
	return w.WriteTransition(t, wallNs)
}

// CallEvent writes a call record straight from its event (tracer.CallSink).
func (w *Writer) CallEvent(e *event.Event, wallNs int64, owners []timeline.Owner) error {
	return w.WriteCall(e, wallNs, owners)
}

// Record writes any other record.
func (w *Writer) Record(rec any) error { return w.Write(rec) }

// End writes the summary, the trailer that marks a complete capture, and
// flushes and syncs.
func (w *Writer) End(s *record.Summary) error {
	if err := w.Write(s); err != nil {
		return err
	}
	return w.Close()
}
