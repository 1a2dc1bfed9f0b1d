// Package socktable asks the kernel's socket table (sock_diag netlink) about
// TCP sockets, and /proc about which processes hold them. It sees what no
// tracepoint reports: sockets older than the trace, and timewait sockets
// (their FIN_WAIT2 → TIME_WAIT change and their expiry). The package-level
// functions ask our own network namespace; Namespaces asks the others.
package socktable

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Entry is one socket as the kernel's table reports it.
type Entry struct {
	Cookie  uint64
	Family  uint16
	Local   netip.AddrPort
	Remote  netip.AddrPort
	State   uint8  // TCP_* state; timewait sockets report FIN_WAIT2 or TIME_WAIT
	Timer   uint8  // 3: timewait timer
	Expires uint32 // ms left on the timer
	Inode   uint32 // 0 for timewait sockets: no process holds them
	UID     uint32
	NetNS   uint32 // inode of the network namespace it was read from; 0 from a Conn of Open
	// LastAckRecvMs is how long ago the peer's last ACK arrived (tcp_info's
	// tcpi_last_ack_recv), for full sockets of a dump with WithTCPInfo;
	// -1 otherwise. For a socket in CLOSE_WAIT or FIN_WAIT2 nothing
	// arrives after the segment that put it there, so it is a lower
	// bound of the time in that state.
	LastAckRecvMs int64
}

const (
	sockDiagByFamily = 20
	inetDiagNoCookie = ^uint32(0)
)

// inetDiagSockID is struct inet_diag_sockid: ports and addresses in network
// byte order.
type inetDiagSockID struct {
	Sport  [2]byte
	Dport  [2]byte
	Src    [16]byte
	Dst    [16]byte
	If     uint32
	Cookie [2]uint32
}

// inetDiagReqV2 is struct inet_diag_req_v2.
type inetDiagReqV2 struct {
	Family   uint8
	Protocol uint8
	Ext      uint8
	Pad      uint8
	States   uint32
	ID       inetDiagSockID
}

// inetDiagMsg is struct inet_diag_msg.
type inetDiagMsg struct {
	Family  uint8
	State   uint8
	Timer   uint8
	Retrans uint8
	ID      inetDiagSockID
	Expires uint32
	RQueue  uint32
	WQueue  uint32
	UID     uint32
	Inode   uint32
}

// AllStates selects every TCP state in a dump.
const AllStates = 0xfff

// WithTCPInfo, added to a dump's states, asks the kernel for each full
// socket's tcp_info too (Entry.LastAckRecvMs). It costs the kernel a
// socket lock per socket: only one-shot questions ask for it.
const WithTCPInfo = 1 << 31

const (
	inetDiagInfo       = 2  // INET_DIAG_INFO: struct tcp_info
	tcpInfoLastAckRecv = 56 // offsetof(struct tcp_info, tcpi_last_ack_recv)
	sizeofInetDiagMsg  = int(unsafe.Sizeof(inetDiagMsg{}))
	sizeofRtAttrHeader = 4
)

// Dump lists the TCP sockets of family (unix.AF_INET or AF_INET6) whose
// state is in the states bit mask (bit n: state n).
func Dump(family uint8, states uint32) ([]Entry, error) {
	return DumpFunc(family, states, nil)
}

// DumpFunc is Dump keeping only the entries keep accepts (nil: all), so
// that a host with a hundred thousand timewait sockets costs no memory for
// the ones nobody asked about.
func DumpFunc(family uint8, states uint32, keep func(*Entry) bool) ([]Entry, error) {
	req := inetDiagReqV2{Family: family, Protocol: unix.IPPROTO_TCP, States: states}
	req.ID.Cookie = [2]uint32{inetDiagNoCookie, inetDiagNoCookie}
	c, err := Open()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.query(&req, unix.NLM_F_DUMP, Ports{}, keep)
}

// Conn is a sock_diag netlink socket kept open for repeated lookups. It
// sees the sockets of the network namespace it was created in, whichever
// namespace later asks. It is safe for concurrent use: queries take turns.
type Conn struct {
	mu    sync.Mutex
	fd    int // -1 once closed
	seq   uint32
	buf   []byte
	netns uint32 // copied into each Entry; 0: not known
}

