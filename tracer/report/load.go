package report

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"

	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// Options bound what Load keeps. The zero value means the defaults.
type Options struct {
	// MaxStepsPerSocket bounds one socket's kept steps: past it, the first
	// half and the latest half are kept and the middle counted. Real TCP
	// sockets have a dozen; a listener has a call per accept. Default 200.
	MaxStepsPerSocket int
	// MaxSteps bounds the steps kept for the whole capture (about 64 bytes
	// each): past it, sockets keep their totals and diagnoses but no more
	// steps. Default 4,000,000.
	MaxSteps int
	// MaxDiagnoses bounds the diagnoses kept. Default 100,000.
	MaxDiagnoses int
}

// MaxProblems is how many reading problems a Capture keeps; it counts the
// rest.
const MaxProblems = 20

func (o Options) withDefaults() Options {
	if o.MaxStepsPerSocket <= 0 {
		o.MaxStepsPerSocket = 200
	}
	if o.MaxStepsPerSocket < 2 {
		o.MaxStepsPerSocket = 2
	}
	if o.MaxSteps <= 0 {
		o.MaxSteps = 4_000_000
	}
	if o.MaxDiagnoses <= 0 {
		o.MaxDiagnoses = 100_000
	}
	return o
}

// Load reads a capture with the default Options. See Options.Load.
func Load(r io.Reader) (*Capture, error) { return Options{}.Load(r) }

// Load reads a capture and builds its timelines and connections.
//
// It returns what it could read even when it also returns an error: the
// error joins the problems met (each a *capture.LineError naming its line,
// see Capture.Problems), and is nil for a capture that is only missing its
// summary (see Capture.Complete). A file that is not a capture yields an
// empty Capture and an error wrapping capture.ErrNotCapture or
// capture.ErrSchemaTooNew.
func (o Options) Load(r io.Reader) (*Capture, error) {
	b := NewBuilder(o)
	rd := capture.NewReader(r)
	var problems []error
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if errors.Is(err, capture.ErrNoSummary) {
			continue // the capture says so itself: Summary is nil
		}
		if err != nil {
			b.problem(err)
			problems = append(problems, err)
			if errors.Is(err, capture.ErrTruncated) {
				b.c.Truncated = true
			}
			continue
		}
		if err := b.Add(rec); err != nil {
			err = &capture.LineError{Line: rd.Line(), Err: err}
			b.problem(err)
			problems = append(problems, err)
		}
	}
	c := b.Finish()
	c.Lines = rd.Line()
	if len(problems) > MaxProblems {
		more := len(problems) - MaxProblems
		problems = append(problems[:MaxProblems:MaxProblems], fmt.Errorf("and %d more problems", more))
	}
	return c, errors.Join(problems...)
}

// Builder builds a Capture from records, one at a time: from a file (see
// Load) or straight from a live trace.
type Builder struct {
	o     Options
	c     *Capture
	socks map[uint64]*Socket
	steps int // kept so far
	// leaks are the open leak diagnoses by cookie.
	leaks map[uint64]*Diagnosis
	// failed are sockets of failed binds and connects by pid and fd, so
	// that a bind conflict names the socket whose bind failed.
	failed map[[2]uint32]uint64
	key    []byte
	// Sockets and their first steps come from slabs: see stepsPerSocket.
	sockSlab []Socket
	stepSlab []step
}

// NewBuilder starts an empty Capture.
func NewBuilder(o Options) *Builder {
	c := &Capture{
		strs:      []string{""},
		strIdx:    map[string]uint32{"": 0},
		owners:    [][]record.Owner{nil},
		ownersIdx: map[string]uint32{"": 0},
		exits:     make(map[uint32][]exitRec),
	}
	return &Builder{
		o:      o.withDefaults(),
		c:      c,
		socks:  make(map[uint64]*Socket),
		leaks:  make(map[uint64]*Diagnosis),
		failed: make(map[[2]uint32]uint64),
	}
}

