// Package identcache keeps the text a sink formats for a socket's identity
// (its id, namespace, addresses and ports) for the socket's next
// transitions. A connection's transitions come within milliseconds of each
// other, and formatting two addresses and ports costs several times more
// than copying the text made for the last transition.
package identcache

import (
	"net/netip"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// slots is the size of the cache, which is direct-mapped by socket id:
// sockets made one after the other (the kernel numbers them in order)
// never share a slot; one that comes back after a thousand others formats
// its identity again.
const slots = 1024

// maxText is the longest text kept; longer (IPv6) identities are formatted
// every time.
const maxText = 128

// Cache is the cache of one sink. The zero value is ready to use.
type Cache struct {
	slots [slots]slot
}

type slot struct {
	cookie        uint64
	netns         uint32
	local, remote netip.AddrPort
	n             uint8
	text          [maxText]byte
}

// Append appends the identity of e's socket as format appends it: copied
// from the last time, if the socket had the same identity then (a client's
// local port is still 0 at its first transition), otherwise formatted and
// kept. format must depend on nothing but the identity.
func (c *Cache) Append(b []byte, e *event.Event, format func([]byte, *event.Event) []byte) []byte {
	s := &c.slots[e.Cookie%slots]
	if s.n > 0 && s.cookie == e.Cookie && s.netns == e.NetNS && s.local == e.Local && s.remote == e.Remote {
		return append(b, s.text[:s.n]...)
	}
	start := len(b)
	b = format(b, e)
	n := len(b) - start
	if e.Cookie == 0 || n == 0 || n > maxText {
		return b
	}
	s.cookie, s.netns, s.local, s.remote = e.Cookie, e.NetNS, e.Local, e.Remote
	s.n = uint8(copy(s.text[:], b[start:]))
	return b
}
