package identcache

import (
	"net/netip"
	"strconv"
)

// Role says which end of a socket an address is: each keeps its own
// entry, since a server's lines repeat their local address and a client's
// their remote one.
type Role int

const (
	Local Role = iota
	Remote
)

// Addrs keeps the text of the addresses last written, one per role, for
// identities not in the Cache yet: every socket's first transition, and a
// client's again once its port is bound. The zero value is ready to use;
// a nil *Addrs formats afresh.
type Addrs struct {
	slots [2]addrSlot
}

type addrSlot struct {
	addr     netip.Addr
	withPort bool  // the text is an AddrPort's, up to its port
	n        uint8 // 0: none yet
	text     [56]byte
}

// Append appends a as a.AppendTo does.
func (c *Addrs) Append(b []byte, role Role, a netip.Addr) []byte {
	if c == nil {
		return a.AppendTo(b)
	}
	s := &c.slots[role&1]
	if s.n > 0 && !s.withPort && s.addr == a {
		return append(b, s.text[:s.n]...)
	}
	start := len(b)
	b = a.AppendTo(b)
	s.keep(a, false, b[start:])
	return b
}

// AppendWithPort appends ap as ap.AppendTo does ("10.0.0.1:80",
// "[::1]:80").
func (c *Addrs) AppendWithPort(b []byte, role Role, ap netip.AddrPort) []byte {
	if c == nil || !ap.Addr().IsValid() {
		return ap.AppendTo(b) // no address: no text, not even the port
	}
	a := ap.Addr()
	s := &c.slots[role&1]
	if s.n > 0 && s.withPort && s.addr == a {
		b = append(b, s.text[:s.n]...)
	} else {
		// The text up to the port is that of the address with port 0,
		// its last digit dropped.
		start := len(b)
		b = netip.AddrPortFrom(a, 0).AppendTo(b)
		b = b[:len(b)-1]
		s.keep(a, true, b[start:])
	}
	return strconv.AppendUint(b, uint64(ap.Port()), 10)
}

func (s *addrSlot) keep(a netip.Addr, withPort bool, text []byte) {
	if len(text) == 0 || len(text) > len(s.text) {
		s.n = 0
		return
	}
	s.addr, s.withPort = a, withPort
	s.n = uint8(copy(s.text[:], text))
}
