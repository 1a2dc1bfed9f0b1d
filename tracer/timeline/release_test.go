package timeline

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// The calls that close an fd without naming the socket: each is its own
// cause, and the fds it closed leave the socket's owners.
func TestReleaseCauses(t *testing.T) {
	local := netip.MustParseAddrPort("127.0.0.1:10001")
	remote := netip.MustParseAddrPort("127.0.0.1:7070")
	cases := []struct {
		name     string
		call     event.Call
		fd       int32
		arg      uint32
		owners   []Owner // before
		want     string
		kind     CauseKind
		leftOver string
	}{
		{"close", event.CallClose, 7, 0, []Owner{{PID: 200, FD: 7}}, "close(fd 7)", CauseClose, OwnersText(nil)},
		{"dup2 over", event.CallDupOver, 7, 0, []Owner{{PID: 200, FD: 7}, {PID: 200, FD: 9}}, "dup2 over fd 7", CauseClose, "[200] fd 9"},
		{"close_range", event.CallCloseRange, 3, 8, []Owner{{PID: 200, FD: 7}, {PID: 200, FD: 9}, {PID: 300, FD: 7}}, "close_range(fd 3-8)", CauseClose, "[200] fd 9, [300] fd 7"},
		{"close_range to the end", event.CallCloseRange, 3, ^uint32(0), []Owner{{PID: 200, FD: 7}}, "close_range(fd 3 and up)", CauseClose, OwnersText(nil)},
		{"execve", event.CallExecve, -1, 0, []Owner{{PID: 200, FD: 7}, {PID: 200, FD: 8}}, "execve (close-on-exec)", CauseClose, OwnersText(nil)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr := New()
			tr.Transition(ev(10, 1, local, remote, event.SynSent, event.Established, 200, "client"))
			s := tr.Socket(1)
			for _, o := range c.owners {
				tr.addOwner(s, o)
			}
			e := ev(20, 1, local, remote, event.Established, event.FinWait1, 200, "client")
			e.Call, e.FD, e.Arg, e.Flags = c.call, c.fd, c.arg, event.FlagAfterCall
			got := tr.Transition(e)
			if text := string(got.Cause.AppendText(nil)); text != c.want || got.Cause.Kind != c.kind {
				t.Fatalf("cause %q (%v), want %q (%v)", text, got.Cause.Kind, c.want, c.kind)
			}
			if left := OwnersText(s.Owners); left != c.leftOver {
				t.Fatalf("owners left %q, want %q", left, c.leftOver)
			}
		})
	}
}

func TestHolderSentence(t *testing.T) {
	h := Holder{Local: netip.MustParseAddrPort("127.0.0.1:10001"), Remote: netip.MustParseAddrPort("127.0.0.1:7070"),
		State: event.CloseWait, StateNs: -1, Owners: []Owner{{PID: 4242, FD: 7, Container: "3f2a9c0d1e2f3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3"}}}
	copy(h.Owners[0].Comm[:], "client")
	want := "127.0.0.1:10001 → 127.0.0.1:7070 is in CLOSE_WAIT, held by client[4242] fd 7 in container 3f2a9c0d1e2f: the peer closed and this process never called close(fd 7)"
	if got := h.Sentence(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// With the time the kernel's table tells, a lower bound.
	h.StateNs, h.StateAtLeast = 303e9, true
	want = "127.0.0.1:10001 → 127.0.0.1:7070 is in CLOSE_WAIT for at least 5m3s, held by client[4242] fd 7 in container 3f2a9c0d1e2f: the peer closed and this process never called close(fd 7)"
	if got := h.Sentence(); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	tw := Holder{Local: netip.MustParseAddrPort("127.0.0.1:7070"), Remote: netip.MustParseAddrPort("127.0.0.1:10001"),
		State: event.TimeWait, StateNs: 30e9, Timewait: true, TimerMs: 30_000}
	if got := tw.Sentence(); !strings.HasPrefix(got, "127.0.0.1:7070 → 127.0.0.1:10001 is in TIME_WAIT for 30.0s (a timewait socket), held by the kernel: ") {
		t.Fatalf("timewait: %s", got)
	}
}
