package record

import (
	"net/netip"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

var errnoNames = map[int32]string{
	1: "EPERM", 4: "EINTR", 9: "EBADF", 11: "EAGAIN", 13: "EACCES", 22: "EINVAL",
	24: "EMFILE", 32: "EPIPE", 88: "ENOTSOCK", 97: "EAFNOSUPPORT", 98: "EADDRINUSE",
	99: "EADDRNOTAVAIL", 100: "ENETDOWN", 101: "ENETUNREACH", 103: "ECONNABORTED",
	104: "ECONNRESET", 106: "EISCONN", 107: "ENOTCONN", 110: "ETIMEDOUT",
	111: "ECONNREFUSED", 113: "EHOSTUNREACH", 114: "EALREADY", 115: "EINPROGRESS",
}

// ErrnoName names a positive errno ("" for 0).
func ErrnoName(errno int32) string {
	if errno <= 0 {
		return ""
	}
	if n, ok := errnoNames[errno]; ok {
		return n
	}
	return "errno " + itoa(int64(errno))
}

func itoa(v int64) string {
	var b [20]byte
	i := len(b)
	neg := v < 0
	if neg {
		v = -v
	}
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	if neg {
		i--
		b[i] = '-'
	}
	return string(b[i:])
}

// Owners converts tracker owners to records.
func Owners(in []timeline.Owner) []Owner {
	out := make([]Owner, 0, len(in))
	for i := range in {
		out = append(out, Owner{PID: in[i].PID, Comm: in[i].CommString(), FD: in[i].FD, Container: in[i].Container})
	}
	return out
}

// SocketOf names a socket for a record.
func SocketOf(cookie uint64, netns uint32, family uint16, local, remote netip.AddrPort) Socket {
	return Socket{
		Cookie: cookie,
		NetNS:  netns,
		Family: event.FamilyName(family),
		Laddr:  addrString(local.Addr()),
		Lport:  local.Port(),
		Raddr:  addrString(remote.Addr()),
		Rport:  remote.Port(),
	}
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// CallRecord converts a call event.
func CallRecord(e *event.Event, wall time.Time, owners []timeline.Owner) *Call {
	c := &Call{
		Type:   TypeCall,
		Time:   wall,
		MonoNs: e.MonoNs,
		Call:   e.Call.String(),
		FD:     e.FD,
		Ret:    e.Ret,
		Errno:  ErrnoName(e.Errno()),
		Socket: SocketOf(e.Cookie, e.NetNS, e.Family, e.Local, e.Remote),
		PID:    e.PID,
		Comm:   e.CommString(),
	}
	if e.Old != 0 {
		c.State = e.Old.String()
	}
	if owners != nil {
		c.Owners = Owners(owners)
	}
	return c
}
