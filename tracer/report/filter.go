package report

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// Filter selects what a report shows. Its zero value selects everything.
// A connection is selected when either end matches; both ends are shown.
type Filter struct {
	Ports     []uint16      // a local or remote port is one of these
	PIDs      []uint32      // one of these owned it or ran one of its transitions
	States    []event.State // it was ever in one of these
	LeaksOnly bool          // it leaked (stuck in CLOSE_WAIT)
	// Since and Until bound a time window: what overlaps it is selected,
	// and diagrams show only the steps inside it.
	Since, Until When
}

// When is a point in a capture: a wall-clock time or an offset from the
// capture's start. The zero When is unset.
type When struct {
	Abs    time.Time
	Offset time.Duration
	set    bool
}

// IsSet reports whether w was set.
func (w When) IsSet() bool { return w.set }

// At is an absolute When.
func At(t time.Time) When { return When{Abs: t, set: true} }

// After is a When offset from the capture's start.
func After(d time.Duration) When { return When{Offset: d, set: true} }

// ParseWhen parses an RFC 3339 time ("2025-11-24T05:30:01Z", fractions
// allowed) or a Go duration from the capture's start ("90s", "+1m30s",
// "1.5s").
func ParseWhen(s string) (When, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return At(t), nil
	}
	d, err := time.ParseDuration(strings.TrimPrefix(s, "+"))
	if err != nil {
		return When{}, fmt.Errorf("%q is neither an RFC 3339 time (2006-01-02T15:04:05Z) nor a duration from the capture's start (90s, 1m30s)", s)
	}
	if d < 0 {
		return When{}, fmt.Errorf("%q: an offset from the capture's start cannot be negative", s)
	}
	return After(d), nil
}

func (w When) String() string {
	switch {
	case !w.set:
		return ""
	case w.Abs.IsZero():
		return "+" + w.Offset.String()
	}
	return w.Abs.Format(time.RFC3339Nano)
}

// mono converts w to the capture's CLOCK_MONOTONIC time.
func (c *Capture) mono(w When) uint64 {
	d := w.Offset
	if !w.Abs.IsZero() {
		d = w.Abs.Sub(c.Header.StartTime)
	}
	if d < 0 {
		return c.Header.StartMonoNs - min(c.Header.StartMonoNs, uint64(-d))
	}
	return c.Header.StartMonoNs + uint64(d)
}

// Selection is what a Filter selected from a Capture.
type Selection struct {
	Filter    Filter
	Conns     []*Conn
	Listeners []*Socket
	Others    []*Socket
	Diagnoses []*Diagnosis
	// FromNs and ToNs are the window in CLOCK_MONOTONIC time; ToNs is the
	// maximum uint64 when the window is open-ended.
	FromNs, ToNs uint64
}

// Windowed reports whether the selection has a time window.
func (s *Selection) Windowed() bool { return s.Filter.Since.set || s.Filter.Until.set }

// In reports whether mono is inside the window.
func (s *Selection) In(mono uint64) bool { return mono >= s.FromNs && mono <= s.ToNs }

// Select applies f.
func (c *Capture) Select(f Filter) (*Selection, error) {
	sel := &Selection{Filter: f, ToNs: ^uint64(0)}
	if f.Since.set {
		sel.FromNs = c.mono(f.Since)
	}
	if f.Until.set {
		sel.ToNs = c.mono(f.Until)
	}
	if sel.FromNs > sel.ToNs {
		return nil, errors.New("the time window is empty: --since is after --until")
	}
	chosen := make(map[*Socket]bool)
	for _, conn := range c.Conns {
		if conn.StartNs > sel.ToNs || conn.EndNs < sel.FromNs {
			continue
		}
		ends := conn.Ends()
		if slices.ContainsFunc(ends, f.matches) {
			sel.Conns = append(sel.Conns, conn)
			for _, s := range ends {
				chosen[s] = true
			}
		}
	}
	pick := func(socks []*Socket) []*Socket {
		var out []*Socket
		for _, s := range socks {
			if !f.LeaksOnly && s.FirstNs <= sel.ToNs && s.EndNs() >= sel.FromNs && f.matches(s) {
				out = append(out, s)
				chosen[s] = true
			}
		}
		return out
	}
	sel.Listeners = pick(c.Listeners)
	sel.Others = pick(c.Others)
	for _, d := range c.Diagnoses {
		if sel.wants(d, chosen) {
			sel.Diagnoses = append(sel.Diagnoses, d)
		}
	}
	return sel, nil
}

