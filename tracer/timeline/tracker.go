// Package timeline turns the stream of kernel events into per-socket
// timelines: how long each state lasted, why each transition happened, who
// owns each socket, and where the timeline has gaps. It is pure Go and runs
// without privileges, on live events or on hand-built ones.
package timeline

import (
	"net/netip"
	"sync/atomic"

	"github.com/tcptrail/tcptrail/tracer/event"
)

// Owner is a process holding a socket through one of its fds.
type Owner struct {
	PID  uint32
	FD   int32
	Comm [16]byte
	// Container is the id of the container the process runs in ("" for
	// none or unknown).
	Container string
}

// CommString returns the owner's process name.
func (o *Owner) CommString() string {
	for i, c := range o.Comm {
		if c == 0 {
			return string(o.Comm[:i])
		}
	}
	return string(o.Comm[:])
}

// Socket is what the tracker knows about one live socket.
type Socket struct {
	Cookie  uint64
	NetNS   uint32 // inode of its network namespace
	Family  uint16
	Local   netip.AddrPort
	Remote  netip.AddrPort
	State   event.State
	SinceNs uint64 // when it entered State (monotonic); 0: before the trace
	// AtLeastSinceNs, for a socket in its state since before the trace: a
	// time by which it was in State already, from what the kernel's socket
	// table told at start (monotonic; 0: unknown).
	AtLeastSinceNs uint64
	Owners         []Owner
	// ExitedBy is an owner that exited while holding the socket: the
	// transitions its exit causes arrive after the exit record.
	ExitedBy uint32
	// LeakReported: its current CLOSE_WAIT was reported as a leak.
	LeakReported bool
}

// Transition is one state change, annotated. The tracker reuses it: sinks
// must copy what they keep.
type Transition struct {
	Event *event.Event
	// PrevStateNs is the time spent in Event.Old; -1 when unknown.
	PrevStateNs int64
	// Gap: Event.Old is not the state the previous transition entered.
	Gap         bool
	ExpectedOld event.State
	Cause       Cause
	// Owners at the time of the transition (before a close removes one).
	Owners []Owner
	// Socket is the tracker's socket; nil after it closed.
	Socket *Socket
}

// Tracker keeps the live sockets by cookie.
type Tracker struct {
	socks map[uint64]*Socket
	// byPort counts the live sockets by local port: a failed bind on a
	// port none of them holds (the kernel reports every failed bind on
	// the host) costs a lookup, not a walk over tens of thousands of
	// sockets of a busy traced port. An array, not a map: counting is on
	// the path of every new socket (256 KiB, touched only where used).
	byPort *[1 << 16]int32
	// owning counts the sockets each process owns, so that process exits
	// and forks of processes that own nothing cost a map lookup.
	owning map[uint32]int
	free   []*Socket
	tr     Transition
	owners []Owner

	Transitions uint64
	Gaps        uint64
	SocketsSeen uint64

	// live counts the live sockets by state. It is the one part of the
	// tracker read from another goroutine (metrics), hence atomic.
	live [16]atomic.Int64
	// countLive: someone reads live (CountLive was called); otherwise
	// the hot path skips its atomic adds.
	countLive bool

	// ContainerOf names the container a process runs in, for new owners
	// (nil: none are named). It is asked once per owner, not per event.
	ContainerOf func(pid uint32) string
}

// New returns an empty tracker.
func New() *Tracker {
	return &Tracker{
		socks:  make(map[uint64]*Socket),
		byPort: new([1 << 16]int32),
		owning: make(map[uint32]int),
	}
}

// Socket returns the live socket with this cookie, or nil.
func (t *Tracker) Socket(cookie uint64) *Socket { return t.socks[cookie] }

// Sockets calls fn for every live socket.
func (t *Tracker) Sockets(fn func(*Socket)) {
	for _, s := range t.socks {
		fn(s)
	}
}

// OnLocalPort calls fn for each live socket whose local port is port.
func (t *Tracker) OnLocalPort(port uint16, fn func(*Socket)) {
	if port == 0 || t.byPort[port] == 0 {
		return
	}
	for _, s := range t.socks {
		if s.Local.Port() == port {
			fn(s)
		}
	}
}

