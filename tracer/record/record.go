// Package record defines the records tcptrail reports: a capture file's
// lines (JSON Lines, header first, summary last), what `tcptrail trace
// --json` prints live, and what the diagnoser hands to every sink. It is a
// leaf: the pipeline builds records here, the sinks (tracer/capture's
// writer, the live table) and readers use them. docs/schema.md documents
// every field; the field names are a contract, keep them stable and
// snake_case.
package record

import (
	"fmt"
	"time"
)

// SchemaVersion is the version written to headers. Readers refuse newer ones.
// Version 2 added "netns" to sockets; version 1 captures read with netns 0.
const SchemaVersion = 2

// Record types, the value of every record's "type" field.
const (
	TypeHeader       = "header"
	TypeTransition   = "transition"
	TypeCall         = "call"
	TypeExit         = "exit"
	TypeFork         = "fork"
	TypeSnapshot     = "snapshot"
	TypeLost         = "lost"
	TypeLeak         = "leak"
	TypeBindConflict = "bind_conflict"
	TypeConnectFail  = "connect_failed"
	TypeSummary      = "summary"
)

// TimeLayout is RFC 3339 with nanoseconds, fixed width.
const TimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Header opens every capture.
type Header struct {
	Type        string    `json:"type"`
	Schema      int       `json:"schema"`
	Tool        string    `json:"tool"`
	Version     string    `json:"version"`
	Host        string    `json:"host"`
	Kernel      string    `json:"kernel"`
	StartTime   time.Time `json:"start_time"`
	StartMonoNs uint64    `json:"start_mono_ns"`
	Filters     Filters   `json:"filters"`
	Attach      string    `json:"attach"` // how the programs were attached
	// SyscallHooks is how the socket syscalls were hooked: function,
	// syscall-tracepoint or tracepoint (absent: not hooked, no causes).
	SyscallHooks string `json:"syscall_hooks,omitempty"`
}

// Filters are the capture's kernel-side filters.
type Filters struct {
	Ports []uint16 `json:"ports"` // empty: every port
	PID   uint32   `json:"pid"`   // 0: every process
	// NetNS: only the sockets of this network namespace (inode).
	NetNS uint32 `json:"netns,omitempty"`
	// Scope names the container (its id) or the cgroup traced, if one
	// was chosen.
	Scope string `json:"scope,omitempty"`
}

// Owner is a process holding a socket through a file descriptor.
type Owner struct {
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	FD   int32  `json:"fd"`
	// Container is the id of the container the process runs in; absent
	// when it runs in none.
	Container string `json:"container,omitempty"`
}

// Socket names a socket: its cookie is its identity, the addresses say
// which connection it is.
type Socket struct {
	Cookie uint64 `json:"cookie"`
	// NetNS is the inode of the socket's network namespace: sockets of
	// different namespaces may share addresses.
	NetNS  uint32 `json:"netns"`
	Family string `json:"family"` // "ipv4" or "ipv6"
	Laddr  string `json:"laddr"`
	Lport  uint16 `json:"lport"`
	Raddr  string `json:"raddr"`
	Rport  uint16 `json:"rport"`
}

// Transition is one TCP state change of one socket.
type Transition struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	Socket
	Old string `json:"old"`
	New string `json:"new"`
	// PrevStateNs is the time spent in Old; null when the socket's previous
	// transition was not seen (first sight, or a gap).
	PrevStateNs *int64 `json:"prev_state_ns"`
	// Gap: Old is not the state the previous transition of this socket
	// entered, so transitions in between were lost. ExpectedOld is that state.
	Gap         bool   `json:"gap,omitempty"`
	ExpectedOld string `json:"expected_old,omitempty"`
	// PID and Comm are the task that was running when the kernel made the
	// change: context, often not the owner.
	PID  uint32 `json:"pid"`
	Comm string `json:"comm"`
	// Cgroup is the cgroup (v2) id of the process that created the socket.
	Cgroup uint64 `json:"cgroup,omitempty"`
	// Cause says why the state changed; CauseKind is its machine-readable
	// class (see docs/schema.md).
	Cause     string  `json:"cause"`
	CauseKind string  `json:"cause_kind"`
	Owners    []Owner `json:"owners"`
	SkErr     string  `json:"sk_err,omitempty"` // the socket's pending error, e.g. ECONNREFUSED
}

// Call is a socket syscall that matters but changed no state by itself: an
// accept, a bind, a failed bind or connect, a close or shutdown that only
// dropped one reference.
type Call struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	Call   string    `json:"call"` // accept, bind, connect, listen, close, shutdown
	FD     int32     `json:"fd"`
	Ret    int32     `json:"ret"`
	Errno  string    `json:"errno,omitempty"`
	Socket
	State  string  `json:"state,omitempty"` // the socket's state at the call
	PID    uint32  `json:"pid"`
	Comm   string  `json:"comm"`
	Note   string  `json:"note,omitempty"`
	Owners []Owner `json:"owners,omitempty"` // who still holds the socket after the call
}

// Exit is the exit of a process (its last thread).
type Exit struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	PID    uint32    `json:"pid"`
	Comm   string    `json:"comm"`
}

// Fork is a new process that inherited its parent's file descriptors.
type Fork struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	PID    uint32    `json:"pid"`
	Comm   string    `json:"comm"`
	Child  uint32    `json:"child"`
}

