package tracer

import (
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

func TestTimeInState(t *testing.T) {
	for _, c := range []struct {
		name     string
		e        socktable.Entry
		timewait bool
		ns       int64
		atLeast  bool
	}{
		{"TIME_WAIT: 60 s minus the timer", socktable.Entry{State: uint8(event.TimeWait), Expires: 50_700}, true, 9_300e6, false},
		{"CLOSE_WAIT: since the peer's last ACK", socktable.Entry{State: uint8(event.CloseWait), LastAckRecvMs: 2900}, false, 2900e6, true},
		{"FIN_WAIT2 full socket", socktable.Entry{State: uint8(event.FinWait2), LastAckRecvMs: 10}, false, 10e6, true},
		{"FIN_WAIT2 timewait socket: unknown", socktable.Entry{State: uint8(event.FinWait2), Expires: 50_000, LastAckRecvMs: -1}, true, -1, false},
		{"ESTABLISHED: unknown", socktable.Entry{State: uint8(event.Established), LastAckRecvMs: 5}, false, -1, false},
		{"CLOSE_WAIT without tcp_info", socktable.Entry{State: uint8(event.CloseWait), LastAckRecvMs: -1}, false, -1, false},
	} {
		ns, atLeast := timeInState(&c.e, c.timewait)
		if ns != c.ns || atLeast != c.atLeast {
			t.Errorf("%s: %d, %v; want %d, %v", c.name, ns, atLeast, c.ns, c.atLeast)
		}
	}
}
