package capture

import (
	"bytes"
	"encoding/json"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

func sampleTransition(comm string) *timeline.Transition {
	e := &event.Event{Kind: event.KindState, MonoNs: 5_000_000_123, Cookie: 4097, Family: event.AFInet6,
		Local:  netip.MustParseAddrPort("[2001:db8::1]:10001"),
		Remote: netip.MustParseAddrPort("[2001:db8::2]:7070"),
		Old:    event.CloseWait, New: event.Close, PID: 4242, FD: 3, Call: event.CallClose, SkErr: 104}
	copy(e.Comm[:], comm)
	var oc [16]byte
	copy(oc[:], comm)
	return &timeline.Transition{
		Event: e, PrevStateNs: 1_000_000_000, Gap: true, ExpectedOld: event.Established,
		Cause:  timeline.Cause{Kind: timeline.CauseRSTSent, Call: event.CallClose, FD: 3, PID: 4242},
		Owners: []timeline.Owner{{PID: 4242, FD: 3, Comm: oc}, {PID: 4250, FD: 7, Comm: oc}},
	}
}

func TestTransitionJSON(t *testing.T) {
	wall := time.Date(2026, 11, 24, 5, 0, 0, 123456789, time.UTC)
	line := AppendTransition(nil, sampleTransition("client"), wall.UnixNano())
	if line[len(line)-1] != '\n' || bytes.Count(line, []byte("\n")) != 1 {
		t.Fatalf("not one line: %q", line)
	}
	var got record.Transition
	if err := json.Unmarshal(line, &got); err != nil {
		t.Fatalf("invalid JSON %s: %v", line, err)
	}
	prev := int64(1_000_000_000)
	want := record.Transition{
		Type: "transition", Time: wall, MonoNs: 5_000_000_123,
		Socket: record.Socket{Cookie: 4097, Family: "ipv6", Laddr: "2001:db8::1", Lport: 10001, Raddr: "2001:db8::2", Rport: 7070},
		Old:    "CLOSE_WAIT", New: "CLOSE", PrevStateNs: &prev, Gap: true, ExpectedOld: "ESTABLISHED",
		PID: 4242, Comm: "client", Cause: "RST sent by close(fd 3)", CauseKind: "rst_sent",
		Owners: []record.Owner{{PID: 4242, Comm: "client", FD: 3}, {PID: 4250, Comm: "client", FD: 7}},
		SkErr:  "ECONNRESET",
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) || !got.Time.Equal(want.Time) {
		t.Fatalf("round trip:\n got  %s\n want %s", gotJSON, wantJSON)
	}
}

func TestTransitionJSONUnknownPrevState(t *testing.T) {
	tr := sampleTransition("c")
	tr.PrevStateNs = -1
	var got record.Transition
	if err := json.Unmarshal(AppendTransition(nil, tr, 0), &got); err != nil {
		t.Fatal(err)
	}
	if got.PrevStateNs != nil {
		t.Fatalf("unknown time in state must be null, got %d", *got.PrevStateNs)
	}
}

func TestHostileProcessNames(t *testing.T) {
	for _, comm := range []string{`a"b\c`, "tab\there", "\xff\xfe\x01", "новый"} {
		line := AppendTransition(nil, sampleTransition(comm), 0)
		var got record.Transition
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatalf("comm %q gives invalid JSON %s: %v", comm, line, err)
		}
		if (comm == `a"b\c` || comm == "новый") && got.Comm != comm {
			t.Fatalf("comm %q came back as %q", comm, got.Comm)
		}
	}
}

func TestWriteTransitionDoesNotAllocate(t *testing.T) {
	tr := sampleTransition("client")
	w := NewWriter(io.Discard)
	if n := testing.AllocsPerRun(1000, func() { w.WriteTransition(tr, 1) }); n != 0 {
		t.Fatalf("WriteTransition allocates %v times per event", n)
	}
}

func TestCreateIsPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cap.jsonl")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Mode().Perm() != 0o600 || fi.Size() != 0 {
		t.Fatalf("capture file mode %v size %d, want 0600 and truncated", fi.Mode().Perm(), fi.Size())
	}
	if _, err := Create(filepath.Join(t.TempDir(), "missing", "cap.jsonl")); err == nil {
		t.Fatal("creating a file in a missing directory must fail")
	}
}

func TestWriterKeepsRecordsWhole(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	tr := sampleTransition("client")
	for i := 0; i < 2000; i++ {
		if err := w.WriteTransition(tr, int64(i)); err != nil {
			t.Fatal(err)
		}
		// Whatever reached the underlying writer ends with a whole line.
		if out.Len() > 0 && out.Bytes()[out.Len()-1] != '\n' {
			t.Fatalf("a record was split at a flush")
		}
	}
	if err := w.End(&record.Summary{Type: record.TypeSummary}); err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(out.Bytes(), []byte("\n")); n != 2001 {
		t.Fatalf("%d lines, want 2001", n)
	}
}

func BenchmarkWriteTransition(b *testing.B) {
	tr := sampleTransition("client")
	w := NewWriter(io.Discard)
	b.ReportAllocs()
	wall := time.Now().UnixNano()
	for b.Loop() {
		wall += 1000
		w.WriteTransition(tr, wall)
	}
}

