package live

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

func transition(local, remote string, old, nw event.State, prev int64) *timeline.Transition {
	e := &event.Event{Kind: event.KindState, Cookie: 4097, Family: event.AFInet,
		Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote),
		Old: old, New: nw, PID: 4242, FD: 3, Call: event.CallClose}
	copy(e.Comm[:], "client")
	var c [16]byte
	copy(c[:], "client")
	return &timeline.Transition{Event: e, PrevStateNs: prev,
		Cause:  timeline.Cause{Kind: timeline.CauseClose, Call: event.CallClose, FD: 3},
		Owners: []timeline.Owner{{PID: 4242, FD: 3, Comm: c}}}
}

// TestColumnsAlign: the header and the lines share column positions.
func TestColumnsAlign(t *testing.T) {
	var out bytes.Buffer
	tb := NewTable(&out)
	tb.Header()
	tb.Transition(transition("127.0.0.1:10001", "127.0.0.1:7070", event.CloseWait, event.LastAck, 1_002_000_000), 0)
	tb.Transition(transition("10.1.2.3:80", "10.9.8.7:65000", event.Established, event.FinWait1, 850), 0)
	tb.Flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 lines:\n%s", out.String())
	}
	col := func(line, word string) int { return len([]rune(line[:strings.Index(line, word)])) }
	for _, l := range lines[1:] {
		if col(l, "->") != col(lines[0], "REMOTE")-3 {
			t.Errorf("remote column misaligned:\n%s\n%s", lines[0], l)
		}
		if col(l, "close(fd 3)") != col(lines[0], "CAUSE") {
			t.Errorf("cause column misaligned:\n%s\n%s", lines[0], l)
		}
		if col(l, "client[4242]:3") != col(lines[0], "OWNER") {
			t.Errorf("owner column misaligned:\n%s\n%s", lines[0], l)
		}
	}
	if !strings.Contains(lines[1], "CLOSE_WAIT -> LAST_ACK") || !strings.Contains(lines[1], "1.002s") {
		t.Errorf("line: %s", lines[1])
	}
	if !strings.Contains(lines[2], "850ns") {
		t.Errorf("line: %s", lines[2])
	}
}

func TestGapShown(t *testing.T) {
	var out bytes.Buffer
	tb := NewTable(&out)
	tr := transition("127.0.0.1:1", "127.0.0.1:2", event.CloseWait, event.LastAck, -1)
	tr.Gap, tr.ExpectedOld = true, event.SynSent
	tb.Transition(tr, 0)
	tb.Flush()
	if !strings.Contains(out.String(), "(gap after SYN_SENT) CLOSE_WAIT -> LAST_ACK") {
		t.Fatalf("gap not shown: %s", out.String())
	}
}

func TestAppendDuration(t *testing.T) {
	for ns, want := range map[int64]string{
		999: "999ns", 12_345: "12.3µs", 4_560_000: "4.56ms", 1_002_000_000: "1.002s", 184e9: "3m04s",
	} {
		if got := string(AppendDuration(nil, ns)); got != want {
			t.Errorf("%d: %s, want %s", ns, got, want)
		}
	}
}

func TestTableLineDoesNotAllocate(t *testing.T) {
	tb := NewTable(&bytes.Buffer{})
	tr := transition("127.0.0.1:10001", "127.0.0.1:7070", event.CloseWait, event.LastAck, 5)
	if n := testing.AllocsPerRun(100, func() { tb.Transition(tr, 1); tb.buf = tb.buf[:0] }); n != 0 {
		t.Fatalf("a table line allocates %v times", n)
	}
}

