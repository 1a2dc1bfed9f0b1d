package capture

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/internal/clockfmt"
	"github.com/tcptrail/tcptrail/tracer/internal/identcache"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/spool"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// flushAt is how much the writer buffers before it writes: a spool's
// chunk less room for the line that crosses it, so that the buffer does
// not grow. Records are written whole: a crash leaves complete lines and
// at most a cut last one.
const flushAt = spool.ChunkSize - 4<<10

// Writer writes records as JSON Lines. Transitions, the hot path, are
// formatted by hand into a reused buffer; the rare records go through
// encoding/json.
type Writer struct {
	w     io.Writer
	sync  func() error // set when writing a file: called on Close
	buf   []byte
	err   error
	cache lineCache
}

// lineCache keeps text made for one line for the next lines: each part
// nil formats afresh, except the clock.
type lineCache struct {
	clock *clockfmt.Cache
	mono  *clockfmt.Mono
	ids   *identcache.Cache
	parts *identParts
	procs *identcache.Procs
}

func newLineCache() lineCache {
	return lineCache{clock: new(clockfmt.Cache), mono: new(clockfmt.Mono), ids: new(identcache.Cache), parts: new(identParts), procs: new(identcache.Procs)}
}

// freshCache formats everything afresh.
func freshCache() *lineCache { return &lineCache{clock: new(clockfmt.Cache)} }

func (c *lineCache) appendIdent(b []byte, e *event.Event) []byte {
	if c.ids == nil {
		return appendEventSocket(b, e)
	}
	return c.ids.Append(b, e, c.formatIdent)
}

// formatIdent formats e's socket identity with the parts c keeps.
func (c *lineCache) formatIdent(b []byte, e *event.Event) []byte {
	return appendSocket(b, e.Cookie, e.NetNS, e.Family, e.Local.Addr(), e.Local.Port(), e.Remote.Addr(), e.Remote.Port(), c.parts)
}

// NewWriter writes to w. When w is a regular file, or a spool over one,
// Close commits it to disk.
func NewWriter(w io.Writer) *Writer {
	cw := &Writer{w: w, buf: make([]byte, 0, spool.ChunkSize), cache: newLineCache()}
	switch f := w.(type) {
	case *os.File:
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			cw.sync = f.Sync
		}
	case *spool.Writer:
		cw.sync = f.Sync
	}
	return cw
}

// Create opens path for a capture: created or truncated, readable by its
// owner only, since it names processes and addresses.
func Create(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cannot write capture file: %w", err)
	}
	// An existing file keeps its mode on O_TRUNC: tighten it.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("cannot write capture file: %w", err)
	}
	return f, nil
}

// Write appends any record that encoding/json can marshal.
func (w *Writer) Write(rec any) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode %T: %w", rec, err)
	}
	w.buf = append(w.buf, b...)
	w.buf = append(w.buf, '\n')
	return w.maybeFlush()
}

// WriteTransition appends a transition record. wallNs is its wall-clock
// time. It does not allocate.
func (w *Writer) WriteTransition(t *timeline.Transition, wallNs int64) error {
	w.buf = appendTransition(w.buf, t, wallNs, &w.cache)
	return w.maybeFlush()
}

func (w *Writer) maybeFlush() error {
	if len(w.buf) >= flushAt {
		return w.writeOut()
	}
	return w.err
}

func (w *Writer) writeOut() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) > 0 {
		// A spool takes the buffer over rather than copying it.
		if sw, ok := w.w.(*spool.Writer); ok {
			w.buf, w.err = sw.Hand(w.buf)
			return w.err
		}
		_, w.err = w.w.Write(w.buf)
		w.buf = w.buf[:0]
	}
	return w.err
}

// Flush writes out what is buffered, and has a destination that buffers
// too (a spool) write it out.
func (w *Writer) Flush() error {
	if err := w.writeOut(); err != nil {
		return err
	}
	if sw, ok := w.w.(*spool.Writer); ok {
		w.err = sw.Flush()
	}
	return w.err
}

