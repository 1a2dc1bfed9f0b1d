package tracer

import (
	"time"

	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// portTableReuse is how long the kernel's answer about one local port
// serves the failed binds that follow. Without it a process retrying bind
// in a tight loop has the kernel walk its whole socket table for each
// failure: about 8 ms with a hundred thousand sockets, even with the port
// filtered in the kernel, since no index finds a port's sockets.
const portTableReuse = 500 * time.Millisecond

// portTable keeps the latest answer of the socket table per network
// namespace and local port. It is owned by the query goroutine.
type portTable struct {
	answers map[portKey]portAnswer
	now     func() time.Time // for tests; time.Now when nil
}

type portKey struct {
	netns uint32
	port  uint16
}

type portAnswer struct {
	at      time.Time
	entries []socktable.Entry
}

// sockets lists the sockets of netns whose local port is port: asked of
// table, or from an answer younger than portTableReuse, with its timewait
// timers aged since (those that ran out left). The slice is the caller's.
// A reused answer may miss a socket that took the port since, or name one
// that left it, within portTableReuse.
func (p *portTable) sockets(table SocketTable, netns uint32, port uint16) ([]socktable.Entry, error) {
	now := time.Now()
	if p.now != nil {
		now = p.now()
	}
	if p.answers == nil {
		p.answers = make(map[portKey]portAnswer)
	}
	for k, a := range p.answers {
		if now.Sub(a.at) >= portTableReuse {
			delete(p.answers, k)
		}
	}
	key := portKey{netns, port}
	if a, ok := p.answers[key]; ok {
		age := uint32(now.Sub(a.at).Milliseconds())
		out := make([]socktable.Entry, 0, len(a.entries))
		for _, e := range a.entries {
			// A timewait socket's timer is its end: it ran meanwhile.
			// Other timers (an orphan's retransmits, keepalives) are armed
			// again and again: those sockets stay.
			if e.Timer == timewaitTimer {
				if e.Expires <= age {
					continue
				}
				e.Expires -= age
			}
			out = append(out, e)
		}
		return out, nil
	}
	entries, err := table.Dump(netns, socktable.AllStates, socktable.LocalPort(port), nil)
	if err != nil {
		return nil, err
	}
	p.answers[key] = portAnswer{at: now, entries: entries}
	return append([]socktable.Entry(nil), entries...), nil
}
