package timeline

import (
	"strconv"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// CauseKind classifies why a socket changed state. Its String is the JSON
// "cause_kind".
type CauseKind uint8

const (
	CauseUnknown     CauseKind = iota
	CauseConnect               // inside connect(fd) on this socket
	CauseListen                // inside listen(fd)
	CauseClose                 // inside close(fd) on this socket
	CauseShutdown              // inside shutdown(fd, how)
	CauseExit                  // the owner's fds were closed by its exit
	CauseSynReceived           // a SYN arrived at a listener
	CauseHandshake             // the handshake completed
	CausePeerFIN               // the peer closed its side
	CausePeerACK               // the peer acknowledged our FIN
	CauseTimewait              // handed to a timewait socket
	CauseRSTReceived           // the peer reset the connection
	CauseRSTSent               // we reset it: close with SO_LINGER 0 or unread data
	CauseRefused               // connect refused (RST in reply to SYN)
	CauseTimeout               // retransmissions timed out
	CauseFinTimeout            // FIN_WAIT2 waited for the peer's FIN too long: the kernel reset it
	CauseAborted               // the kernel reset it: an orphan dropped for memory or count
	CauseDestroyed             // destroyed on request: sock_diag's SOCK_DESTROY (ss -K) or bpf_sock_destroy
)

var causeNames = [...]string{
	"unknown", "connect", "listen", "close", "shutdown", "exit", "syn_received",
	"handshake", "peer_fin", "peer_ack", "timewait", "rst_received", "rst_sent",
	"refused", "timeout", "fin_timeout", "aborted", "destroyed",
}

func (k CauseKind) String() string {
	if int(k) < len(causeNames) {
		return causeNames[k]
	}
	return "unknown"
}

// Cause says why a transition happened.
type Cause struct {
	Kind CauseKind
	Call event.Call // the call it ran inside, if any
	FD   int32      // that call's fd
	PID  uint32     // the process of that call, or the one that exited
	How  uint32     // shutdown's how
}

// Errno values the kernel leaves in sk_err.
const (
	errnoEPIPE        = 32
	errnoECONNABORTED = 103
	errnoECONNRESET   = 104
	errnoETIMEDOUT    = 110
	errnoECONNREFUSED = 111
	errnoEHOSTUNREACH = 113
)

const numPairStates = 16

// pairCause is the cause of the transitions whose states alone say it (a
// table: the hot path's branches on the pair mispredicted at every other
// transition of a busy port).
var pairCause = func() (t [numPairStates][numPairStates]CauseKind) {
	for old := range event.State(numPairStates) {
		t[old][event.Listen] = CauseListen
	}
	t[event.Close][event.SynSent] = CauseConnect
	t[event.Listen][event.SynRecv] = CauseSynReceived
	t[event.SynSent][event.Established] = CauseHandshake
	t[event.SynRecv][event.Established] = CauseHandshake
	t[event.Established][event.CloseWait] = CausePeerFIN
	t[event.FinWait1][event.Closing] = CausePeerFIN
	t[event.FinWait1][event.FinWait2] = CausePeerACK
	t[event.LastAck][event.Close] = CausePeerACK
	return t
}()

// classify derives the cause of transition e on a socket whose known owners
// are owners. exitedBy is the pid of an owner that exited while holding it.
func classify(e *event.Event, exitedBy uint32) Cause {
	c := Cause{FD: -1}
	if e.Call != event.CallNone {
		c.Call, c.FD, c.PID = e.Call, e.FD, e.PID
	}
	old, nw := e.Old, e.New
	if old < numPairStates && nw < numPairStates {
		if k := pairCause[old][nw]; k != CauseUnknown {
			c.Kind = k
			return c
		}
	} else if nw == event.Listen {
		c.Kind = CauseListen
		return c
	}

	// The owner's own doing: a close, a shutdown, or its exit.
	active := nw == event.FinWait1 || nw == event.LastAck ||
		(nw == event.Close && (old == event.Established || old == event.CloseWait ||
			old == event.Listen || old == event.SynSent || old == event.SynRecv) && e.SkErr == 0)
	if active {
		switch {
		case e.Call.Releases():
			c.Kind = CauseClose
			c.How = e.Arg
		case e.Call == event.CallShutdown:
			c.Kind = CauseShutdown
			c.How = e.Arg
		case exitedBy != 0:
			// Its last owner exited: the exit closed the fd.
			c.Kind, c.PID = CauseExit, exitedBy
		case e.Exiting() && e.Call == event.CallNone:
			// The owner is unknown, but the change ran in an exiting task
			// outside any socket call: its fds being closed.
			c.Kind, c.PID = CauseExit, e.PID
		}
		if c.Kind != CauseUnknown {
			if nw == event.Close && (old == event.Established || old == event.CloseWait) {
				// Going straight to CLOSE from a connected state means an RST
				// was sent: SO_LINGER 0, or unread data at close.
				c.Kind = CauseRSTSent
			}
			return c
		}
	}

	if nw == event.Close {
		switch e.SkErr {
		case errnoECONNREFUSED:
			c.Kind = CauseRefused
		case errnoETIMEDOUT, errnoEHOSTUNREACH:
			c.Kind = CauseTimeout
		case errnoECONNRESET, errnoEPIPE:
			c.Kind = CauseRSTReceived
		case errnoECONNABORTED:
			// tcp_abort: what ss -K and bpf_sock_destroy() ask for.
			c.Kind = CauseDestroyed
		default:
			// With no error and no call, leaving these for CLOSE is a
			// hand-over to a timewait socket, unless the kernel had just
			// reset the connection itself.
			switch {
			case e.RSTSent() && old == event.FinWait2 && e.SkErr == 0:
				c.Kind = CauseFinTimeout
			case e.RSTSent():
				c.Kind = CauseAborted
			case old == event.FinWait2 || old == event.Closing || old == event.FinWait1:
				c.Kind = CauseTimewait
			}
		}
	}
	return c
}

// AppendText appends the cause as a short phrase, e.g. "close(fd 6)".
func (c *Cause) AppendText(b []byte) []byte {
	switch c.Kind {
	case CauseConnect:
		return appendCall(b, "connect", c.FD)
	case CauseListen:
		return appendCall(b, "listen", c.FD)
	case CauseClose:
		return c.appendRelease(b)
	case CauseShutdown:
		b = append(b, "shutdown(fd "...)
		b = strconv.AppendInt(b, int64(c.FD), 10)
		b = append(b, ", "...)
		b = append(b, shutHow(c.How)...)
		return append(b, ')')
	case CauseExit:
		b = append(b, "exit of pid "...)
		return strconv.AppendUint(b, uint64(c.PID), 10)
	case CauseSynReceived:
		return append(b, "SYN received"...)
	case CauseHandshake:
		return append(b, "handshake done"...)
	case CausePeerFIN:
		return append(b, "peer closed (FIN)"...)
	case CausePeerACK:
		return append(b, "peer ACKed our FIN"...)
	case CauseTimewait:
		return append(b, "handed to timewait"...)
	case CauseRSTReceived:
		return append(b, "RST received"...)
	case CauseRSTSent:
		b = append(b, "RST sent by "...)
		if c.Call.Releases() {
			return c.appendRelease(b)
		}
		if c.Call == event.CallShutdown {
			return appendCall(b, "shutdown", c.FD)
		}
		b = append(b, "exit of pid "...)
		return strconv.AppendUint(b, uint64(c.PID), 10)
	case CauseRefused:
		return append(b, "connection refused"...)
	case CauseTimeout:
		return append(b, "timed out"...)
	case CauseFinTimeout:
		return append(b, "no FIN from the peer in time: RST sent"...)
	case CauseAborted:
		return append(b, "aborted by the kernel: RST sent"...)
	case CauseDestroyed:
		return append(b, "destroyed (ss -K or bpf_sock_destroy)"...)
	}
	return append(b, '?')
}

// appendRelease names the call that closed the socket's last fd:
// "close(fd 7)", "close_range(fd 3 and up)", "dup2 over fd 7",
// "execve (close-on-exec)".
func (c *Cause) appendRelease(b []byte) []byte {
	switch c.Call {
	case event.CallCloseRange:
		b = append(b, "close_range(fd "...)
		b = strconv.AppendInt(b, int64(c.FD), 10)
		if c.How == ^uint32(0) || int32(c.How) < 0 {
			return append(b, " and up)"...)
		}
		b = append(b, '-')
		b = strconv.AppendUint(b, uint64(c.How), 10)
		return append(b, ')')
	case event.CallDupOver:
		b = append(b, "dup2 over fd "...)
		return strconv.AppendInt(b, int64(c.FD), 10)
	case event.CallExecve:
		return append(b, "execve (close-on-exec)"...)
	}
	return appendCall(b, "close", c.FD)
}

func appendCall(b []byte, name string, fd int32) []byte {
	b = append(b, name...)
	b = append(b, "(fd "...)
	b = strconv.AppendInt(b, int64(fd), 10)
	return append(b, ')')
}

func shutHow(how uint32) string {
	switch how {
	case 0:
		return "SHUT_RD"
	case 1:
		return "SHUT_WR"
	case 2:
		return "SHUT_RDWR"
	}
	return "?"
}
