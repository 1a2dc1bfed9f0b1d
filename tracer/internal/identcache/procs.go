package identcache

// procSlots is the size of the process text cache, direct-mapped by pid.
// A line names a process twice (the task the change ran in, and each owner),
// and a busy port's lines name the same few processes over and over.
const procSlots = 256

// maxProcText is the longest text kept (a name full of escapes is longer:
// formatted every time).
const maxProcText = 64

// Procs keeps the text a sink formats for a process (its pid and name) for
// the next lines that name it, by pid and name: a pid reused by another
// program, or a thread that renamed itself, misses and is formatted
// afresh. The zero value is ready to use; a nil *Procs formats every time.
type Procs struct {
	slots [procSlots]procSlot
}

type procSlot struct {
	pid  uint32
	comm [16]byte
	n    uint8 // 0: none yet
	text [maxProcText]byte
}

// Append appends the text of pid and comm (NUL-padded, as the kernel gives
// it) as format appends it: copied from the last time, if any. format must
// depend on nothing but pid and comm.
func (c *Procs) Append(b []byte, pid uint32, comm *[16]byte, format func([]byte, uint32, *[16]byte) []byte) []byte {
	if c == nil {
		return format(b, pid, comm)
	}
	s := &c.slots[pid%procSlots]
	if s.n > 0 && s.pid == pid && s.comm == *comm {
		return append(b, s.text[:s.n]...)
	}
	start := len(b)
	b = format(b, pid, comm)
	if n := len(b) - start; n > 0 && n <= maxProcText {
		s.pid, s.comm = pid, *comm
		s.n = uint8(copy(s.text[:], b[start:]))
	}
	return b
}