// Close flushes and, for a file, syncs it to disk (a spool is drained
// first). It does not close w's underlying writer.
func (w *Writer) Close() error {
	err := w.Flush()
	if w.sync != nil && err == nil {
		err = w.sync()
	}
	return err
}

// WriteCall appends the record of a call that needs no note (see
// record.CallRecord, which it matches field for field). wallNs is its
// wall-clock time. It does not allocate.
func (w *Writer) WriteCall(e *event.Event, wallNs int64, owners []timeline.Owner) error {
	w.buf = appendCall(w.buf, e, wallNs, owners, &w.cache)
	return w.maybeFlush()
}

// appendCall appends a call's record, with the text c keeps from earlier
// lines: an accept comes right after its socket's handshake, whose
// transitions gave its identity.
func appendCall(b []byte, e *event.Event, wallNs int64, owners []timeline.Owner, c *lineCache) []byte {
	b = append(b, `{"type":"call","time":"`...)
	b = c.clock.AppendRFC3339Nano(b, wallNs)
	b = append(b, `","mono_ns":`...)
	b = c.mono.Append(b, e.MonoNs)
	b = append(b, `,"call":"`...)
	b = append(b, e.Call.String()...)
	b = append(b, `","fd":`...)
	b = strconv.AppendInt(b, int64(e.FD), 10)
	b = append(b, `,"ret":`...)
	b = strconv.AppendInt(b, int64(e.Ret), 10)
	if name := record.ErrnoName(e.Errno()); name != "" {
		b = append(b, `,"errno":"`...)
		b = append(b, name...)
		b = append(b, '"')
	}
	b = c.appendIdent(b, e)
	if e.Old != 0 {
		b = append(b, `,"state":"`...)
		b = append(b, e.Old.String()...)
		b = append(b, '"')
	}
	b = append(b, ',')
	b = c.procs.Append(b, e.PID, &e.Comm, appendProc)
	if len(owners) > 0 {
		b = append(b, `,"owners":`...)
		b = appendOwners(b, owners, c.procs)
	}
	return append(b, "}\n"...)
}

// AppendTransition appends t as one JSON line.
func AppendTransition(b []byte, t *timeline.Transition, wallNs int64) []byte {
	return appendTransition(b, t, wallNs, freshCache())
}

// appendTransition appends t, with the text c keeps from earlier lines.
func appendTransition(b []byte, t *timeline.Transition, wallNs int64, c *lineCache) []byte {
	e := t.Event
	b = append(b, `{"type":"transition","time":"`...)
	b = c.clock.AppendRFC3339Nano(b, wallNs)
	b = append(b, `","mono_ns":`...)
	b = c.mono.Append(b, e.MonoNs)
	b = c.appendIdent(b, e)
	b = append(b, stateText(e.Old, e.New)...)
	if t.PrevStateNs < 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, t.PrevStateNs, 10)
	}
	if t.Gap {
		b = append(b, `,"gap":true,"expected_old":"`...)
		b = append(b, t.ExpectedOld.String()...)
		b = append(b, '"')
	}
	b = append(b, ',')
	b = c.procs.Append(b, e.PID, &e.Comm, appendProc)
	if e.Cgroup != 0 {
		b = append(b, `,"cgroup":`...)
		b = strconv.AppendUint(b, e.Cgroup, 10)
	}
	b = append(b, `,"cause":"`...)
	b = t.Cause.AppendText(b)
	b = append(b, causeKindText(t.Cause.Kind)...)
	b = appendOwners(b, t.Owners, c.procs)
	if e.New != event.Close {
		return append(b, "}\n"...)
	}
	if name := record.ErrnoName(e.SkErr); name != "" {
		b = append(b, `,"sk_err":"`...)
		b = append(b, name...)
		b = append(b, '"')
	}
	return append(b, "}\n"...)
}

// appendEventSocket appends the identity of e's socket.
func appendEventSocket(b []byte, e *event.Event) []byte {
	return appendSocket(b, e.Cookie, e.NetNS, e.Family, e.Local.Addr(), e.Local.Port(), e.Remote.Addr(), e.Remote.Port(), nil)
}

