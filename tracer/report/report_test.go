package report

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The fixtures:
//   - story.jsonl: the story with the buggy client: it never closes, its
//     retry's bind fails with EADDRINUSE, its exit closes the socket; the
//     server's end goes through timewait until the timewait socket is gone.
//   - retry.jsonl: a capture of the story recorded by 'tcptrail trace': the
//     buggy client, then the fixed client whose two connections reuse the
//     same four-tuple while the previous server end is in timewait.
func load(t testing.TB, name string) *Capture {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := Load(f)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return c
}

// path is a socket's timeline as "OLD>NEW" for transitions, "call:NAME" for
// calls and "snap:REASON:STATE" for snapshots.
func path(s *Socket) string {
	var parts []string
	for _, x := range s.Steps() {
		switch x.Kind {
		case StepTransition:
			parts = append(parts, x.Old.String()+">"+x.New.String())
		case StepCall:
			parts = append(parts, "call:"+x.Call)
		case StepSnapshot:
			parts = append(parts, "snap:"+x.Reason+":"+x.New.String())
		}
	}
	return strings.Join(parts, " ")
}

func TestStoryTimelines(t *testing.T) {
	c := load(t, "story.jsonl")
	if !c.Complete() || c.Truncated || len(c.Problems) != 0 {
		t.Fatalf("complete %v, truncated %v, problems %v", c.Complete(), c.Truncated, c.Problems)
	}
	if len(c.Conns) != 1 || len(c.Listeners) != 1 || len(c.Others) != 1 {
		t.Fatalf("%d connections, %d listeners, %d others; want 1 of each", len(c.Conns), len(c.Listeners), len(c.Others))
	}
	conn := c.Conns[0]
	if conn.Client == nil || conn.Server == nil || conn.Client.Cookie != 8193 || conn.Server.Cookie != 8194 {
		t.Fatalf("connection ends %+v %+v, want client 8193 and server 8194", conn.Client, conn.Server)
	}
	if got := conn.Name(); got != "127.0.0.1:10001 → 127.0.0.1:7070" {
		t.Errorf("connection %q", got)
	}
	tests := []struct {
		sock *Socket
		role Role
		want string
	}{
		{conn.Client, RoleClient, "CLOSE>SYN_SENT SYN_SENT>ESTABLISHED ESTABLISHED>CLOSE_WAIT CLOSE_WAIT>LAST_ACK LAST_ACK>CLOSE"},
		{conn.Server, RoleServer, "LISTEN>SYN_RECV SYN_RECV>ESTABLISHED call:accept ESTABLISHED>FIN_WAIT1 FIN_WAIT1>FIN_WAIT2 FIN_WAIT2>CLOSE " +
			"snap:timewait:FIN_WAIT2 snap:timewait:TIME_WAIT snap:timewait_gone:TIME_WAIT"},
		{c.Listeners[0], RoleListener, "CLOSE>LISTEN"},
		{c.Others[0], RoleUnknown, "call:bind call:close"},
	}
	for _, tt := range tests {
		if got := path(tt.sock); got != tt.want {
			t.Errorf("cookie %d:\n got %s\nwant %s", tt.sock.Cookie, got, tt.want)
		}
		if tt.sock.Role != tt.role {
			t.Errorf("cookie %d is a %s, want %s", tt.sock.Cookie, tt.sock.Role, tt.role)
		}
	}

	// Causes, owners and times as recorded.
	steps := conn.Client.Steps()
	cw := steps[2]
	if cw.New != event.CloseWait || cw.Cause != "peer closed (FIN)" || cw.PID != 4100 || cw.Comm != "server" ||
		len(cw.Owners) != 1 || cw.Owners[0].PID != 4200 || cw.PrevStateNs != 268766 {
		t.Errorf("ESTABLISHED>CLOSE_WAIT step %+v", cw)
	}
	if got := c.Offset(cw.MonoNs); got != 500330*time.Microsecond {
		t.Errorf("CLOSE_WAIT at %v, want 500.33ms", got)
	}
	if !conn.Client.EverIn(event.CloseWait) || conn.Client.EverIn(event.TimeWait) ||
		!conn.Server.EverIn(event.TimeWait) || conn.Server.EverIn(event.Listen) {
		t.Error("EverIn: an accepted socket inherits LISTEN but was never in it; timewait states count")
	}
	if exits := c.ExitsOf(4200); len(exits) != 1 || exits[0].Comm != "client" {
		t.Errorf("exits of 4200: %+v", exits)
	}

	// Diagnoses: the leak with both its records (the summary repeats the
	// last), the bind conflict naming the failed socket and the holder.
	if len(c.Diagnoses) != 2 {
		t.Fatalf("%d diagnoses, want 2", len(c.Diagnoses))
	}
	leak, bind := c.Diagnoses[0], c.Diagnoses[1]
	if leak.Kind != record.TypeLeak || len(leak.Leak) != 2 || leak.Leak[0].Phase != "stuck" || leak.Leak[1].Phase != "closed_by_exit" {
		t.Errorf("leak diagnosis %+v", leak)
	}
	if bind.Kind != record.TypeBindConflict || len(bind.Sockets) != 2 || bind.Sockets[0] != c.Others[0] || bind.Sockets[1] != conn.Client {
		t.Errorf("bind conflict names sockets %v", bind.Sockets)
	}
	if !conn.Leaked() || !conn.Client.Leaked() || conn.Server.Leaked() {
		t.Error("the client's end leaked, the server's did not")
	}
}