func (b *Builder) problem(err error) {
	if len(b.c.Problems) < MaxProblems {
		b.c.Problems = append(b.c.Problems, err)
	} else {
		b.c.MoreProblems++
	}
}

// Add adds one record, a pointer to a capture record type as
// capture.Reader returns. It copies what it keeps. An error concerns that
// record only: the Builder stays usable.
func (b *Builder) Add(rec any) error {
	c := b.c
	c.Records++
	switch r := rec.(type) {
	case *record.Header:
		c.Header = *r
		c.Header.Filters.Ports = slices.Clone(r.Filters.Ports)
		c.EndNs = max(c.EndNs, r.StartMonoNs)
		return nil
	case *record.Transition:
		return b.transition(r)
	case *record.Call:
		return b.call(r)
	case *record.Snapshot:
		return b.snapshot(r)
	case *record.Exit:
		c.Exits++
		b.seen(r.MonoNs)
		c.exits[r.PID] = append(c.exits[r.PID], exitRec{mono: r.MonoNs, comm: c.intern(r.Comm)})
		return nil
	case *record.Fork:
		c.Forks++
		b.seen(r.MonoNs)
		return nil
	case *record.Lost:
		b.seen(r.MonoNs)
		c.Lost = maxLosses(c.Lost, r.Losses)
		return nil
	case *record.Leak:
		b.seen(r.MonoNs)
		b.leak(r)
		return nil
	case *record.BindConflict:
		b.seen(r.MonoNs)
		bc := *r
		bc.Holders = slices.Clone(r.Holders)
		d := &Diagnosis{Kind: record.TypeBindConflict, MonoNs: r.MonoNs, BindConflict: &bc}
		if cookie := b.failed[[2]uint32{r.PID, uint32(r.FD)}]; cookie != 0 {
			d.cookies = append(d.cookies, cookie)
		}
		for _, h := range r.Holders {
			d.cookies = append(d.cookies, h.Cookie)
		}
		b.diagnosis(d)
		return nil
	case *record.ConnectFail:
		b.seen(r.MonoNs)
		cf := *r
		cf.Owners = slices.Clone(r.Owners)
		b.diagnosis(&Diagnosis{Kind: record.TypeConnectFail, MonoNs: r.MonoNs, ConnectFail: &cf, cookies: []uint64{r.Cookie}})
		return nil
	case *record.Summary:
		b.seen(r.MonoNs)
		s := *r
		s.Leaks = nil // merged into the diagnoses below
		c.Summary = &s
		c.Lost = maxLosses(c.Lost, r.Lost)
		for i := range r.Leaks {
			b.leak(&r.Leaks[i])
		}
		return nil
	}
	c.Records--
	return fmt.Errorf("not a capture record: %T", rec)
}

func (b *Builder) seen(mono uint64) { b.c.EndNs = max(b.c.EndNs, mono) }

func maxLosses(a, b record.Losses) record.Losses {
	return record.Losses{
		RingbufFull:     max(a.RingbufFull, b.RingbufFull),
		RecursionMisses: max(a.RecursionMisses, b.RecursionMisses),
		InflightFull:    max(a.InflightFull, b.InflightFull),
		QueueFull:       max(a.QueueFull, b.QueueFull),
		Gaps:            max(a.Gaps, b.Gaps),
		EndsUnseen:      max(a.EndsUnseen, b.EndsUnseen),
	}
}

// parseState parses a state name; "" is no state.
func parseState(name string) (event.State, error) {
	if name == "" {
		return 0, nil
	}
	st, ok := event.ParseState(name)
	if !ok {
		return 0, fmt.Errorf("unknown TCP state %q", name)
	}
	return st, nil
}