// A call written straight from its event is the very line encoding/json
// writes for its record.
func TestCallJSONMatchesRecord(t *testing.T) {
	wall := time.Date(2026, 11, 24, 5, 0, 0, 120000000, time.UTC)
	var oc [16]byte
	copy(oc[:], "server")
	owners := []timeline.Owner{{PID: 10, FD: 5, Comm: oc}, {PID: 11, FD: 6, Comm: oc, Container: "abc123"}}
	for i, c := range []struct {
		e      event.Event
		owners []timeline.Owner
	}{
		{event.Event{Kind: event.KindCall, Call: event.CallAccept, MonoNs: 77, Cookie: 9, NetNS: 4026531833, Family: event.AFInet,
			Local: netip.MustParseAddrPort("127.0.0.1:7070"), Remote: netip.MustParseAddrPort("127.0.0.1:40000"),
			Old: event.Established, PID: 10, FD: 5}, owners},
		{event.Event{Kind: event.KindCall, Call: event.CallBind, MonoNs: 78, Family: event.AFInet6,
			Local: netip.MustParseAddrPort("[::]:7070"), PID: 10, FD: 3, Ret: -98}, nil},
		{event.Event{Kind: event.KindCall, Call: event.CallDup, MonoNs: 79, Cookie: 9, Family: event.AFInet, PID: 12, FD: 8}, []timeline.Owner{}},
	} {
		copy(c.e.Comm[:], "srv \"x\"\x01é")
		var w bytes.Buffer
		cw := NewWriter(&w)
		if err := cw.WriteCall(&c.e, wall.UnixNano(), c.owners); err != nil {
			t.Fatal(err)
		}
		cw.Flush()
		want, _ := json.Marshal(record.CallRecord(&c.e, wall, c.owners))
		if got := bytes.TrimSuffix(w.Bytes(), []byte("\n")); !bytes.Equal(got, want) {
			t.Errorf("%d:\n got  %s\n want %s", i, got, want)
		}
	}
}

// The writer keeps text for the next lines (a socket's identity and its
// parts, the processes, the clocks' leading digits) and writes the
// stretches between fields from tables: whatever changes between lines
// (the owners, the task, another socket or process in the same cache slot,
// the addresses, the namespace, every pair of states and every cause),
// each line is the one formatted afresh.
func TestCachedLinesMatchFresh(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out)
	var want []byte
	oc := func(s string) (c [16]byte) { copy(c[:], s); return }
	ownerSets := [][]timeline.Owner{
		{{PID: 10, FD: 3, Comm: oc("client")}},
		{{PID: 10, FD: 4, Comm: oc("client")}},
		{{PID: 10, FD: 4, Comm: oc("client")}, {PID: 11, FD: 4, Comm: oc("child")}},
		{{PID: 10, FD: 4, Comm: oc("client")}, {PID: 11, FD: 4, Comm: oc("child"), Container: "abc123"}},
		{{PID: 10, FD: 4, Comm: oc("client")}, {PID: 11, FD: 4, Comm: oc("child")}, {PID: 12, FD: 9, Comm: oc("grandchild")}},
		{},
		nil,
		{{PID: 4_000_000, FD: 1 << 30, Comm: oc("a-very-long-nam")}, {PID: 4_000_001, FD: 1 << 30, Comm: oc("another-long-na"), Container: strings.Repeat("f", 64)}},
		{{PID: 10, FD: 3, Comm: oc("client")}},
	}
	wall := time.Date(2026, 12, 6, 3, 0, 0, 0, time.UTC).UnixNano()
	n := 0
	for _, cookie := range []uint64{7, 7 + 1024, 7, 0} {
		for _, owners := range ownerSets {
			for old := event.State(0); int(old) <= numStates; old += 3 {
				e := &event.Event{Kind: event.KindState, MonoNs: 21506419198467 + uint64(n)*337_000, Cookie: cookie, Family: event.AFInet,
					Old: old, New: event.State(n % (numStates + 1)), SkErr: 104}
				// Identities that change part by part, now and then.
				e.Local = netip.MustParseAddrPort([]string{"127.0.0.1:10001", "10.0.0.1:10001", "[::1]:10001"}[(n/2)%3])
				e.Remote = netip.MustParseAddrPort([]string{"127.0.0.1:7070", "127.0.0.2:7070", "[2001:db8::1]:7070"}[(n/3)%3])
				e.NetNS = []uint32{4026531833, 4026532001}[(n/5)%2]
				// The task: a pid that renames itself, and another in its cache slot.
				ctx := []struct {
					pid  uint32
					comm string
				}{{10, "client"}, {10, "renamed"}, {10 + 256, "client"} /* 256 slots */, {11, `q"uote`}}[n%4]
				e.PID = ctx.pid
				copy(e.Comm[:], ctx.comm)
				tr := &timeline.Transition{Event: e, PrevStateNs: int64(n) - 1,
					Cause: timeline.Cause{Kind: timeline.CauseKind(n % (numCauseKinds + 1)), FD: 3, PID: 10}, Owners: owners}
				n++
				if err := w.WriteTransition(tr, wall+int64(n)); err != nil {
					t.Fatal(err)
				}
				want = AppendTransition(want, tr, wall+int64(n))
				// A call on the socket, now and then with another local port.
				call := *e
				call.Kind, call.Call, call.FD = event.KindCall, event.CallAccept, 5
				if n%3 == 0 {
					call.Local = netip.MustParseAddrPort("127.0.0.1:10002")
				}
				if err := w.WriteCall(&call, wall+int64(n), owners); err != nil {
					t.Fatal(err)
				}
				want = appendCall(want, &call, wall+int64(n), owners, freshCache())
			}
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		got, exp := strings.Split(out.String(), "\n"), strings.Split(string(want), "\n")
		for i := range min(len(got), len(exp)) {
			if got[i] != exp[i] {
				t.Fatalf("line %d:\n got  %s\n want %s", i, got[i], exp[i])
			}
		}
		t.Fatalf("%d lines, want %d", len(got), len(exp))
	}
}
