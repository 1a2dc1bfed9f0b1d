// Package report turns a capture into the story of its connections: every
// socket's timeline, the two ends of each connection paired, filters, and
// two renderings: a text sequence diagram and a self-contained HTML page.
//
// Loading is one streaming pass that keeps no raw lines: each socket keeps
// its timeline in a compact form, bounded per socket and in total, so a
// report of millions of events runs in bounded memory. It is pure Go and
// needs no privileges.
package report

import (
	"net/netip"
	"slices"
	"time"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// Capture is a loaded capture.
type Capture struct {
	Header record.Header
	// Summary is nil when the capture was cut short.
	Summary *record.Summary
	// Lost holds the last totals of lost events the capture reported.
	Lost record.Losses

	// Sockets holds every socket, in order of first sight.
	Sockets []*Socket
	// Conns holds the connections, in order of their first event. An end
	// whose peer was not traced makes a connection on its own.
	Conns []*Conn
	// Listeners are the sockets that listened.
	Listeners []*Socket
	// Others are sockets that neither listened nor had a peer: e.g. one
	// whose bind failed.
	Others []*Socket
	// Diagnoses are the leaks, bind conflicts and failed connects, in
	// order of their first record.
	Diagnoses []*Diagnosis

	// Problems are the errors met while reading, at most MaxProblems of
	// them; MoreProblems counts the rest.
	Problems     []error
	MoreProblems int
	// Truncated: the last line was cut short.
	Truncated bool

	Lines       int    // lines read
	Records     int    // records read
	Transitions int    // transition records
	Calls       int    // call records
	Exits       int    // exit records
	Forks       int    // fork records
	EndNs       uint64 // CLOCK_MONOTONIC time of the last record
	// OmittedSteps counts timeline steps not kept (see Options).
	OmittedSteps int

	strs      []string
	strIdx    map[string]uint32
	owners    [][]record.Owner
	ownersIdx map[string]uint32
	exits     map[uint32][]exitRec
}

// Complete reports whether the capture ended with its summary.
func (c *Capture) Complete() bool { return c.Summary != nil }

// StartNs is the CLOCK_MONOTONIC time the capture started.
func (c *Capture) StartNs() uint64 { return c.Header.StartMonoNs }

// Offset is mono's time since the capture started.
func (c *Capture) Offset(mono uint64) time.Duration {
	return time.Duration(int64(mono - c.Header.StartMonoNs))
}

// WallTime is the wall-clock time of a CLOCK_MONOTONIC time, from the
// header's pair of clocks.
func (c *Capture) WallTime(mono uint64) time.Time {
	return c.Header.StartTime.Add(c.Offset(mono))
}

// Duration is how long the capture ran, or ran until it was cut short.
func (c *Capture) Duration() time.Duration {
	if c.Summary != nil && c.Summary.DurationNs > 0 {
		return time.Duration(c.Summary.DurationNs)
	}
	return c.Offset(c.EndNs)
}

// Role is what part a socket plays.
type Role uint8

const (
	RoleUnknown  Role = iota
	RoleClient        // it connected
	RoleServer        // a listener accepted it
	RoleListener      // it listened
)

func (r Role) String() string {
	switch r {
	case RoleClient:
		return "client"
	case RoleServer:
		return "server"
	case RoleListener:
		return "listener"
	}
	return "unknown"
}

// Socket is one socket's timeline.
type Socket struct {
	Cookie uint64
	NetNS  uint32 // inode of its network namespace (0: not recorded)
	Family string
	// Local and Remote are the last non-zero addresses seen: a connecting
	// socket's first transition has no local port yet.
	Local, Remote netip.AddrPort
	Role          Role
	// State is the last state seen, timewait phases included.
	State event.State
	// FirstNs and LastNs are the CLOCK_MONOTONIC times of its first and
	// last record; ClosedNs that of its transition to CLOSE (0: none seen).
	// A socket handed to timewait lives on after ClosedNs until GoneNs
	// (0: not seen to go).
	FirstNs, LastNs, ClosedNs, GoneNs uint64
	// Transitions counts its transitions, kept or not.
	Transitions int
	// Omitted counts its steps not kept: the middle of a long timeline
	// (Options.MaxStepsPerSocket) or all of them once the capture's budget
	// (Options.MaxSteps) ran out.
	Omitted int
	// Diagnoses concern this socket.
	Diagnoses []*Diagnosis
	// Conn is its connection; nil for listeners and other sockets.
	Conn *Conn

	c *Capture
	// steps are kept in order; when a timeline is too long its middle is
	// dropped and omitAt is where (the number of steps kept before it),
	// and tail keeps the latest steps.
	steps  []step
	tail   *ring
	omitAt int
	ever   uint32 // bit per event.State it was ever in
	owners uint32 // last non-empty owner set
	pids   []uint32
	laddr  string
	raddr  string
	lport  uint16
	rport  uint16
}

// ring holds the latest steps of a long timeline.
type ring struct {
	steps []step
	at    int // the oldest
}

// maxPIDs bounds the pids a socket remembers for --pid: owners plus the
// tasks its transitions ran in. Real sockets see a handful.
const maxPIDs = 32

// Name is "laddr:lport → raddr:rport", or "laddr:lport" for a socket with
// no peer.
func (s *Socket) Name() string {
	if s.Remote.Port() == 0 {
		return addrPort(s.Local)
	}
	return addrPort(s.Local) + " → " + addrPort(s.Remote)
}

func addrPort(ap netip.AddrPort) string {
	if !ap.IsValid() {
		return "?"
	}
	return ap.String()
}

// EverIn reports whether the socket was ever in state st. The LISTEN a
// freshly accepted socket inherits from its listener does not count.
func (s *Socket) EverIn(st event.State) bool { return s.ever&(1<<st) != 0 }

// Owners returns the last non-empty set of processes seen holding it.
func (s *Socket) Owners() []record.Owner { return s.c.owners[s.owners] }

// Involves reports whether pid owned the socket or one of its transitions
// ran in pid's context.
func (s *Socket) Involves(pid uint32) bool { return slices.Contains(s.pids, pid) }

// Leaked reports whether the socket has a leak diagnosis.
func (s *Socket) Leaked() bool {
	for _, d := range s.Diagnoses {
		if d.Kind == record.TypeLeak {
			return true
		}
	}
	return false
}

// EndNs is when the socket stopped holding its address: when its timewait
// phase ended, when it closed, or the end of the capture.
func (s *Socket) EndNs() uint64 {
	switch {
	case s.GoneNs != 0:
		return s.GoneNs
	case s.ClosedNs != 0 && s.State == event.Close:
		return s.ClosedNs
	}
	return max(s.c.EndNs, s.LastNs)
}

// liveEndNs is when the socket itself closed (timewait excluded), or the
// end of the capture: what pairing compares.
func (s *Socket) liveEndNs() uint64 {
	switch {
	case s.ClosedNs != 0:
		return s.ClosedNs
	case s.GoneNs != 0:
		// Seen only as a timewait socket (it existed when tracing
		// started): it lived until it was gone.
		return s.GoneNs
	}
	return max(s.c.EndNs, s.LastNs)
}

// activeEndNs is when the socket last changed state itself: its close, or
// its last step when it never closed.
func (s *Socket) activeEndNs() uint64 {
	if s.ClosedNs != 0 {
		return s.ClosedNs
	}
	return s.LastNs
}

// StepKind says what a step of a timeline is.
type StepKind uint8

const (
	StepTransition StepKind = iota + 1 // a state change (transition record)
	StepSnapshot                       // the state seen in the kernel's socket table
	StepCall                           // a syscall that changed no state itself
)

func (k StepKind) String() string {
	switch k {
	case StepTransition:
		return record.TypeTransition
	case StepSnapshot:
		return record.TypeSnapshot
	case StepCall:
		return record.TypeCall
	}
	return "unknown"
}

// Step is one step of a socket's timeline, expanded for reading.
type Step struct {
	Kind   StepKind
	MonoNs uint64
	Time   time.Time
	// Transition: the change. Snapshot: New is the state seen. Call: Old is
	// the state at the call.
	Old, New event.State
	// PrevStateNs is the time spent in Old; -1 when unknown.
	PrevStateNs int64
	Gap         bool
	ExpectedOld event.State
	// PID and Comm are the task the step ran in (for a call, the caller).
	PID  uint32
	Comm string
	// Cause and CauseKind say why a transition happened; SkErr is the
	// socket's pending error at a transition to CLOSE.
	Cause, CauseKind, SkErr string
	// Owners are the holders at that step; shared, do not modify.
	Owners []record.Owner
	// Call, FD, Ret, Errno and Note describe a call; Note also says how
	// a snapshot's change was seen.
	Call  string
	FD    int32
	Ret   int32
	Errno string
	Note  string
	// Reason and TimerMs describe a snapshot.
	Reason  string
	TimerMs int64
}

// step is a Step as kept: strings and owner sets interned, so a million
// steps cost tens of megabytes.
type step struct {
	mono uint64
	wall int64
	// arg: transition: prev_state_ns (-1 unknown); snapshot: timer_ms;
	// call: fd<<32 | uint32(ret).
	arg  int64
	pid  uint32
	comm uint32
	// text: transition: cause; call: call name; snapshot: reason.
	text uint32
	// text2: transition: cause_kind; call: errno.
	text2 uint32
	// text3: transition: sk_err; call and snapshot: note.
	text3    uint32
	owners   uint32
	kind     StepKind
	old, new event.State
	expected event.State
	gap      bool
}

// Steps returns the socket's kept steps in time order. Omitted steps (see
// Omitted) were in the middle, at OmittedAt.
func (s *Socket) Steps() []Step {
	out := make([]Step, len(s.steps))
	for i := range s.steps {
		out[i] = s.c.expand(&s.steps[i])
	}
	return out
}

// OmittedAt is the index in Steps before which Omitted steps are missing.
func (s *Socket) OmittedAt() int { return s.omitAt }

func (c *Capture) expand(st *step) Step {
	out := Step{
		Kind:        st.kind,
		MonoNs:      st.mono,
		Time:        time.Unix(0, st.wall).UTC(),
		Old:         st.old,
		New:         st.new,
		PrevStateNs: -1,
		PID:         st.pid,
		Comm:        c.strs[st.comm],
		Owners:      c.owners[st.owners],
	}
	switch st.kind {
	case StepTransition:
		out.PrevStateNs = st.arg
		out.Gap, out.ExpectedOld = st.gap, st.expected
		out.Cause, out.CauseKind, out.SkErr = c.strs[st.text], c.strs[st.text2], c.strs[st.text3]
	case StepCall:
		out.FD, out.Ret = int32(st.arg>>32), int32(uint32(st.arg))
		out.Call, out.Errno, out.Note = c.strs[st.text], c.strs[st.text2], c.strs[st.text3]
	case StepSnapshot:
		out.Reason, out.TimerMs, out.Note = c.strs[st.text], st.arg, c.strs[st.text3]
	}
	return out
}

// Conn is a connection: the two ends of one four-tuple, live at the same
// time.
type Conn struct {
	ID int // 1-based, in order of StartNs
	// Client is the end that connected (the earlier end when that was not
	// seen); Server the end a listener accepted. Either is nil when only
	// the other end was traced, never both.
	Client, Server *Socket
	// StartNs and EndNs span both ends, timewait included.
	StartNs, EndNs uint64
}

// Ends returns the traced ends, client first.
func (c *Conn) Ends() []*Socket {
	ends := make([]*Socket, 0, 2)
	if c.Client != nil {
		ends = append(ends, c.Client)
	}
	if c.Server != nil {
		ends = append(ends, c.Server)
	}
	return ends
}

// first is the client, or the server when the client was not traced.
func (c *Conn) first() *Socket {
	if c.Client != nil {
		return c.Client
	}
	return c.Server
}

// Name is the connection as seen from its client.
func (c *Conn) Name() string {
	if c.Client != nil {
		return c.Client.Name()
	}
	return addrPort(c.Server.Remote) + " → " + addrPort(c.Server.Local)
}

// Leaked reports whether either end has a leak diagnosis.
func (c *Conn) Leaked() bool {
	for _, s := range c.Ends() {
		if s.Leaked() {
			return true
		}
	}
	return false
}

// Diagnosis is one problem the tracer diagnosed: a leak (with every record
// of it, from stuck to how it ended), a bind conflict, or a failed connect.
type Diagnosis struct {
	Kind   string // record.TypeLeak, TypeBindConflict or TypeConnectFail
	MonoNs uint64 // of its first record
	// Exactly one of these is set, after Kind.
	Leak         []record.Leak
	BindConflict *record.BindConflict
	ConnectFail  *record.ConnectFail
	// Sockets are the sockets it names that the capture has timelines of:
	// the leaking or failing socket, the holders of a conflicting address,
	// and the socket whose bind or connect failed.
	Sockets []*Socket

	cookies []uint64
}

// Message is the diagnosis in one sentence, as the tracer wrote it.
func (d *Diagnosis) Message() string {
	switch {
	case len(d.Leak) > 0:
		return d.Leak[len(d.Leak)-1].Message
	case d.BindConflict != nil:
		return d.BindConflict.Message
	case d.ConnectFail != nil:
		return d.ConnectFail.Message
	}
	return ""
}

// exitRec is a process exit.
type exitRec struct {
	mono uint64
	comm uint32
}

// Exit is a process exit.
type Exit struct {
	PID    uint32
	Comm   string
	MonoNs uint64
}

// ExitsOf returns the exits of pid (pids are reused) in order.
func (c *Capture) ExitsOf(pid uint32) []Exit {
	recs := c.exits[pid]
	out := make([]Exit, len(recs))
	for i, e := range recs {
		out[i] = Exit{PID: pid, Comm: c.strs[e.comm], MonoNs: e.mono}
	}
	return out
}

// ownerString is "comm[pid] fd N, ...".
func ownerString(owners []record.Owner) string {
	b := make([]byte, 0, 32*len(owners))
	for i, o := range owners {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = event.AppendOwner(b, o.Comm, o.PID, o.FD)
	}
	return string(b)
}

// ManyNamespaces reports whether the capture's sockets come from more than
// one network namespace: then connections are named with theirs.
func (c *Capture) ManyNamespaces() bool {
	for _, s := range c.Sockets {
		if s.NetNS != c.Sockets[0].NetNS {
			return true
		}
	}
	return false
}
