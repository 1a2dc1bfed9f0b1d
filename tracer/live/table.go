// Package live prints tcptrail's live view: one aligned line per transition,
// plus the diagnoses as they happen.
package live

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/internal/clockfmt"
	"github.com/tcptrail/tcptrail/tracer/internal/identcache"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/spool"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Column widths. Addresses are padded to fit an IPv4 address and port;
// longer (IPv6) ones push the line out rather than being cut.
const (
	wTime   = 15
	wSocket = 8
	wAddr   = 21
	wStates = 25
	wPrev   = 9
	wCause  = 22
	wOwner  = 20
)

// The table's buffer (a spool's chunk), and the longest line it leaves
// room for (longer ones, with many owners, grow it).
const (
	bufSize = spool.ChunkSize
	maxLine = 4 << 10
)

// Table writes the live view to w. It buffers: call Flush when the event
// stream goes quiet so that the screen never lags.
type Table struct {
	w   io.Writer
	buf []byte
	err error
	// diagnoses are repeated in the summary, so that the answer is the
	// last thing on the screen.
	diagnoses []string
	more      int
	clock     clockfmt.Cache
	ids       identcache.Cache
	addrs     identcache.Addrs
	procs     identcache.Procs
	// Network namespaces: each line names its socket's once a second
	// namespace showed up (containers reuse each other's addresses).
	firstNS uint32
	multiNS bool
}

// NewTable returns a table writing to w.
func NewTable(w io.Writer) *Table {
	return &Table{w: w, buf: make([]byte, 0, bufSize)}
}

// Header prints the column titles.
func (t *Table) Header() {
	t.buf = pad(t.buf, "TIME", wTime)
	t.buf = pad(t.buf, "SOCKET", wSocket)
	t.buf = pad(t.buf, "LOCAL", wAddr)
	t.buf = append(t.buf, "   "...)
	t.buf = pad(t.buf, "REMOTE", wAddr)
	t.buf = pad(t.buf, "OLD -> NEW", wStates)
	t.buf = padLeft(t.buf, "PREV", wPrev)
	t.buf = append(t.buf, "  "...)
	t.buf = pad(t.buf, "CAUSE", wCause)
	t.buf = pad(t.buf, "OWNER", wOwner)
	t.buf = append(t.buf, "CONTEXT\n"...)
}

// Transition prints one transition. It does not allocate.
func (t *Table) Transition(tr *timeline.Transition, wallNs int64) error {
	e := tr.Event
	b := t.buf
	start := len(b)
	b = t.clock.AppendClock(b, wallNs)
	b = fill(b, start, wTime)
	b = t.ids.Append(b, e, t.formatIdent)
	if !tr.Gap && int(e.Old) < numStates && int(e.New) < numStates {
		b = append(b, stateColumns[e.Old][e.New]...)
	} else {
		start = len(b)
		if tr.Gap {
			// Never paper over a gap: say what was last seen.
			b = append(b, "(gap after "...)
			b = append(b, tr.ExpectedOld.String()...)
			b = append(b, ") "...)
		}
		b = append(b, e.Old.String()...)
		b = append(b, " -> "...)
		b = append(b, e.New.String()...)
		b = fill(b, start, wStates)
	}
	start = len(b)
	if tr.PrevStateNs >= 0 {
		b = AppendDuration(b, tr.PrevStateNs)
	} else {
		b = append(b, '-')
	}
	b = fillLeft(b, start, wPrev)
	b = append(b, "  "...)
	start = len(b)
	b = tr.Cause.AppendText(b)
	b = fill(b, start, wCause)
	start = len(b)
	b = appendOwners(b, tr.Owners, &t.procs)
	b = fillRunes(b, start, wOwner) // process names may be UTF-8
	b = t.procs.Append(b, e.PID, &e.Comm, appendProc)
	if t.seeNetNS(e.NetNS) {
		b = append(b, "  netns "...)
		b = strconv.AppendUint(b, uint64(e.NetNS), 10)
	}
	b = append(b, '\n')
	t.buf = b
	t.writeOutIfFull()
	return t.err
}

const numStates = int(event.BoundInact) + 1

// stateColumns[old][new] is the "OLD -> NEW" column, filled: made once, one
// copy per line instead of three and the filling.
var stateColumns = func() (t [numStates][numStates]string) {
	for o := range numStates {
		for n := range numStates {
			b := []byte(event.State(o).String() + " -> " + event.State(n).String())
			t[o][n] = string(fill(b, 0, wStates))
		}
	}
	return t
}()