func TestNetNSShownOnceSeveral(t *testing.T) {
	var out bytes.Buffer
	tab := NewTable(&out)
	tr := timeline.New()
	one := &event.Event{Kind: event.KindState, Cookie: 1, NetNS: 4026531840, Family: event.AFInet,
		Local: netip.MustParseAddrPort("127.0.0.1:7070"), Old: event.Close, New: event.Listen, FD: -1}
	two := *one
	two.Cookie, two.NetNS = 2, 4026532177
	for _, e := range []*event.Event{one, &two, one} {
		if err := tab.Transition(tr.Transition(e), 0); err != nil {
			t.Fatal(err)
		}
	}
	tab.Flush()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || strings.Contains(lines[0], "netns") ||
		!strings.HasSuffix(lines[1], "netns 4026532177") || !strings.HasSuffix(lines[2], "netns 4026531840") {
		t.Fatalf("netns shown only once a second namespace is in play:\n%s", out.String())
	}
}

// largestWrite records the longest single write.
type largestWrite struct{ max, total int }

func (w *largestWrite) Write(p []byte) (int, error) {
	w.max = max(w.max, len(p))
	w.total += len(p)
	return len(p), nil
}

// The start-up scan of a busy host prints a line per socket, tens of
// thousands at once: they are written out as the buffer fills, so that it
// keeps its size (a spool hands back buffers of that size only).
func TestManyLinesKeepTheBufferSize(t *testing.T) {
	var w largestWrite
	tb := NewTable(&w)
	snap := &record.Snapshot{Reason: "start", State: "TIME_WAIT",
		Socket: record.Socket{Cookie: 77, Laddr: "127.0.0.1", Lport: 40000, Raddr: "127.0.0.1", Rport: 7070}}
	for range 50000 {
		if err := tb.Record(snap); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.Flush(); err != nil {
		t.Fatal(err)
	}
	if w.total < 50000*50 {
		t.Fatalf("wrote %d bytes for 50000 lines", w.total)
	}
	if w.max > bufSize || cap(tb.buf) != bufSize {
		t.Fatalf("largest write %d bytes, buffer capacity %d: want both at most %d", w.max, cap(tb.buf), bufSize)
	}
}

// A table keeps the text of identities, addresses and processes for the
// next lines: whatever changes between lines (another socket, a port bound,
// an address of either end, IPv6, the task, the owners), each line is the
// one a new table writes.
func TestCachedLinesMatchFresh(t *testing.T) {
	var out bytes.Buffer
	tb := NewTable(&out)
	var want []byte
	locals := []string{"127.0.0.1:0", "127.0.0.1:10001", "10.0.0.1:10001", "[::1]:10001", "[fe80::1%eth0]:22"}
	remotes := []string{"127.0.0.1:7070", "127.0.0.2:7070", "[2001:db8::1]:7070"}
	for n := range 200 {
		tr := transition(locals[(n/2)%len(locals)], remotes[(n/3)%len(remotes)], event.Established, event.FinWait1, int64(n))
		tr.Event.Cookie = uint64([]int{4097, 4097 + 1024, 4098}[(n/4)%3])
		// The task and the owner: a process that renames itself, another
		// in its cache slot (256 slots).
		proc := []struct {
			pid  uint32
			comm string
		}{{4242, "client"}, {4242, "renamed"}, {4242 + 256, "client"}, {7, "ünïcode"}}[(n/5)%4]
		tr.Event.PID, tr.Event.Comm = proc.pid, [16]byte{}
		copy(tr.Event.Comm[:], proc.comm)
		tr.Owners = []timeline.Owner{{PID: proc.pid, FD: int32(n % 7), Comm: tr.Event.Comm}}
		tb.Transition(tr, int64(n)*1e6)
		var fresh bytes.Buffer
		ft := NewTable(&fresh)
		ft.Transition(tr, int64(n)*1e6)
		ft.Flush()
		want = append(want, fresh.Bytes()...)
	}
	tb.Flush()
	got, exp := strings.Split(out.String(), "\n"), strings.Split(string(want), "\n")
	for i := range min(len(got), len(exp)) {
		if got[i] != exp[i] {
			t.Fatalf("line %d:\n got  %s\n want %s", i, got[i], exp[i])
		}
	}
	if len(got) != len(exp) {
		t.Fatalf("%d lines, want %d", len(got), len(exp))
	}
}