// Snapshot is a socket's state as the kernel's socket table reports it:
// sockets that existed when tracing started, and the timewait phases that no
// tracepoint reports.
type Snapshot struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	Reason string    `json:"reason"` // "start", "timewait", "timewait_gone"
	Socket
	State   string `json:"state"`
	TimerMs int64  `json:"timer_ms,omitempty"` // time left on the socket's timer
	// StateNs, at start: how long it has been in State at least, where the
	// kernel tells (CLOSE_WAIT and FIN_WAIT2: since the peer's last ACK).
	StateNs int64   `json:"state_ns,omitempty"`
	Owners  []Owner `json:"owners"`
	Note    string  `json:"note,omitempty"` // how the change was seen
}

// Lost reports events lost so far; every count is a total since the start.
type Lost struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	Losses
}

// Losses counts every way an event can be lost.
type Losses struct {
	RingbufFull     uint64 `json:"ringbuf_full"`     // kernel: no room in the ring buffer
	RecursionMisses uint64 `json:"recursion_misses"` // kernel: program already running on that CPU
	InflightFull    uint64 `json:"inflight_full"`    // kernel: syscall not correlated, map full
	QueueFull       uint64 `json:"queue_full"`       // user space: output queue full
	Gaps            uint64 `json:"gaps"`             // transitions whose old state was not the last seen
	// EndsUnseen counts the sockets the kernel closed without tcptrail
	// seeing their last transitions (the kernel no longer had them, while
	// tcptrail still saw them open): the symptom, like gaps, of losses,
	// counted above or not.
	EndsUnseen uint64 `json:"ends_unseen"`
}

// EndsUnseenText is ", ends unseen N" for the summary lines, or nothing
// when there were none.
func (l Losses) EndsUnseenText() string {
	if l.EndsUnseen == 0 {
		return ""
	}
	return fmt.Sprintf(", ends unseen %d", l.EndsUnseen)
}

// Total is the number of events lost outright (gaps are their symptom).
func (l Losses) Total() uint64 {
	return l.RingbufFull + l.RecursionMisses + l.QueueFull
}

// Holder is a socket that holds a local address, as a diagnosis names it.
type Holder struct {
	Socket
	State   string `json:"state"`
	StateNs int64  `json:"state_ns"` // time in State so far; -1: unknown
	// StateAtLeast: StateNs is a lower bound.
	StateAtLeast bool    `json:"state_at_least,omitempty"`
	Owners       []Owner `json:"owners"`
	Why          string  `json:"why"`
}

// Leak follows a socket stuck in CLOSE_WAIT: the peer closed and the owner
// has not. Phase "stuck" is reported once, while it is stuck; a second record
// says how it ended.
type Leak struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	Phase  string    `json:"phase"` // stuck, closed_late, closed_by_exit, still_open
	Socket
	State string    `json:"state"`
	Since time.Time `json:"since"` // when it entered CLOSE_WAIT
	AgeNs int64     `json:"age_ns"`
	// AgeAtLeast: it was in CLOSE_WAIT before the trace, and Since and
	// AgeNs are the kernel's lower bound (the peer's last ACK).
	AgeAtLeast bool    `json:"age_at_least,omitempty"`
	Owners     []Owner `json:"owners"`
	Message    string  `json:"message"`
	// Unconfirmed: reported from tcptrail's own evidence, the kernel's
	// socket table could not be asked (its namespace gone, a query failed).
	Unconfirmed bool `json:"unconfirmed,omitempty"`
}

// BindConflict is a bind or connect that failed with EADDRINUSE or
// EADDRNOTAVAIL, with every socket holding that address.
type BindConflict struct {
	Type    string    `json:"type"`
	Time    time.Time `json:"time"`
	MonoNs  uint64    `json:"mono_ns"`
	Call    string    `json:"call"`
	Errno   string    `json:"errno"`
	PID     uint32    `json:"pid"`
	Comm    string    `json:"comm"`
	FD      int32     `json:"fd"`
	NetNS   uint32    `json:"netns"` // the namespace the address was asked for in
	Laddr   string    `json:"laddr"`
	Lport   uint16    `json:"lport"`
	Holders []Holder  `json:"holders"`
	Message string    `json:"message"`
}

// ConnectFail is a connection attempt that failed: refused, timed out, reset.
type ConnectFail struct {
	Type   string    `json:"type"`
	Time   time.Time `json:"time"`
	MonoNs uint64    `json:"mono_ns"`
	Socket
	Errno   string  `json:"errno"`
	Owners  []Owner `json:"owners"`
	Message string  `json:"message"`
}

// Summary closes a capture. A capture without one was cut short.
type Summary struct {
	Type        string    `json:"type"`
	Time        time.Time `json:"time"`
	MonoNs      uint64    `json:"mono_ns"`
	DurationNs  int64     `json:"duration_ns"`
	Events      uint64    `json:"events"`
	Transitions uint64    `json:"transitions"`
	Sockets     uint64    `json:"sockets"`
	Lost        Losses    `json:"lost"`
	Leaks       []Leak    `json:"leaks"` // leaks at the end: still open, or how they ended (the latest 1000)
	// LeaksOmitted counts the older leaks left out of Leaks.
	LeaksOmitted uint64 `json:"leaks_omitted,omitempty"`
	// TimewaitUnfollowed counts timewait sockets whose phases were not
	// followed because too many were alive at once.
	TimewaitUnfollowed uint64 `json:"timewait_unfollowed,omitempty"`
	// CloseWaitUnfollowed counts sockets in CLOSE_WAIT not followed for
	// leaks because over a million were at once.
	CloseWaitUnfollowed uint64 `json:"close_wait_unfollowed,omitempty"`
	// QueriesFailed counts socket-table queries (sock_diag) that failed:
	// the diagnoses made meanwhile rest on tcptrail's own evidence.
	QueriesFailed uint64 `json:"queries_failed"`
}