// movePort moves a socket's count in byPort from one local port to
// another (0: none).
func (t *Tracker) movePort(from, to uint16) {
	if from == to {
		return
	}
	t.byPort[from]--
	t.byPort[to]++
}

func (t *Tracker) get(e *event.Event) *Socket {
	s := t.socks[e.Cookie]
	if s != nil {
		return s
	}
	if n := len(t.free); n > 0 {
		s = t.free[n-1]
		t.free = t.free[:n-1]
		owners := s.Owners[:0]
		*s = Socket{Owners: owners}
	} else {
		s = &Socket{}
	}
	s.Cookie = e.Cookie
	t.socks[e.Cookie] = s
	t.SocketsSeen++
	return s
}

// Add registers a socket seen outside the event stream, e.g. in the
// kernel's socket table when tracing starts. It does nothing if the socket
// is already known.
func (t *Tracker) Add(s Socket) *Socket {
	if cur := t.socks[s.Cookie]; cur != nil {
		return cur
	}
	n := &Socket{}
	*n = s
	n.Owners = append([]Owner(nil), s.Owners...)
	for _, o := range n.Owners {
		t.owning[o.PID]++
	}
	t.socks[s.Cookie] = n
	t.movePort(0, n.Local.Port())
	t.SocketsSeen++
	t.count(n.State, 1)
	return n
}

// count adds d to the live sockets in state st.
func (t *Tracker) count(st event.State, d int64) {
	if t.countLive && st != 0 {
		t.live[st&15].Add(d)
	}
}

// CountLive makes the tracker count its live sockets by state, from now
// on: call it before the first socket is added.
func (t *Tracker) CountLive() { t.countLive = true }

// LiveByState returns how many live sockets are in each state, indexed by
// event.State (all 0 unless CountLive was called). Safe to call from any
// goroutine while events are applied.
func (t *Tracker) LiveByState() (n [16]int64) {
	for i := range t.live {
		n[i] = t.live[i].Load()
	}
	return n
}

// Transition applies a state change and returns it annotated.
func (t *Tracker) Transition(e *event.Event) *Transition {
	t.Transitions++
	s := t.get(e)
	s.Family = e.Family
	s.NetNS = e.NetNS
	// Keep the last non-zero addresses: a connecting socket's first
	// transition has no local port yet, a timewait hand-over clears skc_num.
	if e.Local.Port() != 0 || !s.Local.IsValid() {
		if from, to := s.Local.Port(), e.Local.Port(); from != to {
			t.byPort[from]--
			t.byPort[to]++
		}
		s.Local = e.Local
	}
	if e.Remote.Port() != 0 || !s.Remote.IsValid() {
		s.Remote = e.Remote
	}

	tr := &t.tr
	*tr = Transition{Event: e, PrevStateNs: -1, Socket: s}
	if s.State != 0 {
		if s.State != e.Old {
			tr.Gap = true
			tr.ExpectedOld = s.State
			t.Gaps++
		} else if s.SinceNs != 0 && e.MonoNs >= s.SinceNs {
			tr.PrevStateNs = int64(e.MonoNs - s.SinceNs)
		}
	}

	if (e.Call == event.CallConnect || e.Call == event.CallListen) && e.FD >= 0 {
		t.addOwner(s, Owner{PID: e.PID, FD: e.FD, Comm: e.Comm})
	}
	tr.Cause = classify(e, s.ExitedBy)
	t.owners = append(t.owners[:0], s.Owners...)
	tr.Owners = t.owners

	// A transition caused by closing an fd means that fd is gone; for
	// calls that do not say which fd, every fd of that process the call
	// could have closed.
	switch e.Call {
	case event.CallClose, event.CallDupOver:
		if e.FD >= 0 {
			t.removeOwner(s, e.PID, e.FD)
		}
	case event.CallExecve, event.CallCloseRange:
		for i := len(s.Owners) - 1; i >= 0; i-- {
			o := s.Owners[i]
			if o.PID == e.PID && (e.Call == event.CallExecve || (o.FD >= e.FD && uint32(o.FD) <= e.Arg)) {
				t.removeOwner(s, o.PID, o.FD)
			}
		}
	}

	t.count(s.State, -1)
	s.State = e.New
	s.SinceNs = e.MonoNs
	t.count(s.State, 1)
	if e.New != event.CloseWait {
		s.LeakReported = false
	}
	if e.New == event.Close {
		// Closed for good, or handed to a timewait socket (same cookie),
		// which the timewait watcher follows from here.
		t.release(s)
		tr.Socket = nil
	}
	return tr
}

