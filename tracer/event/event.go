// Package event turns the kernel's raw records into typed events. It is pure
// Go: no BPF, no privileges, no allocation per event.
package event

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
)

// Kind says what a record reports.
type Kind uint8

const (
	KindState Kind = 1 // a socket changed TCP state
	KindCall  Kind = 2 // a socket syscall that matters but changed no state itself
	KindExit  Kind = 3 // the last thread of a process exited
	KindFork  Kind = 4 // a process forked: the child holds the parent's fds
)

func (k Kind) String() string {
	switch k {
	case KindState:
		return "transition"
	case KindCall:
		return "call"
	case KindExit:
		return "exit"
	case KindFork:
		return "fork"
	}
	return "unknown"
}

// Call is the socket syscall a record belongs to or, for a transition, the
// call it ran inside of (on that very socket).
type Call uint8

const (
	CallNone     Call = 0
	CallConnect  Call = 1
	CallAccept   Call = 2
	CallBind     Call = 3
	CallListen   Call = 4
	CallClose    Call = 5
	CallShutdown Call = 6
	CallDup      Call = 7 // dup, dup2, dup3: Arg is the old fd, FD the new one
	// The calls below release sockets without naming them: their
	// transitions come while the socket's file is released, often after
	// the call returned (FlagAfterCall).
	CallCloseRange Call = 8  // close_range(2): FD is the range's first fd, Arg its last
	CallDupOver    Call = 9  // dup2/dup3 onto FD, which held the socket
	CallExecve     Call = 10 // execve/execveat closing close-on-exec fds; FD is -1
)

var callNames = [...]string{"", "connect", "accept", "bind", "listen", "close", "shutdown", "dup",
	"close_range", "dup_over", "execve"}

// Releases reports whether the call closes an fd: its transitions are the
// owner's own doing.
func (c Call) Releases() bool {
	return c == CallClose || c == CallCloseRange || c == CallDupOver || c == CallExecve
}

// SyntheticID is set in the socket identities tcptrail makes up where the
// kernel gives its programs no socket cookie (before Linux 5.12); never in a
// kernel cookie, a counter from 1. The socket table does not know such an
// identity: match its sockets by address instead. Made-up identities stay
// below 2^53, so JSON readers keep them exact.
const SyntheticID uint64 = 1 << 52

// AppendID appends a socket's identity as shown to people: "#4097" for a
// cookie, "#~1.42" for a made-up identity (CPU 1's 42nd), short enough
// for a table column. JSON carries the number itself.
func AppendID(b []byte, id uint64) []byte {
	b = append(b, '#')
	if id&SyntheticID == 0 {
		return strconv.AppendUint(b, id, 10)
	}
	b = append(b, '~')
	b = strconv.AppendUint(b, (id>>40)&0xfff, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, id&(1<<40-1), 10)
}

// AppendOwner appends a socket's owner as every view names it:
// "comm[pid] fd N".
func AppendOwner(b []byte, comm string, pid uint32, fd int32) []byte {
	b = append(b, comm...)
	b = append(b, '[')
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, "] fd "...)
	return strconv.AppendInt(b, int64(fd), 10)
}

// NoOwner is what views say of a socket no known process holds.
const NoOwner = "no process (owner unknown)"

// SameSocket reports whether a socket the kernel's table lists with cookie
// tableCookie may be the traced socket id, whose addresses already matched.
func SameSocket(tableCookie, id uint64) bool {
	return tableCookie == id || id&SyntheticID != 0
}

func (c Call) String() string {
	if int(c) < len(callNames) {
		return callNames[c]
	}
	return "unknown"
}

// ParseCall is the inverse of Call.String.
func ParseCall(s string) (Call, bool) {
	for i, n := range callNames {
		if n == s {
			return Call(i), true
		}
	}
	return CallNone, false
}

// Flags qualify the context of a record.
const (
	FlagExiting uint8 = 1 // the current task was exiting
	FlagPeerFIN uint8 = 2 // transitions: the peer's FIN had arrived
	// transitions: ran after the call returned, while the socket's file was
	// released on the way back to user space
	FlagAfterCall uint8 = 4
	// transitions to CLOSE: the kernel had just reset the connection on its
	// own (a FIN_WAIT2 orphan out of time, an orphan dropped, a socket
	// destroyed), rather than handing the socket to a timewait socket
	FlagRSTSent uint8 = 8
)

// Address families, as the kernel numbers them.
const (
	AFInet  = 2
	AFInet6 = 10
)

// Event is one decoded kernel record.
type Event struct {
	Kind     Kind
	Call     Call
	Flags    uint8
	Old, New State  // transitions; for call events Old is the socket's state
	MonoNs   uint64 // CLOCK_MONOTONIC
	Cookie   uint64 // socket identity; 0 when unknown
	Family   uint16
	Protocol uint16
	Local    netip.AddrPort
	Remote   netip.AddrPort
	PID, TID uint32 // the task current when it happened: context, not owner
	FD       int32  // the call's fd; -1 when none
	Ret      int32  // call events: the syscall's return value (-errno on failure)
	SkErr    int32  // the socket's pending error
	Arg      uint32 // shutdown: how; fork: the child's pid; dup: the old fd
	Comm     [16]byte
	// NetNS is the inode of the socket's network namespace (0 for
	// process events): part of a socket's identity, since namespaces
	// reuse each other's addresses.
	NetNS uint32
	// Cgroup is the cgroup v2 id of the socket's creator (process events:
	// of the task).
	Cgroup uint64
}

// CommString returns the task name. It allocates: keep it off the hot path.
func (e *Event) CommString() string {
	return string(e.CommBytes())
}

