package timeline

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// Holder describes a socket that holds a local address, for a diagnosis.
type Holder struct {
	Cookie  uint64
	Local   netip.AddrPort
	Remote  netip.AddrPort
	State   event.State
	StateNs int64 // time in State; -1: unknown (since before the trace)
	// StateAtLeast: StateNs is a lower bound (what the kernel's socket
	// table tells, for a socket tcptrail did not see enter the state).
	StateAtLeast bool
	Timewait     bool  // a timewait socket: no process holds it, the kernel does
	TimerMs      int64 // timewait: time left
	Owners       []Owner
}

// OwnersText renders owners as "client[4242] fd 3, worker[4250] fd 3".
func OwnersText(owners []Owner) string {
	if len(owners) == 0 {
		return event.NoOwner
	}
	var b []byte
	for i := range owners {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = event.AppendOwner(b, owners[i].CommString(), owners[i].PID, owners[i].FD)
	}
	return string(b)
}

// Why says in one plain sentence why h still holds its local address.
func (h *Holder) Why() string {
	if h.Timewait {
		left := time.Duration(h.TimerMs) * time.Millisecond
		if h.State == event.FinWait2 {
			return fmt.Sprintf("this end closed first and the kernel waits for the peer's FIN (%s left before it gives up)", fmtDur(left))
		}
		return fmt.Sprintf("this end closed first; the kernel keeps it in TIME_WAIT for 60s so that late packets cannot reach a new connection (%s left); SO_REUSEADDR allows binding anyway", fmtDur(left))
	}
	closeHint := "close(fd)"
	if len(h.Owners) > 0 {
		closeHint = fmt.Sprintf("close(fd %d)", h.Owners[0].FD)
	}
	switch h.State {
	case event.CloseWait:
		if len(h.Owners) == 0 {
			return "the peer closed and the owner never closed the socket"
		}
		return "the peer closed and this process never called " + closeHint
	case event.Established:
		return "the connection is open"
	case event.Listen:
		return "a listener is bound to it"
	case event.SynSent:
		return "a connect() is in progress"
	case event.SynRecv:
		return "a handshake is in progress"
	case event.FinWait1, event.FinWait2, event.Closing:
		return "this end closed and waits for the peer to finish closing"
	case event.LastAck:
		return "this end closed after the peer and waits for the peer's last ACK"
	case event.Close:
		return "the socket is bound but not connected: its owner never called " + closeHint
	}
	return "it is in use"
}

// Describe renders h as "127.0.0.1:10001→127.0.0.1:7070 in CLOSE_WAIT for
// 1.0s, owned by client[4242] fd 3: <why>".
func (h *Holder) Describe() string {
	var b strings.Builder
	h.writeAddrs(&b, "→")
	b.WriteString(" in ")
	b.WriteString(h.State.String())
	if h.Timewait {
		b.WriteString(" (timewait socket)")
	}
	if h.StateNs >= 0 {
		h.writeFor(&b)
	} else {
		b.WriteString(" since before the trace")
	}
	if h.Timewait {
		b.WriteString(", held by the kernel")
	} else {
		b.WriteString(", owned by ")
		b.WriteString(OwnersText(h.Owners))
	}
	b.WriteString(": ")
	b.WriteString(h.Why())
	return b.String()
}

// Sentence renders h as it is right now, with no history: "127.0.0.1:10001
// → 127.0.0.1:7070 is in CLOSE_WAIT, held by client[4242] fd 3: <why>".
func (h *Holder) Sentence() string {
	var b strings.Builder
	h.writeAddrs(&b, " → ")
	b.WriteString(" is in ")
	b.WriteString(h.State.String())
	h.writeFor(&b)
	if h.Timewait {
		b.WriteString(" (a timewait socket), held by the kernel")
	} else {
		b.WriteString(", held by ")
		b.WriteString(OwnersText(h.Owners))
		for _, o := range h.Owners {
			if len(o.Container) >= 12 {
				b.WriteString(" in container ")
				b.WriteString(o.Container[:12])
				break
			}
		}
	}
	b.WriteString(": ")
	b.WriteString(h.Why())
	return b.String()
}

// writeFor writes how long h has been in its state, if known.
func (h *Holder) writeFor(b *strings.Builder) {
	if h.StateNs < 0 {
		return
	}
	b.WriteString(" for ")
	if h.StateAtLeast {
		b.WriteString("at least ")
	}
	b.WriteString(fmtDur(time.Duration(h.StateNs)))
}

// writeAddrs writes the local address, and the remote one after arrow if
// the socket is connected.
func (h *Holder) writeAddrs(b *strings.Builder, arrow string) {
	b.WriteString(h.Local.String())
	if h.Remote.Port() != 0 {
		b.WriteString(arrow)
		b.WriteString(h.Remote.String())
	}
}

// fmtDur prints durations the way people say them: 1.0s, 250ms, 59.8s, 3m0s.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < 2*time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	return d.Round(time.Second).String()
}

// FmtDur is fmtDur for other packages.
func FmtDur(d time.Duration) string { return fmtDur(d) }