// release forgets a closed socket and recycles it.
func (t *Tracker) release(s *Socket) {
	t.count(s.State, -1)
	delete(t.socks, s.Cookie)
	t.movePort(s.Local.Port(), 0)
	for _, o := range s.Owners {
		t.dropOwning(o.PID)
	}
	t.free = append(t.free, s)
}

func (t *Tracker) addOwner(s *Socket, o Owner) {
	for i := range s.Owners {
		if s.Owners[i].PID == o.PID && s.Owners[i].FD == o.FD {
			s.Owners[i].Comm = o.Comm
			return
		}
	}
	if o.Container == "" && t.ContainerOf != nil {
		o.Container = t.ContainerOf(o.PID)
	}
	s.Owners = append(s.Owners, o)
	t.owning[o.PID]++
}

func (t *Tracker) removeOwner(s *Socket, pid uint32, fd int32) bool {
	for i := range s.Owners {
		if s.Owners[i].PID == pid && s.Owners[i].FD == fd {
			s.Owners = append(s.Owners[:i], s.Owners[i+1:]...)
			t.dropOwning(pid)
			return true
		}
	}
	return false
}

func (t *Tracker) dropOwning(pid uint32) {
	if n := t.owning[pid]; n <= 1 {
		delete(t.owning, pid)
	} else {
		t.owning[pid] = n - 1
	}
}

// Call applies a call event (accept, bind, a close that changed nothing, a
// failed call). It returns the socket concerned, if known.
func (t *Tracker) Call(e *event.Event) *Socket {
	s := t.socks[e.Cookie]
	if e.Cookie == 0 {
		s = nil
	}
	switch e.Call {
	case event.CallAccept, event.CallDup:
		if s != nil {
			t.addOwner(s, Owner{PID: e.PID, FD: e.FD, Comm: e.Comm})
		}
	case event.CallBind, event.CallListen, event.CallConnect:
		if s != nil && e.Ret == 0 {
			t.addOwner(s, Owner{PID: e.PID, FD: e.FD, Comm: e.Comm})
		}
	case event.CallClose:
		if s != nil {
			t.removeOwner(s, e.PID, e.FD)
		}
	}
	return s
}

// Exit applies a process exit: its sockets lose it as an owner, and the
// transitions its exit causes are attributed to it.
func (t *Tracker) Exit(e *event.Event) {
	pid := e.PID
	if t.owning[pid] == 0 {
		return
	}
	for _, s := range t.socks {
		for i := 0; i < len(s.Owners); {
			if s.Owners[i].PID == pid {
				s.Owners = append(s.Owners[:i], s.Owners[i+1:]...)
				if len(s.Owners) == 0 {
					s.ExitedBy = pid
				}
				continue
			}
			i++
		}
	}
	delete(t.owning, pid)
}

// Fork applies a fork: the child holds the same fds as the parent.
func (t *Tracker) Fork(e *event.Event) {
	parent, child := e.PID, e.Arg
	if t.owning[parent] == 0 {
		return
	}
	for _, s := range t.socks {
		for _, o := range s.Owners {
			if o.PID == parent {
				t.addOwner(s, Owner{PID: child, FD: o.FD, Comm: o.Comm})
			}
		}
	}
}

// Forget drops a socket the kernel's table says is gone or has moved on
// without the events that should have said so.
func (t *Tracker) Forget(cookie uint64) {
	if s := t.socks[cookie]; s != nil {
		t.release(s)
	}
}

// Owns reports whether pid holds any known socket.
func (t *Tracker) Owns(pid uint32) bool { return t.owning[pid] > 0 }