// appendSocket appends a socket's identity; parts, if not nil, keeps the
// text of its namespace and addresses for the next sockets.
func appendSocket(b []byte, cookie uint64, netns uint32, family uint16, laddr netip.Addr, lport uint16, raddr netip.Addr, rport uint16, parts *identParts) []byte {
	b = append(b, `,"cookie":`...)
	b = strconv.AppendUint(b, cookie, 10)
	b = append(b, `,"netns":`...)
	b = parts.appendNetNS(b, netns)
	b = append(b, `,"family":"`...)
	b = append(b, event.FamilyName(family)...)
	b = append(b, `","laddr":"`...)
	b = parts.appendAddr(b, identcache.Local, laddr)
	b = append(b, `","lport":`...)
	b = strconv.AppendUint(b, uint64(lport), 10)
	b = append(b, `,"raddr":"`...)
	b = parts.appendAddr(b, identcache.Remote, raddr)
	b = append(b, `","rport":`...)
	b = strconv.AppendUint(b, uint64(rport), 10)
	return b
}

// identParts keeps the text of the parts of socket identities that
// sockets share: the namespace (nearly always the same) and the local and
// remote addresses last written (a server's own address, a client's
// server). A socket whose identity is not in the identity cache yet (every
// socket at its first transition, a client again when its port is bound)
// costs the formatting of its id and ports only.
type identParts struct {
	netns     uint32
	netnsText []byte // empty: none yet
	addrs     identcache.Addrs
}

func (p *identParts) appendNetNS(b []byte, netns uint32) []byte {
	if p == nil {
		return strconv.AppendUint(b, uint64(netns), 10)
	}
	if netns != p.netns || len(p.netnsText) == 0 {
		p.netns, p.netnsText = netns, strconv.AppendUint(p.netnsText[:0], uint64(netns), 10)
	}
	return append(b, p.netnsText...)
}

func (p *identParts) appendAddr(b []byte, role identcache.Role, a netip.Addr) []byte {
	if p == nil {
		return a.AppendTo(b)
	}
	return p.addrs.Append(b, role, a)
}

// appendProc appends a process's fields: `"pid":N,"comm":"NAME"`.
func appendProc(b []byte, pid uint32, comm *[16]byte) []byte {
	b = append(b, `"pid":`...)
	b = strconv.AppendUint(b, uint64(pid), 10)
	b = append(b, `,"comm":`...)
	return appendJSONString(b, trimComm(comm[:]))
}

// AppendOwners appends owners as a JSON array.
func AppendOwners(b []byte, owners []timeline.Owner) []byte {
	return appendOwners(b, owners, nil)
}

func appendOwners(b []byte, owners []timeline.Owner, procs *identcache.Procs) []byte {
	b = append(b, '[')
	for i := range owners {
		o := &owners[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '{')
		b = procs.Append(b, o.PID, &o.Comm, appendProc)
		b = append(b, `,"fd":`...)
		b = strconv.AppendInt(b, int64(o.FD), 10)
		if o.Container != "" {
			b = append(b, `,"container":"`...)
			b = append(b, o.Container...) // hex digits: nothing to escape
			b = append(b, '"')
		}
		b = append(b, '}')
	}
	return append(b, ']')
}

func trimComm(c []byte) []byte {
	for i, x := range c {
		if x == 0 {
			return c[:i]
		}
	}
	return c
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted for JSON. Process names are chosen by
// processes: escape everything that needs it, keep valid UTF-8, and turn
// invalid bytes into \u00XX so the line stays valid JSON.
func appendJSONString(b []byte, s []byte) []byte {
	b = append(b, '"')
	// Nearly every name is plain ASCII: one copy.
	plain := true
	for _, c := range s {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			plain = false
			break
		}
	}
	if plain {
		b = append(b, s...)
		return append(b, '"')
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		case c >= 0x80:
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n
			continue
		default:
			b = append(b, c)
		}
		i++
	}
	return append(b, '"')
}