// appendIdent appends the columns of a socket's identity: its id, local
// and remote address. addrs, if not nil, keeps the addresses' text.
func appendIdent(b []byte, e *event.Event, addrs *identcache.Addrs) []byte {
	start := len(b)
	b = appendCookie(b, e.Cookie)
	b = fill(b, start, wSocket)
	start = len(b)
	b = addrs.AppendWithPort(b, identcache.Local, e.Local)
	b = fill(b, start, wAddr)
	b = append(b, "-> "...)
	start = len(b)
	b = addrs.AppendWithPort(b, identcache.Remote, e.Remote)
	return fill(b, start, wAddr)
}

// formatIdent formats the identity of a socket not in the identity cache
// (its first line, a client's again once its port is bound).
func (t *Table) formatIdent(b []byte, e *event.Event) []byte { return appendIdent(b, e, &t.addrs) }

// seeNetNS notes a socket's namespace and reports whether lines should
// name it: once more than one namespace is in play.
func (t *Table) seeNetNS(netns uint32) bool {
	if netns == 0 {
		return t.multiNS
	}
	if t.firstNS == 0 {
		t.firstNS = netns
	} else if netns != t.firstNS {
		t.multiNS = true
	}
	return t.multiNS
}

// nsSuffix is " (netns N)" for a diagnosis line once several namespaces
// are in play.
func (t *Table) nsSuffix(netns uint32) string {
	if !t.seeNetNS(netns) || netns == 0 {
		return ""
	}
	return fmt.Sprintf(" (netns %d)", netns)
}

// Line prints a free-form line (diagnoses, notices), prefixed with its time.
func (t *Table) Line(wall time.Time, marker, text string) {
	t.buf = wall.AppendFormat(t.buf, "15:04:05.000000")
	t.buf = append(t.buf, ' ')
	t.buf = append(t.buf, marker...)
	t.buf = append(t.buf, ' ')
	t.buf = append(t.buf, text...)
	t.buf = append(t.buf, '\n')
	t.writeOutIfFull()
}

// Printf prints a line as is.
func (t *Table) Printf(format string, args ...any) {
	t.buf = fmt.Appendf(t.buf, format, args...)
	t.writeOutIfFull()
}

// writeOutIfFull writes the buffer out once it is nearly full, so that it
// keeps its size however many lines come at once (the start-up scan of a
// busy host prints one per socket). An error is kept for the next call
// that returns one.
func (t *Table) writeOutIfFull() {
	if len(t.buf) > bufSize-maxLine {
		_ = t.writeOut()
	}
}

func (t *Table) writeOut() error {
	if t.err == nil && len(t.buf) > 0 {
		// A spool takes the buffer over rather than copying it.
		if sw, ok := t.w.(*spool.Writer); ok {
			t.buf, t.err = sw.Hand(t.buf)
			return t.err
		}
		_, t.err = t.w.Write(t.buf)
	}
	t.buf = t.buf[:0]
	return t.err
}

// Flush writes out what is buffered, and has a destination that buffers
// too (a spool) write it out.
func (t *Table) Flush() error {
	if t.writeOut() != nil {
		return t.err
	}
	if sw, ok := t.w.(*spool.Writer); ok {
		t.err = sw.Flush()
	}
	return t.err
}

func appendOwners(b []byte, owners []timeline.Owner, procs *identcache.Procs) []byte {
	if len(owners) == 0 {
		return append(b, '-')
	}
	for i := range owners {
		if i > 0 {
			b = append(b, ',')
		}
		o := &owners[i]
		b = procs.Append(b, o.PID, &o.Comm, appendProc)
		b = append(b, ':')
		b = strconv.AppendInt(b, int64(o.FD), 10)
	}
	return b
}

// appendProc appends a process as the table names it: name[pid].
func appendProc(b []byte, pid uint32, comm *[16]byte) []byte {
	for _, c := range comm {
		if c == 0 {
			break
		}
		b = append(b, c)
	}
	b = append(b, '[')
	b = strconv.AppendUint(b, uint64(pid), 10)
	return append(b, ']')
}

// appendCookie prints the socket's identity (event.AppendID).
func appendCookie(b []byte, cookie uint64) []byte { return event.AppendID(b, cookie) }