func TestPairingReusedFourTuple(t *testing.T) {
	c := load(t, "retry.jsonl")
	want := [][2]uint64{{4110, 4111}, {9, 10}, {4112, 4113}}
	if len(c.Conns) != len(want) {
		t.Fatalf("%d connections, want %d", len(c.Conns), len(want))
	}
	for i, w := range want {
		conn := c.Conns[i]
		if conn.ID != i+1 || conn.Client == nil || conn.Server == nil || conn.Client.Cookie != w[0] || conn.Server.Cookie != w[1] {
			t.Errorf("connection %d: %+v, want client %d and server %d", i+1, conn, w[0], w[1])
			continue
		}
		if conn.Client.Conn != conn || conn.Server.Conn != conn {
			t.Errorf("connection %d: sockets do not point back to it", i+1)
		}
	}
	// The first server end was in timewait when the second connection
	// started on the same four-tuple: a new connection replaced it.
	first := c.Conns[0].Server
	if first.GoneNs == 0 || first.GoneNs != c.Conns[1].Client.FirstNs {
		t.Errorf("first server end gone at %d, second connection started at %d", first.GoneNs, c.Conns[1].Client.FirstNs)
	}
}

// An IPv4 client of a dual-stack server sees ::ffff:a.b.c.d on the server's
// side; the ends still pair. A socket whose peer was not traced is a
// connection on its own.
func TestPairingMappedAndUnpaired(t *testing.T) {
	b := NewBuilder(Options{})
	add := func(rec any) {
		if err := b.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	add(&record.Header{Type: record.TypeHeader, Schema: 1, StartMonoNs: 1000})
	tr := func(mono, cookie uint64, la string, lp uint16, ra string, rp uint16, old, nw string) *record.Transition {
		return &record.Transition{Type: record.TypeTransition, MonoNs: mono,
			Socket: record.Socket{Cookie: cookie, Family: "ipv4", Laddr: la, Lport: lp, Raddr: ra, Rport: rp}, Old: old, New: nw}
	}
	add(tr(2000, 1, "10.0.0.1", 0, "10.0.0.2", 443, "CLOSE", "SYN_SENT")) // no local port yet
	add(tr(2100, 1, "10.0.0.1", 40000, "10.0.0.2", 443, "SYN_SENT", "ESTABLISHED"))
	add(tr(2050, 2, "::ffff:10.0.0.2", 443, "::ffff:10.0.0.1", 40000, "LISTEN", "SYN_RECV"))
	add(tr(2200, 3, "10.0.0.1", 40001, "10.0.0.9", 80, "CLOSE", "SYN_SENT"))
	add(tr(3000, 3, "10.0.0.1", 40001, "10.0.0.9", 80, "SYN_SENT", "CLOSE"))
	c := b.Finish()
	if len(c.Conns) != 2 {
		t.Fatalf("%d connections, want 2", len(c.Conns))
	}
	if a := c.Conns[0]; a.Client == nil || a.Client.Cookie != 1 || a.Server == nil || a.Server.Cookie != 2 {
		t.Errorf("mapped pair: %+v", a)
	}
	if got := c.Conns[0].Client.Local.String(); got != "10.0.0.1:40000" {
		t.Errorf("client's local address %s: the later non-zero port wins", got)
	}
	if u := c.Conns[1]; u.Client == nil || u.Client.Cookie != 3 || u.Server != nil {
		t.Errorf("unpaired: %+v", u)
	}
}

// The text report of the story is a netstat walk-through: every state of
// both ends in time order with its duration, cause and owners, then the
// diagnoses. The golden file is the whole of it; the checks below are what
// a reader looks for.
func TestStoryText(t *testing.T) {
	c := load(t, "story.jsonl")
	sel, err := c.Select(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteText(&out, c, sel, "story.jsonl"); err != nil {
		t.Fatal(err)
	}
	golden(t, "story.txt", out.Bytes())
	text := out.String()
	for i, l := range strings.Split(text, "\n") {
		if n := utf8.RuneCountInString(l); n > TextWidth {
			t.Errorf("line %d is %d columns wide, more than %d: %q", i+1, n, TextWidth, l)
		}
	}
	inOrder(t, text,
		"━━ Connection 1: 127.0.0.1:10001 → 127.0.0.1:7070 · LEAK, BIND CONFLICT",
		"client 127.0.0.1:10001", "server 127.0.0.1:7070",
		"+0.500000000", "● SYN_SENT      for 61.234µs", "connect(fd 3)",
		"● ESTABLISHED   for 268.766µs",
		"● SYN_RECV      for 3.5µs", "SYN received", "ran in client[4200]",
		"◦ accept() = fd 7", "owners: server[4100] fd 7",
		"● FIN_WAIT1     for 60µs", "close(fd 7)",
		"● CLOSE_WAIT    for 2.49968s", "peer closed (FIN)", "ran in server[4100]",
		"● FIN_WAIT2     for 5µs",
		"● CLOSE", "handed to timewait",
		"◌ FIN_WAIT2 in a kernel timewait",
		"✕ client[4200] exited",
		"● LAST_ACK      for 40µs", "exit of pid 4200",
		"◌ TIME_WAIT in a kernel timewait",
		"◌ timewait socket gone",
		"━━ Listeners (1)", "listener 127.0.0.1:7070", "● LISTEN        for ≥1m3.9s, to the end",
		"━━ Other sockets (1)", "◦ bind(fd 4) failed: EADDRINUSE",
		"━━ Diagnoses (2)",
		"LEAK", "(cookie 8193, connection 1), in CLOSE_WAIT since", "stuck after 1s", "closed by exit after 2.49968s",
		"BIND CONFLICT", "bind 127.0.0.1:10001 by client[4200] fd 4 failed: EADDRINUSE",
		"held by 127.0.0.1:10001 → 127.0.0.1:7070 (cookie 8193, connection 1)", "CLOSE_WAIT for 1.00067s",
	)
	if strings.Contains(text, "CUT SHORT") {
		t.Error("a complete capture reported as cut short")
	}
}

// inOrder checks that each of want appears in text after the one before.
func inOrder(t *testing.T, text string, want ...string) {
	t.Helper()
	rest := text
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("report lacks %q after the previous items (or at all)", w)
			return
		}
		rest = rest[i+len(w):]
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs at line %d (go test -update rewrites it):\n got %q\nwant %q", path, i+1, g, w)
			}
		}
	}
}