func (b *Builder) transition(r *record.Transition) error {
	if r.Cookie == 0 {
		return errors.New("transition without a socket cookie")
	}
	old, err := parseState(r.Old)
	if err != nil {
		return err
	}
	nw, err := parseState(r.New)
	if err != nil {
		return err
	}
	if nw == 0 {
		return errors.New(`transition without a "new" state`)
	}
	expected, err := parseState(r.ExpectedOld)
	if err != nil {
		return err
	}
	c := b.c
	c.Transitions++
	b.seen(r.MonoNs)
	s := b.socket(&r.Socket, r.MonoNs)
	s.Transitions++
	s.ever |= 1 << nw
	// An accepted socket starts as a clone of its listener: LISTEN was
	// never its own state.
	accepted := old == event.Listen && nw == event.SynRecv
	if old != 0 && !accepted {
		s.ever |= 1 << old
	}
	switch {
	case old == event.Close && nw == event.SynSent:
		s.Role = RoleClient
	case accepted:
		s.Role = RoleServer
	case nw == event.Listen:
		s.Role = RoleListener
	}
	s.State = nw
	if nw == event.Close {
		s.ClosedNs = r.MonoNs
	}
	s.addPID(r.PID)
	owners := b.ownerSet(s, r.Owners)
	prev := int64(-1)
	if r.PrevStateNs != nil {
		prev = *r.PrevStateNs
	}
	b.addStep(s, step{
		kind:     StepTransition,
		mono:     r.MonoNs,
		wall:     r.Time.UnixNano(),
		arg:      prev,
		pid:      r.PID,
		comm:     c.intern(r.Comm),
		text:     c.intern(r.Cause),
		text2:    c.intern(r.CauseKind),
		text3:    c.intern(r.SkErr),
		owners:   owners,
		old:      old,
		new:      nw,
		expected: expected,
		gap:      r.Gap,
	})
	return nil
}

func (b *Builder) call(r *record.Call) error {
	c := b.c
	c.Calls++
	b.seen(r.MonoNs)
	if r.Errno != "" && r.Cookie != 0 {
		b.failed[[2]uint32{r.PID, uint32(r.FD)}] = r.Cookie
	}
	if r.Cookie == 0 {
		// No socket to hang it on: the diagnoses that matter (a bind
		// conflict) carry their own details.
		return nil
	}
	st, err := parseState(r.State)
	if err != nil {
		return err
	}
	s := b.socket(&r.Socket, r.MonoNs)
	if st != 0 {
		s.ever |= 1 << st
		if s.State == 0 {
			s.State = st
		}
	}
	if r.Call == "listen" && r.Ret == 0 {
		s.Role = RoleListener
	}
	s.addPID(r.PID)
	b.addStep(s, step{
		kind:   StepCall,
		mono:   r.MonoNs,
		wall:   r.Time.UnixNano(),
		arg:    int64(r.FD)<<32 | int64(uint32(r.Ret)),
		pid:    r.PID,
		comm:   c.intern(r.Comm),
		text:   c.intern(r.Call),
		text2:  c.intern(r.Errno),
		text3:  c.intern(r.Note),
		owners: b.ownerSet(s, r.Owners),
		old:    st,
	})
	return nil
}

// Snapshot reasons.
const (
	reasonStart        = "start"
	reasonTimewait     = "timewait"
	reasonTimewaitGone = "timewait_gone"
)

func (b *Builder) snapshot(r *record.Snapshot) error {
	if r.Cookie == 0 {
		return errors.New("snapshot without a socket cookie")
	}
	st, err := parseState(r.State)
	if err != nil {
		return err
	}
	c := b.c
	b.seen(r.MonoNs)
	s := b.socket(&r.Socket, r.MonoNs)
	if r.Reason == reasonTimewaitGone {
		s.GoneNs = r.MonoNs
		s.State = event.Close
	} else if st != 0 {
		s.ever |= 1 << st
		s.State = st
		if st == event.Listen {
			s.Role = RoleListener
		}
	}
	b.addStep(s, step{
		kind:   StepSnapshot,
		mono:   r.MonoNs,
		wall:   r.Time.UnixNano(),
		arg:    r.TimerMs,
		text:   c.intern(r.Reason),
		text3:  c.intern(r.Note),
		owners: b.ownerSet(s, r.Owners),
		new:    st,
	})
	return nil
}