// matches applies the socket-level criteria.
func (f *Filter) matches(s *Socket) bool {
	if len(f.Ports) > 0 && !slices.Contains(f.Ports, s.Local.Port()) && !slices.Contains(f.Ports, s.Remote.Port()) {
		return false
	}
	if len(f.PIDs) > 0 && !slices.ContainsFunc(f.PIDs, s.Involves) {
		return false
	}
	if len(f.States) > 0 && !slices.ContainsFunc(f.States, s.EverIn) {
		return false
	}
	if f.LeaksOnly && !s.Leaked() {
		return false
	}
	return true
}

// wants selects a diagnosis: one about a selected socket, or one that
// names no traced socket but matches the filter by itself.
func (sel *Selection) wants(d *Diagnosis, chosen map[*Socket]bool) bool {
	f := &sel.Filter
	if f.LeaksOnly && d.Kind != record.TypeLeak && !slices.ContainsFunc(d.Sockets, (*Socket).Leaked) {
		return false
	}
	last := d.MonoNs
	if len(d.Leak) > 0 {
		last = d.Leak[len(d.Leak)-1].MonoNs
	}
	if d.MonoNs > sel.ToNs || last < sel.FromNs {
		return false
	}
	if slices.ContainsFunc(d.Sockets, func(s *Socket) bool { return chosen[s] }) {
		return true
	}
	if len(d.Sockets) > 0 || f.LeaksOnly || len(f.States) > 0 {
		return false
	}
	// Nothing traced to go by: the record's own port and pid.
	var ports []uint16
	var pids []uint32
	switch {
	case d.BindConflict != nil:
		ports = []uint16{d.BindConflict.Lport}
		pids = []uint32{d.BindConflict.PID}
		for _, h := range d.BindConflict.Holders {
			pids = append(pids, ownerPIDs(h.Owners)...)
		}
	case d.ConnectFail != nil:
		ports = []uint16{d.ConnectFail.Lport, d.ConnectFail.Rport}
		pids = ownerPIDs(d.ConnectFail.Owners)
	case len(d.Leak) > 0:
		ports = []uint16{d.Leak[0].Lport, d.Leak[0].Rport}
		pids = ownerPIDs(d.Leak[0].Owners)
	}
	if len(f.Ports) > 0 && !slices.ContainsFunc(ports, func(p uint16) bool { return slices.Contains(f.Ports, p) }) {
		return false
	}
	if len(f.PIDs) > 0 && !slices.ContainsFunc(pids, func(p uint32) bool { return slices.Contains(f.PIDs, p) }) {
		return false
	}
	return true
}

func ownerPIDs(owners []record.Owner) []uint32 {
	pids := make([]uint32, len(owners))
	for i, o := range owners {
		pids[i] = o.PID
	}
	return pids
}

// ParseStateName parses a TCP state as a person types it: "time_wait",
// "TIME-WAIT", "TIME_WAIT" or "timewait".
func ParseStateName(s string) (event.State, error) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	if st, ok := event.ParseState(name); ok && st != event.NewSynRecv && st != event.BoundInact {
		return st, nil
	}
	for st := event.Established; st <= event.Closing; st++ {
		if strings.ReplaceAll(st.String(), "_", "") == name {
			return st, nil
		}
	}
	return 0, fmt.Errorf("unknown TCP state %q (want one of ESTABLISHED, SYN_SENT, SYN_RECV, FIN_WAIT1, FIN_WAIT2, TIME_WAIT, CLOSE, CLOSE_WAIT, LAST_ACK, LISTEN, CLOSING)", s)
}
