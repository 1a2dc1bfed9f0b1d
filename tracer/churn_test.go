package tracer_test

import (
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// TestChurnEveryTransitionOnce: under a churn of loopback connections, the
// kind of load where softirqs interrupt the programs on their own CPU (and
// the kernel skips a program already running there), every transition of
// every connection is reported exactly once, or counted as lost: reported
// plus lost is exactly 10 per connection, no socket shows a transition
// twice or out of order, and nothing is left uncounted. (Some kernels run
// a state change without running the programs and without counting it, a
// few per million: the socket it leaves behind is then flagged as an end
// unseen, and its missing transitions count as accounted for.)
func TestChurnEveryTransitionOnce(t *testing.T) {
	const port = 17410
	s := startSession(t, tracer.Config{}, port)

	ln := closingServer(t, port)
	// As fast as 4 clients go, but no more connections than the ring
	// buffer holds the events of (11 each): however slow the reader (a
	// race-detector build), nothing may be lost to a full ring.
	const workers, perWorker = 4, 750
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				c, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, c) // to the server's FIN
				c.Close()
			}
		}()
	}
	wg.Wait()
	conns := workers * perWorker
	ln.Close()
	// Every connection closed on both ends (its server end in timewait).
	busy := uint32(socktable.AllStates &^ (1<<5 | 1<<6 | 1<<7)) // not FIN_WAIT2, TIME_WAIT, CLOSE
	testwait.Until(t, 10*time.Second, "the connections to close", func() bool {
		left, err := socktable.DumpFunc(syscall.AF_INET, busy, func(e *socktable.Entry) bool {
			return e.Local.Port() == port || e.Remote.Port() == port
		})
		return err == nil && len(left) == 0
	})
	sum := s.stop(t)

	steps := s.rec.Steps(func(Step) bool { return true })
	want := 10*conns + 2 // and the listener's CLOSE->LISTEN, LISTEN->CLOSE
	lost := sum.Lost.RingbufFull + sum.Lost.RecursionMisses
	// A socket flagged as gone lost the rest of its 5 transitions.
	perSocket := map[uint64]int{}
	for _, st := range steps {
		perSocket[st.Cookie]++
	}
	var unseen uint64
	for _, r := range s.rec.Records() {
		if g, ok := r.(*record.Snapshot); ok && g.Reason == "gone" {
			unseen += uint64(5 - perSocket[g.Cookie])
		}
	}
	if n := sum.Lost.EndsUnseen; n > 0 {
		t.Logf("%d sockets flagged as ends unseen, %d transitions missing on them", n, unseen)
		lost += unseen
	}
	t.Logf("%d connections: %d transitions reported, %d lost (ring buffer full %d, skipped by the kernel %d)",
		conns, len(steps), lost, sum.Lost.RingbufFull, sum.Lost.RecursionMisses)
	if sum.Lost.RingbufFull != 0 {
		t.Errorf("%d events lost to a full ring buffer, which holds them all", sum.Lost.RingbufFull)
	}
	if uint64(len(steps))+lost != uint64(want) {
		t.Errorf("%d transitions reported and %d lost, want %d in all", len(steps), lost, want)
	}
	if sum.Lost.Gaps != 0 {
		t.Errorf("%d gaps: a transition reported twice or out of order", sum.Lost.Gaps)
	}
	last := map[uint64]event.State{}
	bad := 0
	for _, st := range steps {
		if prev, ok := last[st.Cookie]; ok && prev != st.Old && bad < 5 {
			bad++
			t.Errorf("socket %d: %s->%s after it entered %s", st.Cookie, st.Old, st.New, prev)
		}
		last[st.Cookie] = st.New
	}
}