// leak adds one leak record to the diagnosis of its CLOSE_WAIT episode.
func (b *Builder) leak(r *record.Leak) {
	l := *r
	l.Owners = slices.Clone(r.Owners)
	d := b.leaks[r.Cookie]
	if d != nil {
		for _, p := range d.Leak {
			if p.Phase == r.Phase && p.Since.Equal(r.Since) {
				return // the summary repeats what was already reported
			}
		}
		if !d.Leak[0].Since.Equal(r.Since) {
			d = nil // a new CLOSE_WAIT episode of the same socket
		}
	}
	if d == nil {
		d = &Diagnosis{Kind: record.TypeLeak, MonoNs: r.MonoNs, cookies: []uint64{r.Cookie}}
		if !b.diagnosis(d) {
			return
		}
		b.leaks[r.Cookie] = d
	}
	d.Leak = append(d.Leak, l)
}

func (b *Builder) diagnosis(d *Diagnosis) bool {
	if len(b.c.Diagnoses) >= b.o.MaxDiagnoses {
		return false
	}
	b.c.Diagnoses = append(b.c.Diagnoses, d)
	return true
}

// socket returns the socket of a record, created on first sight, with its
// addresses updated.
func (b *Builder) socket(r *record.Socket, mono uint64) *Socket {
	s := b.socks[r.Cookie]
	if s == nil {
		if len(b.sockSlab) == 0 {
			b.sockSlab = make([]Socket, 1024)
		}
		s = &b.sockSlab[0]
		b.sockSlab = b.sockSlab[1:]
		*s = Socket{Cookie: r.Cookie, NetNS: r.NetNS, c: b.c, FirstNs: mono}
		b.socks[r.Cookie] = s
		b.c.Sockets = append(b.c.Sockets, s)
	}
	s.FirstNs = min(s.FirstNs, mono)
	s.LastNs = max(s.LastNs, mono)
	if r.Family != "" && r.Family != s.Family {
		s.Family = r.Family
	}
	// Keep the last non-zero addresses: a connecting socket's first
	// transition has no local port yet, a timewait hand-over clears it.
	// Parsing waits for Finish: here a string compare is all it costs.
	if r.Lport != 0 || s.laddr == "" {
		if r.Laddr != s.laddr {
			s.laddr = r.Laddr
		}
		s.lport = r.Lport
	}
	if r.Rport != 0 || s.raddr == "" {
		if r.Raddr != s.raddr {
			s.raddr = r.Raddr
		}
		s.rport = r.Rport
	}
	return s
}

func (s *Socket) addPID(pid uint32) {
	if pid != 0 && len(s.pids) < maxPIDs && !slices.Contains(s.pids, pid) {
		s.pids = append(s.pids, pid)
	}
}

// ownerSet interns owners and remembers them on s.
func (b *Builder) ownerSet(s *Socket, owners []record.Owner) uint32 {
	if len(owners) == 0 {
		return 0
	}
	c := b.c
	// Most steps repeat the socket's previous owners: no lookup.
	if prev := c.owners[s.owners]; slices.Equal(prev, owners) {
		return s.owners
	}
	key := b.key[:0]
	for _, o := range owners {
		key = binary.LittleEndian.AppendUint32(key, o.PID)
		key = binary.LittleEndian.AppendUint32(key, uint32(o.FD))
		key = append(key, o.Comm...)
		key = append(key, 0)
	}
	b.key = key
	idx, ok := c.ownersIdx[string(key)]
	if !ok {
		idx = uint32(len(c.owners))
		c.owners = append(c.owners, slices.Clone(owners))
		c.ownersIdx[string(key)] = idx
	}
	s.owners = idx
	for _, o := range owners {
		s.addPID(o.PID)
	}
	return idx
}

func (c *Capture) intern(s string) uint32 {
	if i, ok := c.strIdx[s]; ok {
		return i
	}
	i := uint32(len(c.strs))
	c.strs = append(c.strs, s)
	c.strIdx[s] = i
	return i
}

// stepsPerSocket is the room a socket's timeline starts with: a TCP
// connection's end takes five or six steps. Sockets take their first
// steps from a shared slab, so that a million steps cost a few large
// allocations instead of a growing slice per socket.
const stepsPerSocket = 6