func TestFilters(t *testing.T) {
	story, retry := load(t, "story.jsonl"), load(t, "retry.jsonl")
	at := func(c *Capture, d time.Duration) When { return At(c.Header.StartTime.Add(d)) }
	tests := []struct {
		name  string
		c     *Capture
		f     Filter
		conns []int // ids
		// counts of listeners, others and diagnoses selected
		listeners, others, diags int
	}{
		{"everything", retry, Filter{}, []int{1, 2, 3}, 1, 0, 2},
		{"port of both ends", retry, Filter{Ports: []uint16{10001}}, []int{1, 2, 3}, 0, 0, 2},
		{"port of the server", retry, Filter{Ports: []uint16{7070}}, []int{1, 2, 3}, 1, 0, 2},
		{"port of nothing", retry, Filter{Ports: []uint16{9}}, nil, 0, 0, 0},
		{"buggy client's pid", retry, Filter{PIDs: []uint32{9269}}, []int{1}, 0, 0, 2},
		{"fixed client's pid", retry, Filter{PIDs: []uint32{9274}}, []int{2, 3}, 0, 0, 0},
		{"server's pid owns all", retry, Filter{PIDs: []uint32{9263}}, []int{1, 2, 3}, 1, 0, 2},
		{"ever in CLOSE_WAIT", retry, Filter{States: []event.State{event.CloseWait}}, []int{1, 2, 3}, 0, 0, 2},
		{"ever in FIN_WAIT2 or LISTEN", retry, Filter{States: []event.State{event.FinWait2, event.Listen}}, []int{1, 2, 3}, 1, 0, 2},
		{"never in SYN_SENT alone", story, Filter{States: []event.State{event.Closing}}, nil, 0, 0, 0},
		{"leaks only", retry, Filter{LeaksOnly: true}, []int{1}, 0, 0, 2},
		{"leaks only on a port", story, Filter{Ports: []uint16{10001}, LeaksOnly: true}, []int{1}, 0, 0, 2},
		{"window after the first connection", retry, Filter{Since: After(1500 * time.Millisecond)}, []int{2, 3}, 1, 0, 0},
		{"window before anything", retry, Filter{Until: After(10 * time.Millisecond)}, nil, 0, 0, 0},
		{"window by wall clock", retry, Filter{Since: at(retry, 2*time.Second), Until: at(retry, 2500*time.Millisecond)}, []int{2, 3}, 1, 0, 0},
		{"the bind conflict's moment", story, Filter{Since: After(1500 * time.Millisecond), Until: After(1600 * time.Millisecond)}, []int{1}, 1, 1, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sel, err := tt.c.Select(tt.f)
			if err != nil {
				t.Fatal(err)
			}
			var ids []int
			for _, c := range sel.Conns {
				ids = append(ids, c.ID)
			}
			if !slices.Equal(ids, tt.conns) {
				t.Errorf("connections %v, want %v", ids, tt.conns)
			}
			if len(sel.Listeners) != tt.listeners || len(sel.Others) != tt.others || len(sel.Diagnoses) != tt.diags {
				t.Errorf("%d listeners, %d others, %d diagnoses; want %d, %d, %d",
					len(sel.Listeners), len(sel.Others), len(sel.Diagnoses), tt.listeners, tt.others, tt.diags)
			}
		})
	}
	if _, err := retry.Select(Filter{Since: After(2 * time.Second), Until: After(time.Second)}); err == nil {
		t.Error("an empty window is not refused")
	}
}

