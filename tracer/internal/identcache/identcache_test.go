package identcache

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/tcptrail/tcptrail/tracer/event"
)

func TestAppend(t *testing.T) {
	formats := 0
	format := func(b []byte, e *event.Event) []byte {
		formats++
		b = fmt.Appendf(b, "%d %d %s %s|", e.Cookie, e.NetNS, e.Local, e.Remote)
		if e.Local.Addr().Is6() {
			b = fmt.Appendf(b, "%s %s|", e.Local, e.Remote) // over maxText
		}
		return b
	}
	ap := netip.MustParseAddrPort
	v6 := ap("[2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535")
	events := []struct {
		e      event.Event
		cached bool
	}{
		// A client's first transition: no local port yet.
		{event.Event{Cookie: 7, NetNS: 1, Local: ap("10.0.0.1:0"), Remote: ap("10.0.0.2:80")}, false},
		{event.Event{Cookie: 7, NetNS: 1, Local: ap("10.0.0.1:41000"), Remote: ap("10.0.0.2:80")}, false},
		{event.Event{Cookie: 7, NetNS: 1, Local: ap("10.0.0.1:41000"), Remote: ap("10.0.0.2:80")}, true},
		// Another namespace, same id and addresses.
		{event.Event{Cookie: 7, NetNS: 2, Local: ap("10.0.0.1:41000"), Remote: ap("10.0.0.2:80")}, false},
		// The same slot, another socket.
		{event.Event{Cookie: 7 + slots, NetNS: 2, Local: ap("10.0.0.1:41000"), Remote: ap("10.0.0.2:80")}, false},
		{event.Event{Cookie: 7, NetNS: 2, Local: ap("10.0.0.1:41000"), Remote: ap("10.0.0.2:80")}, false},
		{event.Event{Cookie: 7, NetNS: 2, Local: ap("10.0.0.1:41000"), Remote: ap("10.0.0.2:80")}, true},
		// Too long to keep.
		{event.Event{Cookie: 9, NetNS: 4026531840, Local: v6, Remote: v6}, false},
		{event.Event{Cookie: 9, NetNS: 4026531840, Local: v6, Remote: v6}, false},
		// No id: nothing to key on.
		{event.Event{Local: ap("10.0.0.1:1"), Remote: ap("10.0.0.2:2")}, false},
		{event.Event{Local: ap("10.0.0.1:1"), Remote: ap("10.0.0.2:2")}, false},
	}
	var c Cache
	for i, tc := range events {
		before := formats
		got := c.Append([]byte("prefix "), &tc.e, format)
		if want := format([]byte("prefix "), &tc.e); !bytes.Equal(got, want) {
			t.Fatalf("event %d: %q, want %q", i, got, want)
		}
		formats--
		if cached := formats == before; cached != tc.cached {
			t.Errorf("event %d: cached %v, want %v", i, cached, tc.cached)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	var c Cache
	e := event.Event{Cookie: 7, NetNS: 1, Local: netip.MustParseAddrPort("127.0.0.1:41000"), Remote: netip.MustParseAddrPort("127.0.0.1:7070")}
	format := func(b []byte, e *event.Event) []byte { return e.Remote.AppendTo(e.Local.AppendTo(b)) }
	buf := make([]byte, 0, 256)
	for b.Loop() {
		buf = c.Append(buf[:0], &e, format)
	}
}
