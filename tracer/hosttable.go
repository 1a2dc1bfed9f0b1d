package tracer

import (
	"errors"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// hostTable is the socket table of every network namespace on the host,
// each asked in its own namespace.
type hostTable struct {
	ns *socktable.Namespaces
}

// NewHostTable returns the socket table of the host's namespaces.
func NewHostTable() (SocketTable, error) {
	ns, err := socktable.NewNamespaces()
	if err != nil {
		return nil, err
	}
	return &hostTable{ns: ns}, nil
}

func (t *hostTable) Namespaces() ([]uint32, error) { return t.ns.List() }

func (t *hostTable) Dump(netns uint32, states uint32, ports socktable.Ports, keep func(*socktable.Entry) bool) ([]socktable.Entry, error) {
	var out []socktable.Entry
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		es, err := t.ns.DumpFunc(netns, fam, states, ports, keep)
		if err != nil {
			return nil, err
		}
		out = append(out, es...)
	}
	return out, nil
}

func (t *hostTable) Lookup(netns uint32, local, remote netip.AddrPort) (*socktable.Entry, error) {
	return t.ns.Lookup(netns, local, remote)
}

func (t *hostTable) Hint(netns, pid uint32) { t.ns.Hint(netns, pid) }

func (t *hostTable) Gone(netns uint32) bool {
	_, err := t.ns.Conn(netns)
	return errors.Is(err, socktable.ErrNamespaceGone)
}
func (t *hostTable) Failed() uint64 { return t.ns.Failed() }
func (t *hostTable) Close() error   { return t.ns.Close() }