// A window shows only the steps inside it, after the state it opens on.
func TestWindowText(t *testing.T) {
	c := load(t, "story.jsonl")
	sel, err := c.Select(Filter{Since: After(time.Second), Until: After(5 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteText(&out, c, sel, "story.jsonl"); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	inOrder(t, text, "from +1.000000000 to +5.000000000",
		"+1.000000000", "⋮ CLOSE_WAIT since +0.500330000", "⋮ FIN_WAIT2 (timewait) since +0.750000000", "✕ client[4200] exited", "● LAST_ACK")
	if strings.Contains(text, "● SYN_SENT") || strings.Contains(text, "timewait socket gone") {
		t.Error("steps outside the window are shown")
	}
}

func TestParseWhenAndState(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string
		err  string
	}{
		{"90s", "+1m30s", ""},
		{"+1.5s", "+1.5s", ""},
		{"2025-11-24T05:30:01.5Z", "2025-11-24T05:30:01.5Z", ""},
		{"-1s", "", "cannot be negative"},
		{"yesterday", "", "neither an RFC 3339 time"},
	} {
		w, err := ParseWhen(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseWhen(%q): %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || w.String() != tt.want {
			t.Errorf("ParseWhen(%q) = %q, %v; want %q", tt.in, w, err, tt.want)
		}
	}
	for in, want := range map[string]event.State{"close_wait": event.CloseWait, "TIME-WAIT": event.TimeWait, "timewait": event.TimeWait, "LISTEN": event.Listen} {
		if got, err := ParseStateName(in); err != nil || got != want {
			t.Errorf("ParseStateName(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseStateName("NEW_SYN_RECV"); err == nil {
		t.Error("a state no socket reports is accepted")
	}
}

// Bad files give a partial capture where they can and an error naming the
// line; never a panic.
func TestBadFiles(t *testing.T) {
	good, err := os.ReadFile("testdata/story.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	ls := strings.SplitAfter(string(good), "\n")
	join := func(parts ...string) string { return strings.Join(parts, "") }
	tests := []struct {
		name     string
		file     string
		is       error // wrapped by the error; nil: no sentinel
		err      string
		conns    int
		complete bool
	}{
		{"killed between records", join(ls[:15]...), nil, "", 1, false},
		{"killed mid-line", join(ls[:15]...) + ls[15][:30], capture.ErrTruncated, "line 16: the last line is cut short", 1, false},
		{"not JSON in the middle", join(join(ls[:5]...), "#garbage\n", join(ls[5:]...)), capture.ErrNotJSON, "line 6: not JSON", 1, true},
		{"unknown record type", join(join(ls[:5]...), `{"type":"wormhole"}`+"\n", join(ls[5:]...)), capture.ErrUnknownType, `line 6: unknown record type "wormhole"`, 1, true},
		{"unknown state", join(join(ls[:3]...), strings.Replace(ls[3], `"new":"ESTABLISHED"`, `"new":"DANCING"`, 1), join(ls[4:]...)), nil, `line 4: unknown TCP state "DANCING"`, 1, true},
		{"newer schema", strings.Replace(string(good), `"schema":1`, `"schema":7`, 1), capture.ErrSchemaTooNew, "line 1:", 0, false},
		{"another tool's JSON", "{\"level\":\"info\"}\n{\"level\":\"warn\"}\n", capture.ErrNotCapture, "line 1:", 0, false},
		{"not JSON at all", "\x7fELF\x02\x01\x01\x00\n", capture.ErrNotCapture, "line 1:", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Load(strings.NewReader(tt.file))
			if c == nil {
				t.Fatal("no capture")
			}
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("error %v, want one saying %q", err, tt.err)
			case tt.is != nil && !errors.Is(err, tt.is):
				t.Errorf("error %v does not wrap %v", err, tt.is)
			}
			if len(c.Conns) != tt.conns || c.Complete() != tt.complete {
				t.Errorf("%d connections, complete %v; want %d, %v", len(c.Conns), c.Complete(), tt.conns, tt.complete)
			}
			// Whatever was read renders.
			sel, _ := c.Select(Filter{})
			var out bytes.Buffer
			if err := WriteText(&out, c, sel, "bad"); err != nil {
				t.Fatal(err)
			}
			if !tt.complete && tt.conns > 0 && !strings.Contains(out.String(), "CUT SHORT") {
				t.Error("a capture without its summary is not reported as cut short")
			}
			if err := WriteHTML(&out, c, sel, "bad", HTMLOptions{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Long timelines keep their start and their end; the capture's budget
// stops keeping steps but not counting them.
func TestBounds(t *testing.T) {
	b := NewBuilder(Options{MaxStepsPerSocket: 10, MaxSteps: 25})
	b.Add(&record.Header{Type: record.TypeHeader, Schema: 1, StartMonoNs: 0})
	b.Add(&record.Transition{Type: record.TypeTransition, MonoNs: 1, Socket: record.Socket{Cookie: 1, Laddr: "127.0.0.1", Lport: 80}, Old: "CLOSE", New: "LISTEN"})
	for i := range 100 {
		b.Add(&record.Call{Type: record.TypeCall, MonoNs: uint64(10 + i), Call: "accept", FD: int32(i),
			Socket: record.Socket{Cookie: 1, Laddr: "127.0.0.1", Lport: 80}})
	}
	b.Add(&record.Transition{Type: record.TypeTransition, MonoNs: 200, Socket: record.Socket{Cookie: 1}, Old: "LISTEN", New: "CLOSE"})
	// A second socket once the budget (25) is spent: 1+10 kept for the first.
	for i := range 20 {
		b.Add(&record.Call{Type: record.TypeCall, MonoNs: uint64(300 + i), Call: "accept", FD: int32(i), Socket: record.Socket{Cookie: 2, Laddr: "127.0.0.1", Lport: 81}})
	}
	c := b.Finish()
	l := c.Listeners[0]
	steps := l.Steps()
	if len(steps) != 10 || l.Omitted != 92 || l.OmittedAt() != 5 {
		t.Fatalf("%d steps kept, %d omitted at %d; want 10, 92 at 5", len(steps), l.Omitted, l.OmittedAt())
	}
	if steps[0].New != event.Listen || steps[4].FD != 3 || steps[5].FD != 96 || steps[9].New != event.Close {
		t.Errorf("kept the wrong steps: first %+v, before the cut FD %d, after FD %d, last %+v", steps[0], steps[4].FD, steps[5].FD, steps[9])
	}
	if l.Transitions != 2 || l.State != event.Close {
		t.Errorf("totals: %d transitions, state %v", l.Transitions, l.State)
	}
	second := c.Sockets[1]
	if got := len(second.Steps()); got != 10 || second.Omitted != 10 {
		t.Errorf("second socket: %d steps kept, %d omitted; the budget of 25 leaves 15", got, second.Omitted)
	}
	if c.OmittedSteps != 102 {
		t.Errorf("%d steps omitted in all, want 102", c.OmittedSteps)
	}
	sel, _ := c.Select(Filter{})
	var out bytes.Buffer
	WriteText(&out, c, sel, "bounds")
	inOrder(t, out.String(), "OMITTED", "● LISTEN", "accept() = fd 3", "… 92 steps omitted …", "accept() = fd 96", "● CLOSE")
}

// Records handed to a Builder straight from a tracer tell the same story
// as the same records written to a capture and loaded back: what the live
// view and a replay must agree on.
func TestBuilderMatchesLoad(t *testing.T) {
	data, err := os.ReadFile("testdata/retry.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	// "Live": decode each line into a fresh record, as a tracer builds them.
	b := NewBuilder(Options{})
	rd := capture.NewReader(bytes.NewReader(data))
	for {
		rec, err := rd.Next()
		if err != nil {
			break
		}
		if err := b.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	live := b.Finish()
	replay := load(t, "retry.jsonl")
	if len(live.Conns) != len(replay.Conns) {
		t.Fatalf("%d live connections, %d replayed", len(live.Conns), len(replay.Conns))
	}
	for i := range live.Conns {
		for j, s := range live.Conns[i].Ends() {
			r := replay.Conns[i].Ends()[j]
			if fmt.Sprint(s.Steps()) != fmt.Sprint(r.Steps()) {
				t.Errorf("connection %d end %d differs:\nlive   %v\nreplay %v", i+1, j, s.Steps(), r.Steps())
			}
		}
	}
}

// The capture line says how the syscalls were hooked when the capture does:
// what the traced host paid for the trace.
func TestAttachedWithSaysHowTheSyscallsWereHooked(t *testing.T) {
	for _, c := range []struct {
		attach, hooks, want string
	}{
		{"tp_btf", "", "tp_btf"},
		{"", "", "-"},
		{"tp_btf", "function", "tp_btf, syscalls through fentry/fexit"},
		{"tp_btf", "syscall-tracepoint", "tp_btf, syscalls through the syscall tracepoints"},
		{"tp_btf", "tracepoint", "tp_btf, syscalls through the raw_syscalls tracepoints"},
		{"tp_btf", "kprobe", "tp_btf, syscalls through kprobe"},
	} {
		if got := attachedWith(&record.Header{Attach: c.attach, SyscallHooks: c.hooks}); got != c.want {
			t.Errorf("attach %q, hooks %q: %q, want %q", c.attach, c.hooks, got, c.want)
		}
	}
}
