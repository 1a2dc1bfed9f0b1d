package live

import (
	"fmt"
	"strings"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Begin prints what is traced and the column header.
func (t *Table) Begin(h *record.Header) error {
	what := "all TCP ports"
	if len(h.Filters.Ports) > 0 {
		ports := make([]string, len(h.Filters.Ports))
		for i, p := range h.Filters.Ports {
			ports[i] = fmt.Sprint(p)
		}
		what = "TCP ports " + strings.Join(ports, ",")
	}
	if h.Filters.PID != 0 {
		what += fmt.Sprintf(", sockets of pid %d", h.Filters.PID)
	}
	t.Printf("tracing %s (Ctrl-C to stop)\n", what)
	t.Header()
	return t.Flush()
}

// RoutineCalls: the table shows no accept, bind or dup records.
func (t *Table) RoutineCalls() bool { return false }

// Record prints the records a person watching wants to see: diagnoses,
// closes that changed nothing, sockets found at start, timewait phases and
// process exits. Accepts, binds and forks are in the JSON only.
func (t *Table) Record(rec any) error {
	switch r := rec.(type) {
	case *record.Snapshot:
		switch r.Reason {
		case "start":
			t.Line(r.Time, "EXISTING", fmt.Sprintf("%s %s:%d -> %s:%d %s, owned by %s", event.AppendID(nil, r.Cookie), r.Laddr, r.Lport, r.Raddr, r.Rport, r.State, ownersText(r.Owners))+t.nsSuffix(r.NetNS))
		case "timewait":
			left := ""
			if r.TimerMs > 0 {
				left = ", " + timeline.FmtDur(time.Duration(r.TimerMs)*time.Millisecond) + " left"
			}
			t.Line(r.Time, "TIMEWAIT", fmt.Sprintf("%s %s:%d -> %s:%d now %s (timewait socket%s; %s)", event.AppendID(nil, r.Cookie), r.Laddr, r.Lport, r.Raddr, r.Rport, r.State, left, r.Note)+t.nsSuffix(r.NetNS))
		case "gone":
			t.Line(r.Time, "GONE", fmt.Sprintf("%s %s:%d -> %s:%d last seen in %s, %s", event.AppendID(nil, r.Cookie), r.Laddr, r.Lport, r.Raddr, r.Rport, r.State, r.Note)+t.nsSuffix(r.NetNS))
		case "timewait_gone":
			t.Line(r.Time, "TIMEWAIT", fmt.Sprintf("%s %s:%d -> %s:%d timewait socket gone: %s", event.AppendID(nil, r.Cookie), r.Laddr, r.Lport, r.Raddr, r.Rport, r.Note)+t.nsSuffix(r.NetNS))
		}
	case *record.Call:
		if r.Note != "" {
			t.Line(r.Time, "NOTE", r.Note)
		}
	case *record.Exit:
		t.Line(r.Time, "EXIT", fmt.Sprintf("%s[%d] exited: the kernel closes its fds", r.Comm, r.PID))
	case *record.Leak:
		t.Line(r.Time, "LEAK", r.Message+t.nsSuffix(r.NetNS))
	case *record.BindConflict:
		msg := r.Message + t.nsSuffix(r.NetNS)
		t.Line(r.Time, "BIND", msg)
		t.remember(msg)
	case *record.ConnectFail:
		msg := r.Message + t.nsSuffix(r.NetNS)
		t.Line(r.Time, "CONNECT", msg)
		t.remember(msg)
	}
	return nil
}

// maxDiagnoses bounds what the summary repeats.
const maxDiagnoses = 20

func (t *Table) remember(msg string) {
	if len(t.diagnoses) < maxDiagnoses {
		t.diagnoses = append(t.diagnoses, msg)
	} else {
		t.more++
	}
}

func ownersText(owners []record.Owner) string {
	if len(owners) == 0 {
		return event.NoOwner
	}
	var b []byte
	for i, o := range owners {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = event.AppendOwner(b, o.Comm, o.PID, o.FD)
	}
	return string(b)
}

// End prints the summary and the leaks.
func (t *Table) End(s *record.Summary) error {
	t.Summary(s)
	for _, d := range t.diagnoses {
		t.Printf("diagnosis: %s\n", d)
	}
	if t.more > 0 {
		t.Printf("... and %d more failed binds or connects (see the JSON capture)\n", t.more)
	}
	if len(s.Leaks) == 0 {
		t.Printf("no CLOSE_WAIT leaks\n")
	} else {
		t.Printf("%d CLOSE_WAIT leak(s):\n", len(s.Leaks))
		for _, l := range s.Leaks {
			t.Printf("  %s:%d -> %s:%d (%s): %s\n", l.Laddr, l.Lport, l.Raddr, l.Rport, l.Phase, l.Message)
		}
	}
	return t.Flush()
}
