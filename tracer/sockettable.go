package tracer

import (
	"net/netip"

	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// SocketTable is the kernel's socket table as the diagnoser asks it: in the
// socket's own network namespace, since a namespace sees only its sockets
// and namespaces reuse each other's addresses. Failed queries are counted:
// a diagnosis made without the table says so.
type SocketTable interface {
	// Namespaces lists the network namespaces to look for sockets in.
	Namespaces() ([]uint32, error)
	// Dump lists the TCP sockets (both families) of netns in the states
	// of the mask (bit n: state n; a timewait socket's is its substate;
	// socktable.WithTCPInfo asks for tcp_info too) and ports that keep
	// accepts, with Entry.NetNS set. ports is applied in the kernel where
	// it can be: the sockets it leaves out never reach keep.
	Dump(netns uint32, states uint32, ports socktable.Ports, keep func(*socktable.Entry) bool) ([]socktable.Entry, error)
	// Lookup finds the socket with this four-tuple in netns; nil when
	// there is none.
	Lookup(netns uint32, local, remote netip.AddrPort) (*socktable.Entry, error)
	// Hint says that process pid lives in netns: a way in.
	Hint(netns, pid uint32)
	// Gone reports whether netns no longer exists (and its sockets with
	// it). False when that cannot be told.
	Gone(netns uint32) bool
	// Failed is how many queries failed so far.
	Failed() uint64
	Close() error
}