// CommBytes returns the task name without its NUL padding.
func (e *Event) CommBytes() []byte {
	for i, c := range e.Comm {
		if c == 0 {
			return e.Comm[:i]
		}
	}
	return e.Comm[:]
}

// Exiting reports whether the current task was exiting when this happened.
func (e *Event) Exiting() bool { return e.Flags&FlagExiting != 0 }

// PeerFIN reports whether the peer's FIN had arrived when a transition
// happened: at a hand-over to a timewait socket, TIME_WAIT rather than
// FIN_WAIT2.
func (e *Event) PeerFIN() bool { return e.Flags&FlagPeerFIN != 0 }

// RSTSent reports whether the kernel reset the connection itself just
// before this transition to CLOSE.
func (e *Event) RSTSent() bool { return e.Flags&FlagRSTSent != 0 }

// Errno returns the positive errno of a failed call, or 0.
func (e *Event) Errno() int32 {
	if e.Ret < 0 {
		return -e.Ret
	}
	return 0
}

// Layout of struct event in bpf/tcptrail.h. The kernel package's tests check
// these offsets against the bpf2go-generated type.
const (
	offTs       = 0
	offCookie   = 8
	offSaddr    = 16
	offDaddr    = 32
	offPid      = 48
	offTid      = 52
	offFd       = 56
	offRet      = 60
	offSkErr    = 64
	offArg      = 68
	offSport    = 72
	offDport    = 74
	offFamily   = 76
	offProtocol = 78
	offKind     = 80
	offOld      = 81
	offNew      = 82
	offCall     = 83
	offFlags    = 84
	offComm     = 88
	offCgroup   = 104
	offNetNS    = 112
	// Size is the size of struct event.
	Size = 120
)

// ErrShort is returned for a record smaller than struct event.
var ErrShort = errors.New("event record too short")

var ne = binary.NativeEndian

// Decode fills e from a raw record. It does not allocate.
func Decode(b []byte, e *Event) error {
	if len(b) < Size {
		return ErrShort
	}
	e.MonoNs = ne.Uint64(b[offTs:])
	e.Cookie = ne.Uint64(b[offCookie:])
	e.PID = ne.Uint32(b[offPid:])
	e.TID = ne.Uint32(b[offTid:])
	e.FD = int32(ne.Uint32(b[offFd:]))
	e.Ret = int32(ne.Uint32(b[offRet:]))
	e.SkErr = int32(ne.Uint32(b[offSkErr:]))
	e.Arg = ne.Uint32(b[offArg:])
	sport := ne.Uint16(b[offSport:])
	dport := ne.Uint16(b[offDport:])
	e.Family = ne.Uint16(b[offFamily:])
	e.Protocol = ne.Uint16(b[offProtocol:])
	e.Kind = Kind(b[offKind])
	e.Old = State(b[offOld])
	e.New = State(b[offNew])
	e.Call = Call(b[offCall])
	e.Flags = b[offFlags]
	copy(e.Comm[:], b[offComm:offComm+16])
	e.Cgroup = ne.Uint64(b[offCgroup:])
	e.NetNS = ne.Uint32(b[offNetNS:])
	switch e.Family {
	case AFInet:
		e.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[offSaddr:offSaddr+4])), sport)
		e.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[offDaddr:offDaddr+4])), dport)
	case AFInet6:
		e.Local = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[offSaddr:offSaddr+16])).Unmap(), sport)
		e.Remote = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[offDaddr:offDaddr+16])).Unmap(), dport)
	default:
		e.Local = netip.AddrPort{}
		e.Remote = netip.AddrPort{}
	}
	return nil
}

// FamilyName names an address family the way the JSON schema does.
func FamilyName(f uint16) string {
	switch f {
	case AFInet:
		return "ipv4"
	case AFInet6:
		return "ipv6"
	}
	return ""
}

// Encode writes e as the kernel would (the inverse of Decode), into b of
// at least Size bytes: records for tests and benchmarks of what reads them.
func Encode(b []byte, e *Event) {
	clear(b[:Size])
	ne.PutUint64(b[offTs:], e.MonoNs)
	ne.PutUint64(b[offCookie:], e.Cookie)
	ne.PutUint32(b[offPid:], e.PID)
	ne.PutUint32(b[offTid:], e.TID)
	ne.PutUint32(b[offFd:], uint32(e.FD))
	ne.PutUint32(b[offRet:], uint32(e.Ret))
	ne.PutUint32(b[offSkErr:], uint32(e.SkErr))
	ne.PutUint32(b[offArg:], e.Arg)
	ne.PutUint16(b[offSport:], e.Local.Port())
	ne.PutUint16(b[offDport:], e.Remote.Port())
	ne.PutUint16(b[offFamily:], e.Family)
	ne.PutUint16(b[offProtocol:], e.Protocol)
	b[offKind], b[offOld], b[offNew], b[offCall], b[offFlags] = byte(e.Kind), byte(e.Old), byte(e.New), byte(e.Call), e.Flags
	copy(b[offComm:offComm+16], e.Comm[:])
	ne.PutUint64(b[offCgroup:], e.Cgroup)
	ne.PutUint32(b[offNetNS:], e.NetNS)
	for _, end := range [2]struct {
		off  int
		addr netip.Addr
	}{{offSaddr, e.Local.Addr()}, {offDaddr, e.Remote.Addr()}} {
		switch {
		case e.Family == AFInet && end.addr.Is4():
			a4 := end.addr.As4()
			copy(b[end.off:], a4[:])
		case e.Family == AFInet6 && end.addr.IsValid():
			a16 := end.addr.As16()
			copy(b[end.off:], a16[:])
		}
	}
}
