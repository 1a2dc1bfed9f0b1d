package tracer

import (
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer/socktable"
)

// hostTable is the host's socket table.
type hostTable struct {
	own    uint32
	conn   *socktable.Conn
	failed atomic.Uint64
}

// NewHostTable returns the socket table of the host.
func NewHostTable() SocketTable {
	var st unix.Stat_t
	t := &hostTable{}
	if err := unix.Stat("/proc/self/ns/net", &st); err == nil {
		t.own = uint32(st.Ino)
	}
	return t
}

func (t *hostTable) Namespaces() ([]uint32, error) { return []uint32{t.own}, nil }

func (t *hostTable) Dump(netns uint32, keep func(*socktable.Entry) bool) ([]socktable.Entry, error) {
	if netns != t.own {
		t.failed.Add(1)
		return nil, fmt.Errorf("network namespace %d: %w", netns, os.ErrNotExist)
	}
	var out []socktable.Entry
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		es, err := socktable.DumpFunc(fam, socktable.AllStates, keep)
		if err != nil {
			t.failed.Add(1)
			return nil, err
		}
		out = append(out, es...)
	}
	for i := range out {
		out[i].NetNS = t.own
	}
	return out, nil
}

func (t *hostTable) Lookup(netns uint32, local, remote netip.AddrPort) (*socktable.Entry, error) {
	if netns != t.own {
		t.failed.Add(1)
		return nil, fmt.Errorf("network namespace %d: %w", netns, os.ErrNotExist)
	}
	if t.conn == nil {
		c, err := socktable.Open()
		if err != nil {
			t.failed.Add(1)
			return nil, err
		}
		t.conn = c
	}
	e, err := t.conn.Lookup(local, remote)
	if err != nil {
		t.failed.Add(1)
		return nil, err
	}
	if e != nil {
		e.NetNS = t.own
	}
	return e, nil
}

func (t *hostTable) Hint(netns, pid uint32) {}

func (t *hostTable) Failed() uint64 { return t.failed.Load() }

func (t *hostTable) Close() error {
	if t.conn != nil {
		return t.conn.Close()
	}
	return nil
}