// AppendDuration formats ns compactly: 850ns, 12.3µs, 4.56ms, 1.002s, 3m04s.
// Integer arithmetic only: this runs for every line.
func AppendDuration(b []byte, ns int64) []byte {
	switch {
	case ns < 1_000:
		b = strconv.AppendInt(b, ns, 10)
		return append(b, "ns"...)
	case ns < 1_000_000:
		b = appendFixed(b, (ns+50)/100, 1)
		return append(b, "µs"...)
	case ns < 1_000_000_000:
		b = appendFixed(b, (ns+5_000)/10_000, 2)
		return append(b, "ms"...)
	case ns < 60_000_000_000:
		b = appendFixed(b, (ns+500_000)/1_000_000, 3)
		return append(b, 's')
	}
	s := ns / 1e9
	b = strconv.AppendInt(b, s/60, 10)
	b = append(b, 'm')
	if s%60 < 10 {
		b = append(b, '0')
	}
	b = strconv.AppendInt(b, s%60, 10)
	return append(b, 's')
}

// appendFixed appends v/10^decimals with exactly that many decimals.
func appendFixed(b []byte, v int64, decimals int) []byte {
	div := int64(1)
	for i := 0; i < decimals; i++ {
		div *= 10
	}
	b = strconv.AppendInt(b, v/div, 10)
	b = append(b, '.')
	frac := v % div
	for div /= 10; div > 0; div /= 10 {
		b = append(b, byte('0'+frac/div))
		frac %= div
	}
	return b
}

func pad(b []byte, s string, w int) []byte {
	start := len(b)
	b = append(b, s...)
	return fill(b, start, w)
}

func padLeft(b []byte, s string, w int) []byte {
	for i := len(s); i < w; i++ {
		b = append(b, ' ')
	}
	return append(b, s...)
}

// spaces pads the columns: appended in one piece, not a byte at a time
// (padding was a sixth of the table's cost).
const spaces = "                                                                "

// appendSpaces appends n spaces.
func appendSpaces(b []byte, n int) []byte {
	for n > len(spaces) {
		b = append(b, spaces...)
		n -= len(spaces)
	}
	if n > 0 {
		b = append(b, spaces[:n]...)
	}
	return b
}

// fill pads b[start:] with spaces to width w, plus one separating space.
// The columns it pads are ASCII (addresses, states, causes, owners), so
// bytes are characters.
func fill(b []byte, start, w int) []byte {
	return appendSpaces(b, max(w-(len(b)-start), 0)+1)
}

// fillRunes is fill for text that may hold multi-byte characters.
func fillRunes(b []byte, start, w int) []byte {
	return appendSpaces(b, max(w-runeCount(b[start:]), 0)+1)
}

// fillLeft right-aligns b[start:] in width w.
func fillLeft(b []byte, start, w int) []byte {
	n := runeCount(b[start:])
	if n >= w {
		return b
	}
	gap := w - n
	b = appendSpaces(b, gap)
	copy(b[start+gap:], b[start:len(b)-gap])
	copy(b[start:start+gap], spaces[:min(gap, len(spaces))])
	for i := len(spaces); i < gap; i++ {
		b[start+i] = ' '
	}
	return b
}

func runeCount(b []byte) int {
	n := 0
	for _, c := range b {
		if c&0xc0 != 0x80 {
			n++
		}
	}
	return n
}

// Summary prints the end-of-trace summary.
func (t *Table) Summary(s *record.Summary) {
	t.Printf("\n%d events, %d transitions, %d sockets in %s; lost: %d (ring buffer full %d, skipped by the kernel %d), gaps %d%s\n",
		s.Events, s.Transitions, s.Sockets, time.Duration(s.DurationNs).Round(time.Millisecond),
		s.Lost.Total(), s.Lost.RingbufFull, s.Lost.RecursionMisses, s.Lost.Gaps, s.Lost.EndsUnseenText())
	if s.QueriesFailed > 0 {
		t.Printf("%d socket-table queries failed: the diagnoses made meanwhile rest on tcptrail's own evidence\n",
			s.QueriesFailed)
	}
	if s.TimewaitUnfollowed > 0 {
		t.Printf("%d timewait sockets were not followed to their end: too many were alive at once\n",
			s.TimewaitUnfollowed)
	}
	if s.CloseWaitUnfollowed > 0 {
		t.Printf("%d sockets in CLOSE_WAIT were not followed for leaks: over a million were at once\n",
			s.CloseWaitUnfollowed)
	}
}
