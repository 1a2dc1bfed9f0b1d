package socktable

import (
	"encoding/binary"
)

// Ports narrows a dump to the sockets with a port in List, in the kernel:
// the kernel runs a small filter program (inet_diag bytecode, as ss's
// "sport = :80" does) over each socket and sends only those that pass. A
// host's table may hold hundreds of thousands of sockets, timewait ones
// mostly, on ports nobody asked about; without the filter each of them is
// locked (for tcp_info), copied and parsed, for one port's sake.
//
// The zero value selects every socket.
type Ports struct {
	List []uint16
	// LocalOnly matches the local port alone; otherwise either end's.
	LocalOnly bool
}

// LocalPort selects the sockets whose local port is p.
func LocalPort(p uint16) Ports { return Ports{List: []uint16{p}, LocalOnly: true} }

// EitherPort selects the sockets with either end on one of ports; none
// selects every socket.
func EitherPort(ports []uint16) Ports { return Ports{List: ports} }

// Match tells whether e passes the filter, as the kernel's program does.
func (p Ports) Match(e *Entry) bool {
	if len(p.List) == 0 {
		return true
	}
	for _, x := range p.List {
		if e.Local.Port() == x || (!p.LocalOnly && e.Remote.Port() == x) {
			return true
		}
	}
	return false
}

// maxComparisons bounds the filter: the kernel runs it over every socket of
// the table, one comparison after the other, so a long port list would cost
// the kernel more than sending every socket on costs both sides. Past it
// the ports are matched in user space alone.
const maxComparisons = 128

// The kernel's filter ops (enum in linux/inet_diag.h).
const (
	bcJmp  = 1
	bcSEq  = 11 // source (local) port equal (not in the oldest kernels; in 5.10 on, tested)
	bcDEq  = 12 // destination (remote) port equal
	bcAttr = 1  // INET_DIAG_REQ_BYTECODE
)

// bytecode compiles p: for each port, a comparison (8 bytes: the op, then
// the port in the second op's "no") that falls through to a jump to the
// end (accept) on a match, and skips that jump to the next comparison
// otherwise; the last comparison rejects by jumping 4 bytes past the end.
// The kernel checks every "no" target by following the "yes" chain from
// the start, so each comparison's "yes" is the next op, as ss lays out
// its "or". nil when p selects everything.
func (p Ports) bytecode() []byte {
	type cmp struct {
		code uint8
		port uint16
	}
	var cmps []cmp
	for _, x := range p.List {
		cmps = append(cmps, cmp{bcSEq, x})
		if !p.LocalOnly {
			cmps = append(cmps, cmp{bcDEq, x})
		}
	}
	if len(cmps) == 0 {
		return nil
	}
	size := 12*len(cmps) - 4 // each comparison and its jump, but the last's
	if len(cmps) > maxComparisons {
		return nil // dearer in the kernel than in user space
	}
	b := make([]byte, 0, size)
	op := func(code, yes uint8, no uint16) {
		b = append(b, code, yes)
		b = binary.NativeEndian.AppendUint16(b, no)
	}
	for i, c := range cmps {
		// Match: on to the jump below (after the last comparison: the
		// end, accept). Else over it to the next comparison (after the
		// last: 4 bytes past the end, reject).
		op(c.code, 8, 8+4)
		op(0, 0, c.port)
		if i < len(cmps)-1 {
			op(bcJmp, 4, uint16(size-len(b))) // to the end: accept
		}
	}
	return b
}

// appendBytecodeAttr appends the request attribute carrying the filter bc
// (none when nil).
func appendBytecodeAttr(msg []byte, bc []byte) []byte {
	if bc == nil {
		return msg
	}
	msg = binary.NativeEndian.AppendUint16(msg, uint16(sizeofRtAttrHeader+len(bc)))
	msg = binary.NativeEndian.AppendUint16(msg, bcAttr)
	return append(msg, bc...) // a multiple of 4: no padding
}