// Open opens a sock_diag socket.
func Open() (*Conn, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("sock_diag socket: %w", err)
	}
	return &Conn{fd: fd, buf: make([]byte, 64<<10)}, nil
}

// Close closes the socket. It waits for a query in progress, so that the
// fd number is never reused under it; later queries fail with
// net.ErrClosed. Closing twice is harmless.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	err := unix.Close(c.fd)
	c.fd = -1
	return err
}

// Lookup finds the TCP socket with this four-tuple, timewait sockets
// included. It returns nil, nil when there is none. Note that the kernel
// falls back to a listener on the local port: callers compare the tuple.
func Lookup(local, remote netip.AddrPort) (*Entry, error) {
	c, err := Open()
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.Lookup(local, remote)
}

// Lookup is the package's Lookup on an open socket.
func (c *Conn) Lookup(local, remote netip.AddrPort) (*Entry, error) {
	req := inetDiagReqV2{Protocol: unix.IPPROTO_TCP, States: AllStates}
	req.Family = unix.AF_INET
	if local.Addr().Is6() {
		req.Family = unix.AF_INET6
	}
	binary.BigEndian.PutUint16(req.ID.Sport[:], local.Port())
	binary.BigEndian.PutUint16(req.ID.Dport[:], remote.Port())
	putAddr(req.ID.Src[:], local.Addr())
	putAddr(req.ID.Dst[:], remote.Addr())
	req.ID.Cookie = [2]uint32{inetDiagNoCookie, inetDiagNoCookie}
	entries, err := c.query(&req, 0, Ports{}, nil)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil || len(entries) == 0 {
		return nil, err
	}
	return &entries[0], nil
}

func putAddr(dst []byte, a netip.Addr) {
	if a.Is4() {
		b := a.As4()
		copy(dst, b[:])
		return
	}
	b := a.As16()
	copy(dst, b[:])
}

func (c *Conn) query(req *inetDiagReqV2, flags uint16, ports Ports, keep func(*Entry) bool) ([]Entry, error) {
	if req.States&WithTCPInfo != 0 {
		req.States &^= WithTCPInfo
		req.Ext |= 1 << (inetDiagInfo - 1)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	bc := ports.bytecode()
	out, sockets, err := c.queryLocked(req, flags, bc, bc == nil && len(ports.List) > 0, ports, keep)
	if bc != nil && errors.Is(err, unix.EINVAL) && sockets == 0 {
		// A kernel that refuses the filter (it says so before sending
		// any socket): every socket is sent, and matched here.
		out, _, err = c.queryLocked(req, flags, nil, true, ports, keep)
	}
	return out, err
}

// queryLocked sends one request with the filter bc (nil: none) and reads
// its answer; matchHere has the ports matched in user space. sockets is
// how many the kernel sent, kept or not.
func (c *Conn) queryLocked(req *inetDiagReqV2, flags uint16, bc []byte, matchHere bool, ports Ports, keep func(*Entry) bool) (out []Entry, sockets int, err error) {
	fd := c.fd
	if fd < 0 {
		return nil, 0, net.ErrClosed
	}
	const hdrLen = unix.SizeofNlMsghdr
	reqLen := int(unsafe.Sizeof(*req))
	msg := make([]byte, hdrLen+reqLen, hdrLen+reqLen+64)
	copy(msg[hdrLen:], unsafe.Slice((*byte)(unsafe.Pointer(req)), reqLen))
	msg = appendBytecodeAttr(msg, bc)
	hdr := (*unix.NlMsghdr)(unsafe.Pointer(&msg[0]))
	hdr.Len = uint32(len(msg))
	hdr.Type = sockDiagByFamily
	hdr.Flags = unix.NLM_F_REQUEST | flags
	c.seq++
	hdr.Seq = c.seq
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, 0, fmt.Errorf("sock_diag send: %w", err)
	}

	buf := c.buf
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return nil, sockets, fmt.Errorf("sock_diag receive: %w", err)
		}
		for rest := buf[:n]; len(rest) > 0; {
			var hdr unix.NlMsghdr
			var data []byte
			hdr, data, rest, err = nextMessage(rest)
			if err != nil {
				return nil, sockets, fmt.Errorf("sock_diag parse: %w", err)
			}
			if hdr.Seq != c.seq {
				continue // a late answer to an earlier query
			}
			switch hdr.Type {
			case unix.NLMSG_DONE:
				return out, sockets, nil
			case unix.NLMSG_ERROR:
				if len(data) >= 4 {
					if code := int32(binary.NativeEndian.Uint32(data)); code != 0 {
						return out, sockets, unix.Errno(-code)
					}
				}
				return out, sockets, nil
			}
			if len(data) < sizeofInetDiagMsg {
				continue
			}
			sockets++
			e := decode((*inetDiagMsg)(unsafe.Pointer(&data[0])))
			e.NetNS = c.netns
			if req.Ext != 0 {
				e.LastAckRecvMs = lastAckRecv(data[sizeofInetDiagMsg:])
			}
			if (!matchHere || ports.Match(&e)) && (keep == nil || keep(&e)) {
				out = append(out, e)
			}
		}
		if flags&unix.NLM_F_DUMP == 0 {
			return out, sockets, nil
		}
	}
}

