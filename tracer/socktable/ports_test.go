package socktable

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPortsFilteredInTheKernel has the kernel run the port filters over a
// real table: each dump holds exactly the sockets Match selects from the
// whole table (timewait sockets too), and what the filter leaves out never
// reaches user space at all.
func TestPortsFilteredInTheKernel(t *testing.T) {
	var ports []uint16
	var lns []net.Listener
	for range 3 {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		lns = append(lns, ln)
		ports = append(ports, netip.MustParseAddrPort(ln.Addr().String()).Port())
	}
	// An open connection to the first listener, and one its client closed
	// first: that end waits in TIME_WAIT.
	open, err := net.Dial("tcp4", lns[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	accepted, err := lns[0].Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer accepted.Close()
	closed, err := net.Dial("tcp4", lns[0].Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	closedPort := netip.MustParseAddrPort(closed.LocalAddr().String()).Port()
	peer, err := lns[0].Accept()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	peer.Read(make([]byte, 1)) // EOF: the client's FIN is here
	peer.Close()

	c, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dump := func(p Ports) (sent []Entry) {
		t.Helper()
		req := inetDiagReqV2{Family: unix.AF_INET, Protocol: unix.IPPROTO_TCP, States: AllStates}
		req.ID.Cookie = [2]uint32{inetDiagNoCookie, inetDiagNoCookie}
		// No fallback to matching here: a filter the kernel refused fails.
		bc := p.bytecode()
		c.mu.Lock()
		defer c.mu.Unlock()
		_, _, err := c.queryLocked(&req, unix.NLM_F_DUMP, bc, bc == nil && len(p.List) > 0, p, func(e *Entry) bool {
			sent = append(sent, *e)
			return false
		})
		if err != nil {
			t.Fatalf("dump of %+v: %v", p, err)
		}
		return sent
	}
	deadline := time.Now().Add(5 * time.Second)
	for !slices.ContainsFunc(dump(Ports{}), func(e Entry) bool { return e.Local.Port() == closedPort && e.Timer == 3 }) {
		if time.Now().After(deadline) {
			t.Fatal("the closed client never showed in TIME_WAIT")
		}
		time.Sleep(10 * time.Millisecond)
	}

	ours := func(e *Entry) bool {
		return slices.Contains(ports, e.Local.Port()) || slices.Contains(ports, e.Remote.Port())
	}
	many := make([]uint16, 0, 200)
	for p := uint16(1); len(many) < 199; p++ {
		if !slices.Contains(ports, p) {
			many = append(many, p)
		}
	}
	many = append(many, ports[1])
	for _, c := range []struct {
		name  string
		p     Ports
		count int
	}{
		// The listener, the accepted connection (the other one's server
		// end is gone).
		{"local port of the first listener", LocalPort(ports[0]), 2},
		// Those and the two clients, one in TIME_WAIT.
		{"either end on the first listener's port", EitherPort(ports[:1]), 4},
		{"two idle listeners", EitherPort(ports[1:]), 2},
		{"every port", EitherPort(ports), 6},
		{"a list too long for the kernel's filter", Ports{List: many, LocalOnly: true}, 1},
	} {
		got := dump(c.p)
		var want []Entry
		for _, e := range dump(Ports{}) {
			if ours(&e) && c.p.Match(&e) {
				want = append(want, e)
			}
		}
		if len(got) != c.count || len(want) != c.count {
			t.Errorf("%s: the kernel sent %d sockets, Match selects %d of the table, want %d:\n%+v", c.name, len(got), len(want), c.count, got)
			continue
		}
		for _, e := range got {
			if !slices.ContainsFunc(want, func(w Entry) bool { return w.Cookie == e.Cookie }) {
				t.Errorf("%s: the kernel sent %+v, which Match leaves out", c.name, e)
			}
		}
	}
	if bc := (Ports{List: many}).bytecode(); bc != nil {
		t.Errorf("a list of %d ports compiled to a filter of %d bytes", len(many), len(bc))
	}
}

// nextMessage walks a read of several netlink messages, padded to 4 bytes
// as the kernel pads them, and refuses one whose length runs past the read.
func TestNextMessage(t *testing.T) {
	msg := func(typ uint16, seq uint32, data string) []byte {
		b := make([]byte, 16, 16+len(data)+3)
		binary.NativeEndian.PutUint32(b[0:], uint32(16+len(data)))
		binary.NativeEndian.PutUint16(b[4:], typ)
		binary.NativeEndian.PutUint32(b[8:], seq)
		b = append(b, data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	read := append(append(msg(20, 7, "hello"), msg(20, 7, "abcd")...), msg(unix.NLMSG_DONE, 7, "")...)
	var got []string
	for rest := read; len(rest) > 0; {
		hdr, data, r, err := nextMessage(rest)
		if err != nil {
			t.Fatal(err)
		}
		rest = r
		got = append(got, fmt.Sprintf("%d/%d/%s", hdr.Type, hdr.Seq, data))
	}
	if want := []string{"20/7/hello", "20/7/abcd", "3/7/"}; !slices.Equal(got, want) {
		t.Fatalf("messages %q, want %q", got, want)
	}
	if _, _, _, err := nextMessage(read[:20]); err == nil {
		t.Fatal("a message longer than the read was accepted")
	}
	if _, _, _, err := nextMessage(read[:10]); err == nil {
		t.Fatal("a header cut short was accepted")
	}
}
