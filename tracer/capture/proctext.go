package capture

import "strconv"

// procSlots is the size of the process text cache, direct-mapped by pid.
// A line names a process twice (the task the change ran in, and each owner),
// and a busy port's lines name the same few processes over and over.
const procSlots = 256

// maxProcText is the longest text kept (a name full of escapes is longer:
// formatted every time).
const maxProcText = 64

// procCache keeps the text `"pid":N,"comm":"NAME"` of the processes last
// written, by pid and name: a pid reused by another program, or a thread
// that renamed itself, misses and is formatted afresh.
type procCache struct {
	slots [procSlots]procSlot
}

type procSlot struct {
	pid  uint32
	comm [16]byte
	n    uint8
	text [maxProcText]byte
}

// append appends the text for pid and comm (NUL-padded, as the kernel
// gives it). A nil cache formats it afresh.
func (c *procCache) append(b []byte, pid uint32, comm *[16]byte) []byte {
	if c == nil {
		return appendProc(b, pid, comm)
	}
	s := &c.slots[pid%procSlots]
	if s.n > 0 && s.pid == pid && s.comm == *comm {
		return append(b, s.text[:s.n]...)
	}
	start := len(b)
	b = appendProc(b, pid, comm)
	if n := len(b) - start; n <= maxProcText {
		s.pid, s.comm = pid, *comm
		s.n = uint8(copy(s.text[:], b[start:]))
	}
	return b
}

func appendProc(b []byte, pid uint32, comm *[16]byte) []byte {
	b = append(b, `"pid":`...)
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, `,"comm":`...)
	return appendJSONString(b, trimComm(comm[:]))
}
