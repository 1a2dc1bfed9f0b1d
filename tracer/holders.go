package tracer

import (
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer/container"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/socktable"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Held is a socket holding a local address right now, as the kernel's
// socket table and /proc tell it, with no tracing history.
type Held struct {
	timeline.Holder
	Cookie uint64
	NetNS  uint32
	Family uint16
}

// HoldersNow lists every socket, in every network namespace, whose local
// address blocks a bind to want (same port; same address, or either one
// the wildcard; want's address may be unspecified for "any"). It needs no
// BPF. Namespaces that cannot be asked are counted in failed.
func HoldersNow(want netip.AddrPort) (held []Held, failed uint64, err error) {
	ns, err := socktable.NewNamespaces()
	if err != nil {
		return nil, 0, err
	}
	defer ns.Close()
	list, err := ns.List()
	if err != nil {
		return nil, 0, fmt.Errorf("list network namespaces: %w", err)
	}
	var entries []socktable.Entry
	for _, netns := range list {
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			es, err := ns.DumpFunc(netns, fam, socktable.AllStates|socktable.WithTCPInfo, socktable.LocalPort(want.Port()), func(e *socktable.Entry) bool { return holds(e.Local, want) })
			if err != nil {
				continue // counted by ns
			}
			entries = append(entries, es...)
		}
	}
	inodes := make(map[uint32]bool)
	for _, e := range entries {
		if e.Inode != 0 {
			inodes[e.Inode] = true
		}
	}
	owners := socktable.OwnersOf(inodes)
	for _, e := range entries {
		h := Held{Cookie: e.Cookie, NetNS: e.NetNS, Family: e.Family, Holder: timeline.Holder{
			Cookie: e.Cookie, Local: e.Local, Remote: e.Remote, State: event.State(e.State), StateNs: -1,
		}}
		for _, o := range owners[e.Inode] {
			var comm [16]byte
			copy(comm[:], o.Comm)
			id, _ := container.OfPID(o.PID)
			h.Owners = append(h.Owners, timeline.Owner{PID: o.PID, FD: o.FD, Comm: comm, Container: id})
		}
		// Timewait sockets have no inode and the timewait timer (3);
		// an orphaned full socket (closed, still finishing) has no
		// inode either, but another timer.
		if e.Inode == 0 && e.Timer == 3 {
			h.Timewait = true
			h.TimerMs = int64(e.Expires)
		}
		h.StateNs, h.StateAtLeast = timeInState(&e, h.Timewait)
		held = append(held, h)
	}
	return held, ns.Failed(), nil
}

// timewaitLen is TCP_TIMEWAIT_LEN: a TIME_WAIT socket's whole life.
const timewaitLen = 60_000

// timeInState is how long a socket has been in its state, as far as the
// kernel's table tells: exactly for TIME_WAIT (its timer starts at 60 s),
// at least the time since the peer's last ACK for CLOSE_WAIT and FIN_WAIT2
// (the segment that put it there was the last to arrive); -1 otherwise.
func timeInState(e *socktable.Entry, timewait bool) (ns int64, atLeast bool) {
	switch {
	case timewait && event.State(e.State) == event.TimeWait && e.Expires <= timewaitLen:
		return int64(timewaitLen-e.Expires) * 1e6, false
	case !timewait && e.LastAckRecvMs >= 0 &&
		(event.State(e.State) == event.CloseWait || event.State(e.State) == event.FinWait2):
		return e.LastAckRecvMs * 1e6, true
	}
	return -1, false
}
