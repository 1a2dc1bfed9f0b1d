package identcache

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// The kept text is the text afresh, whatever the sequence of addresses,
// roles, zones, ports and of the two forms.
func TestAddrsMatchAppendTo(t *testing.T) {
	addrs := []netip.Addr{
		netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("10.1.2.3"),
		netip.MustParseAddr("::1"), netip.MustParseAddr("fe80::1%eth0"), netip.MustParseAddr("fe80::1%eth1"),
		netip.MustParseAddr("::ffff:10.1.2.3"), netip.MustParseAddr("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff"),
		{},
	}
	var c Addrs
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := range 5000 {
		a := addrs[rnd.IntN(len(addrs))]
		role := Role(rnd.IntN(2))
		if rnd.IntN(2) == 0 {
			if got, want := string(c.Append([]byte("x"), role, a)), "x"+string(a.AppendTo(nil)); got != want {
				t.Fatalf("%d: %q, want %q", i, got, want)
			}
			continue
		}
		ap := netip.AddrPortFrom(a, uint16(i*37))
		if got, want := string(c.AppendWithPort([]byte("x"), role, ap)), "x"+string(ap.AppendTo(nil)); got != want {
			t.Fatalf("%d: %q, want %q", i, got, want)
		}
	}
}