// addStep keeps a step within the bounds of Options.
func (b *Builder) addStep(s *Socket, st step) {
	limit := b.o.MaxStepsPerSocket
	switch {
	case b.steps >= b.o.MaxSteps:
		s.Omitted++
		b.c.OmittedSteps++
		if s.omitAt == 0 && s.tail == nil {
			s.omitAt = len(s.steps)
		}
		return
	case s.steps == nil:
		if len(b.stepSlab)+stepsPerSocket > cap(b.stepSlab) {
			b.stepSlab = make([]step, 0, 1024*stepsPerSocket)
		}
		n := len(b.stepSlab)
		b.stepSlab = b.stepSlab[:n+stepsPerSocket]
		s.steps = b.stepSlab[n : n : n+stepsPerSocket]
		fallthrough
	case len(s.steps) < limit/2 || (s.tail == nil && len(s.steps) < limit):
		s.steps = append(s.steps, st)
		b.steps++
		return
	}
	// Full: from here the latest limit/2 steps are kept in a ring after
	// the first limit/2.
	if s.tail == nil {
		half := limit / 2
		s.tail = &ring{steps: append(make([]step, 0, limit-half), s.steps[half:]...)}
		s.steps = s.steps[:half:half]
		s.omitAt = half
	}
	r := s.tail
	if len(r.steps) < cap(r.steps) {
		r.steps = append(r.steps, st)
		b.steps++
		return
	}
	r.steps[r.at] = st
	r.at = (r.at + 1) % len(r.steps)
	s.Omitted++
	b.c.OmittedSteps++
}

// Finish orders the timelines, pairs the ends of connections and returns
// the Capture. The Builder must not be used after.
func (b *Builder) Finish() *Capture {
	c := b.c
	if c.Summary != nil {
		c.EndNs = max(c.EndNs, c.Summary.MonoNs)
	}
	for _, s := range c.Sockets {
		if r := s.tail; r != nil {
			s.steps = append(s.steps, r.steps[r.at:]...)
			s.steps = append(s.steps, r.steps[:r.at]...)
			s.tail = nil
		}
		// Records arrive nearly in time order; a stable sort keeps the
		// file's order for equal times.
		byMono := func(a, b step) int { return cmp.Compare(a.mono, b.mono) }
		if s.Omitted > 0 && s.omitAt > 0 && s.omitAt <= len(s.steps) {
			slices.SortStableFunc(s.steps[:s.omitAt], byMono)
			slices.SortStableFunc(s.steps[s.omitAt:], byMono)
		} else {
			slices.SortStableFunc(s.steps, byMono)
		}
		s.Local = parseAddrPort(s.laddr, s.lport)
		s.Remote = parseAddrPort(s.raddr, s.rport)
		if s.Role == RoleUnknown && s.EverIn(event.Listen) {
			s.Role = RoleListener
		}
	}
	for _, d := range c.Diagnoses {
		for _, cookie := range d.cookies {
			s := b.socks[cookie]
			if s == nil || slices.Contains(d.Sockets, s) {
				continue
			}
			d.Sockets = append(d.Sockets, s)
			s.Diagnoses = append(s.Diagnoses, d)
		}
	}
	b.pair()
	return c
}

func parseAddrPort(addr string, port uint16) netip.AddrPort {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a, port)
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// pairKey names the connection an end belongs to the same way from both
// ends: its network namespace (namespaces reuse each other's addresses),
// its two addresses in a fixed order (an IPv4 client of a dual-stack server
// appears there as ::ffff:a.b.c.d, so unmapped), and which of the two is
// local.
type pairKey struct {
	netns   uint32
	lo, hi  netip.AddrPort
	localHi bool
	s       *Socket
}