// nextMessage splits the first netlink message off b, in place: a dump of
// a busy host's table is a hundred thousand messages, and
// syscall.ParseNetlinkMessage allocates a list of them for every read.
func nextMessage(b []byte) (hdr unix.NlMsghdr, data, rest []byte, err error) {
	if len(b) < unix.SizeofNlMsghdr {
		return hdr, nil, nil, syscall.EINVAL
	}
	hdr.Len = binary.NativeEndian.Uint32(b[0:4])
	hdr.Type = binary.NativeEndian.Uint16(b[4:6])
	hdr.Flags = binary.NativeEndian.Uint16(b[6:8])
	hdr.Seq = binary.NativeEndian.Uint32(b[8:12])
	hdr.Pid = binary.NativeEndian.Uint32(b[12:16])
	l := int(hdr.Len)
	if l < unix.SizeofNlMsghdr || l > len(b) {
		return hdr, nil, nil, syscall.EINVAL
	}
	next := min((l+unix.NLMSG_ALIGNTO-1)&^(unix.NLMSG_ALIGNTO-1), len(b))
	return hdr, b[unix.SizeofNlMsghdr:l], b[next:], nil
}

// lastAckRecv finds tcp_info among a reply's attributes and returns its
// tcpi_last_ack_recv, or -1.
func lastAckRecv(attrs []byte) int64 {
	for len(attrs) >= sizeofRtAttrHeader {
		n := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4])
		if n < sizeofRtAttrHeader || n > len(attrs) {
			return -1
		}
		if typ == inetDiagInfo && n >= sizeofRtAttrHeader+tcpInfoLastAckRecv+4 {
			return int64(binary.NativeEndian.Uint32(attrs[sizeofRtAttrHeader+tcpInfoLastAckRecv:]))
		}
		n = (n + 3) &^ 3
		if n > len(attrs) {
			return -1
		}
		attrs = attrs[n:]
	}
	return -1
}

func decode(m *inetDiagMsg) Entry {
	e := Entry{
		LastAckRecvMs: -1,
		Cookie:        uint64(m.ID.Cookie[0]) | uint64(m.ID.Cookie[1])<<32,
		Family:        uint16(m.Family),
		State:         m.State,
		Timer:         m.Timer,
		Expires:       m.Expires,
		Inode:         m.Inode,
		UID:           m.UID,
	}
	sport := binary.BigEndian.Uint16(m.ID.Sport[:])
	dport := binary.BigEndian.Uint16(m.ID.Dport[:])
	if m.Family == unix.AF_INET {
		e.Local = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.ID.Src[:4])), sport)
		e.Remote = netip.AddrPortFrom(netip.AddrFrom4([4]byte(m.ID.Dst[:4])), dport)
	} else {
		e.Local = netip.AddrPortFrom(netip.AddrFrom16(m.ID.Src).Unmap(), sport)
		e.Remote = netip.AddrPortFrom(netip.AddrFrom16(m.ID.Dst).Unmap(), dport)
	}
	return e
}