// pair sorts sockets into listeners, others and connections, pairing each
// socket with the socket whose four-tuple mirrors its own and whose life
// overlaps it. A four-tuple can be reused once the previous connection is
// gone (or its server end is in timewait), so of several candidates the
// one that started closest in time wins. Sorting by four-tuple instead of
// indexing a map keeps the memory this takes small.
func (b *Builder) pair() {
	c := b.c
	ends := make([]pairKey, 0, len(c.Sockets))
	listenPorts := make(map[uint16]bool)
	for _, s := range c.Sockets {
		switch {
		case s.Role == RoleListener:
			c.Listeners = append(c.Listeners, s)
			listenPorts[s.Local.Port()] = true
		case s.Remote.Port() != 0 && s.Remote.Addr().IsValid():
			l, r := unmap(s.Local), unmap(s.Remote)
			k := pairKey{netns: s.NetNS, lo: l, hi: r, s: s}
			if r.Compare(l) < 0 {
				k = pairKey{netns: s.NetNS, lo: r, hi: l, localHi: true, s: s}
			}
			ends = append(ends, k)
		default:
			c.Others = append(c.Others, s)
		}
	}
	bySeen := func(a, b *Socket) int {
		return cmp.Or(cmp.Compare(a.FirstNs, b.FirstNs), cmp.Compare(a.Cookie, b.Cookie))
	}
	slices.SortStableFunc(c.Listeners, bySeen)
	slices.SortStableFunc(c.Others, bySeen)
	slices.SortFunc(ends, func(a, b pairKey) int {
		return cmp.Or(cmp.Compare(a.netns, b.netns), a.lo.Compare(b.lo), a.hi.Compare(b.hi), bySeen(a.s, b.s))
	})

	c.Conns = make([]*Conn, 0, len(ends))
	for i := 0; i < len(ends); {
		j := i + 1
		for j < len(ends) && ends[j].netns == ends[i].netns && ends[j].lo == ends[i].lo && ends[j].hi == ends[i].hi {
			j++
		}
		b.pairGroup(ends[i:j], listenPorts)
		i = j
	}
	slices.SortStableFunc(c.Conns, func(a, b *Conn) int {
		return cmp.Or(cmp.Compare(a.StartNs, b.StartNs), cmp.Compare(a.first().Cookie, b.first().Cookie))
	})
	for i, conn := range c.Conns {
		conn.ID = i + 1
	}
}

// pairGroup pairs the ends of one four-tuple, in order of first sight.
func (b *Builder) pairGroup(group []pairKey, listenPorts map[uint16]bool) {
	for i := range group {
		s := group[i].s
		if s.Conn != nil {
			continue
		}
		var peer *Socket
		var best uint64
		for j := range group {
			p := group[j].s
			// The peer looks at the same addresses from the other side
			// (a connection to itself has both ends the same way round).
			if p == s || p.Conn != nil || (group[j].localHi == group[i].localHi && s.Local != s.Remote) ||
				p.FirstNs >= s.liveEndNs() || s.FirstNs >= p.liveEndNs() {
				continue
			}
			d := max(p.FirstNs, s.FirstNs) - min(p.FirstNs, s.FirstNs)
			if peer == nil || d < best {
				peer, best = p, d
			}
		}
		conn := &Conn{Client: s, Server: peer, StartNs: s.FirstNs, EndNs: s.EndNs()}
		if peer != nil {
			if isServer(s, peer, listenPorts) {
				conn.Client, conn.Server = peer, s
			}
			conn.StartNs = min(conn.StartNs, peer.FirstNs)
			conn.EndNs = max(conn.EndNs, peer.EndNs())
			peer.Conn = conn
		} else if s.Role == RoleServer || (s.Role == RoleUnknown && listenPorts[s.Local.Port()]) {
			conn.Client, conn.Server = nil, s
		}
		s.Conn = conn
		b.c.Conns = append(b.c.Conns, conn)
	}
}

// isServer reports whether a, paired with b, is the server end.
func isServer(a, b *Socket, listenPorts map[uint16]bool) bool {
	switch {
	case a.Role == RoleServer || b.Role == RoleClient:
		return true
	case a.Role == RoleClient || b.Role == RoleServer:
		return false
	}
	return listenPorts[a.Local.Port()] && !listenPorts[b.Local.Port()]
}
