package kernel

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"slices"
	"sort"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Config selects what the kernel side reports.
type Config struct {
	// Ports to trace, matched as local or remote port. Empty: every port.
	Ports []uint16
	// PID limits tracing to the sockets of one process. 0: every process.
	PID uint32
	// NetNS limits tracing to the sockets of one network namespace (its
	// inode). 0: every namespace.
	NetNS uint32
	// Cgroups limits tracing to the sockets created in these cgroups (v2
	// ids), at most MaxCgroups. Empty: every cgroup.
	Cgroups []uint64
	// RingBytes is the ring buffer's size: a power of two, at least a page.
	RingBytes int
	// WakeupBytes: the kernel wakes the reader when the pending data
	// crosses this much (0: DefaultWakeupBytes; 1: as soon as anything is
	// pending). The reader polls on a deadline as well, so nothing waits
	// long; small values only cost CPU and skipped events.
	WakeupBytes uint64
	// TransitionsOnly attaches the state-change program alone: no syscall,
	// fork or exit tracing, so no owners or causes. It measures what the
	// correlation costs.
	TransitionsOnly bool
	// SyscallHooks chooses how the socket syscalls are hooked: HooksAuto
	// (the zero value) takes functions where the kernel allows it.
	SyscallHooks Hooks
}

// Hooks is how tcptrail hooks the socket syscalls.
type Hooks string

const (
	HooksAuto Hooks = ""
	// HooksTracepoint: the raw_syscalls sys_enter/sys_exit tracepoints,
	// which run for every syscall on the host.
	HooksTracepoint Hooks = "tracepoint"
	// HooksSyscallTracepoint: the tracepoints of the syscalls tcptrail
	// needs (syscalls:sys_enter_close, ...), found through tracefs. Other
	// syscalls still take the kernel's traced path but run no program.
	HooksSyscallTracepoint Hooks = "syscall-tracepoint"
	// HooksFunction: fentry/fexit on the syscall functions tcptrail needs;
	// other syscalls pay nothing.
	HooksFunction Hooks = "function"
)

// MaxCgroups is how many cgroups the kernel side filters on at most (the
// size of its cgroup_filter map).
const MaxCgroups = 1024

// DefaultRingBytes holds 64k events (128 bytes each with the kernel's
// header): 80 ms at a loopback churn's 800k events a second, 200 ms at
// 300k, which is how long a reader descheduled on a busy host (a virtual
// CPU taken by its hypervisor) may fall behind. Its pages are resident
// from the start, mapped once (Ring): 8 MiB of tcptrail's 28.
const DefaultRingBytes = 8 << 20

// DefaultWakeupBytes batches wakeups: waking the reader on every event
// makes the kernel skip more tracepoint invocations under load.
const DefaultWakeupBytes = 256 << 10

// ErrPrivileges is returned when the process may not load BPF programs.
var ErrPrivileges = errors.New("tcptrail needs CAP_BPF and CAP_PERFMON (or root): run it with sudo")

// ErrNoFunctionHooks is returned when function hooks were asked for on a
// kernel that cannot give them.
var ErrNoFunctionHooks = errors.New("this kernel cannot hook syscall functions")

// ErrNoSyscallTracepoints is returned when the syscall tracepoints were
// asked for on a host that cannot give them.
var ErrNoSyscallTracepoints = errors.New("this host cannot hook the syscall tracepoints")

// ErrNoBTF is returned when the kernel exposes no BTF.
var ErrNoBTF = errors.New("kernel BTF not found: tcptrail needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8 or newer)")

// Counters are the kernel side's loss counters, since load.
type Counters struct {
	RingbufFull     uint64 // events dropped: ring buffer full
	RecursionMisses uint64 // invocations the kernel skipped (program already running on that CPU) and nothing made up for
	InflightFull    uint64 // syscalls left uncorrelated: per-thread map full
}

// Probe is the loaded and attached kernel side.
type Probe struct {
	// Features is what the kernel offered and the programs use.
	Features Features

	// Hooks is how the socket syscalls are hooked ("" with TransitionsOnly).
	Hooks Hooks
	// NoSyscallTracepoints says why the syscall tracepoints were not
	// taken, when the raw_syscalls ones were.
	NoSyscallTracepoints error

	coll   *ebpf.Collection
	progs  []*ebpf.Program
	links  []io.Closer
	reader *Ring
	closed bool
}

// BTFPath is where the kernel exposes its BTF. TCPTRAIL_KERNEL_BTF
// overrides it, to check how tcptrail behaves on a kernel without BTF.
var BTFPath = "/sys/kernel/btf/vmlinux"

func init() {
	if p := os.Getenv("TCPTRAIL_KERNEL_BTF"); p != "" {
		BTFPath = p
	}
}

// Preflight checks privileges and BTF and returns an error that tells the
// user what to do.
func Preflight() error {
	if _, err := os.Stat(BTFPath); err != nil {
		return ErrNoBTF
	}
	if !hasCaps() {
		return ErrPrivileges
	}
	return nil
}

func hasCaps() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return os.Geteuid() == 0
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return true
	}
	return has(unix.CAP_BPF) && has(unix.CAP_PERFMON)
}

// Load loads the programs with cfg's filters, in the variants the kernel
// supports, and attaches them. No debugfs or bpffs is needed; tracefs only
// names the syscall tracepoints, and is mounted for that moment where the
// host has none.
func Load(cfg Config) (*Probe, error) {
	if err := Preflight(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("raise RLIMIT_MEMLOCK: %w", err)
	}
	// The kernel's BTF, parsed once for the probes, the choice of hooks
	// and the load, and dropped with the cache when Load returns.
	types := btf.NewCache()
	feat, err := probeFeatures(types)
	if err != nil {
		return nil, err
	}
	spec, err := loadTcptrail()
	if err != nil {
		return nil, err
	}
	if err := configure(spec, cfg, feat); err != nil {
		return nil, err
	}
	p := &Probe{Features: feat}
	var events syscallEventIDs
	if !cfg.TransitionsOnly {
		p.Hooks = cfg.SyscallHooks
		if p.Hooks == HooksAuto {
			// The cheapest hooks for the rest of the host first.
			switch {
			case feat.FunctionTracing:
				p.Hooks = HooksFunction
			default:
				events, p.NoSyscallTracepoints = findSyscallEvents()
				p.Hooks = HooksSyscallTracepoint
				if p.NoSyscallTracepoints != nil {
					p.Hooks = HooksTracepoint
				}
			}
		}
		switch {
		case p.Hooks == HooksFunction && !feat.FunctionTracing:
			return nil, fmt.Errorf("%w (fentry/fexit: %v): use the tracepoint hooks", ErrNoFunctionHooks, feat.FunctionTracingErr)
		case p.Hooks == HooksSyscallTracepoint && events == nil:
			if events, err = findSyscallEvents(); err != nil {
				return nil, fmt.Errorf("%w: %v", ErrNoSyscallTracepoints, err)
			}
		}
	}
	if err := selectPrograms(spec, cfg, p.Hooks, types); err != nil {
		return nil, err
	}

	p.coll, err = ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: types})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, &LoadError{Err: verr}
		}
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("%w (%v)", ErrPrivileges, err)
		}
		return nil, fmt.Errorf("load BPF programs: %w", err)
	}
	for _, id := range cfg.Cgroups {
		if err := p.coll.Maps[tcptrailMapCgroupFilter].Update(id, uint8(1), ebpf.UpdateAny); err != nil {
			p.Close()
			return nil, fmt.Errorf("cgroup filter: %w", err)
		}
	}
	// The state-change program first (Counters and tests count on it),
	// then the one that reports what it skipped: a tracepoint runs its
	// programs in the order they were attached.
	first := []string{tcptrailProgHandleSetState, tcptrailProgHandleSetStateMissed}
	names := make([]string, 0, len(spec.Programs))
	for name := range spec.Programs {
		if !slices.Contains(first, name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	names = append(first, names...)
	for _, name := range names {
		prog := p.coll.Programs[name]
		p.progs = append(p.progs, prog)
		if prog.Type() == ebpf.TracePoint {
			continue // the syscall tracepoints' programs, attached below
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("attach %s to %s: %w", name, spec.Programs[name].AttachTo, err)
		}
		p.links = append(p.links, l)
	}
	if p.Hooks == HooksSyscallTracepoint {
		links, err := attachSyscallEvents(syscallPrograms{
			enter:   p.coll.Programs[tcptrailProgHandleSyscallEnter],
			enterFD: p.coll.Programs[tcptrailProgHandleSyscallEnterFd],
			exit:    p.coll.Programs[tcptrailProgHandleSyscallExit],
		}, events)
		if err != nil {
			p.Close()
			if cfg.SyscallHooks != HooksAuto {
				return nil, err
			}
			// Refused past the checks (a security module, say): the
			// raw_syscalls tracepoints need none of it.
			cfg.SyscallHooks = HooksTracepoint
			fallback, ferr := Load(cfg)
			if ferr != nil {
				return nil, ferr
			}
			fallback.NoSyscallTracepoints = err
			return fallback, nil
		}
		for _, l := range links {
			p.links = append(p.links, l)
		}
	}
	if p.Hooks != "" {
		showSocket()
	}
	// Mapping the ring buffer makes all its pages resident at once: give
	// back the memory the kernel's BTF took first (its parse is over ten
	// MiB, all garbage now), so that the two never count together in the
	// process's peak, and the runtime's scavenger does not do it while
	// the events come. The one collection for every caller (trace, watch,
	// the floor).
	types, spec = nil, nil
	debug.FreeOSMemory()
	p.reader, err = newRing(p.coll.Maps[tcptrailMapEvents])
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return p, nil
}

// showSocket opens a TCP socket and closes it, for the syscall hooks to see:
// they learn from the first socket they meet how to tell a socket's file
// from any other with one read less, and until then every close and dup on
// the host pays that read. Nothing is reported: the socket never changes
// state. Failing to open one only delays the learning to the next socket.
func showSocket() {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			unix.Close(fd)
			return
		}
	}
}

// String says in one line what the probe runs with, and what is degraded.
func (p *Probe) String() string {
	var b strings.Builder
	b.WriteString("tp_btf tracepoints sock:inet_sock_set_state, tcp:tcp_send_reset and sched_process_fork/exec/exit")
	switch p.Hooks {
	case HooksFunction:
		fmt.Fprintf(&b, ", fentry/fexit on %d syscall functions", (len(p.progs)-len(alwaysAttached))/2)
	case HooksSyscallTracepoint:
		fmt.Fprintf(&b, ", %d syscall tracepoints (every syscall on the host takes the kernel's traced path", len(p.links)-len(alwaysAttached))
		if err := p.Features.FunctionTracingErr; err != nil {
			fmt.Fprintf(&b, "; no function hooks: %v", err)
		}
		b.WriteString(")")
	case HooksTracepoint:
		b.WriteString(", tp_btf raw_syscalls sys_enter/sys_exit (every syscall on the host pays a little")
		if err := p.Features.FunctionTracingErr; err != nil {
			fmt.Fprintf(&b, "; no function hooks: %v", err)
		}
		if err := p.NoSyscallTracepoints; err != nil {
			fmt.Fprintf(&b, "; no syscall tracepoints: %v", err)
		}
		b.WriteString(")")
	default:
		b.WriteString(" only (no owners or causes)")
	}
	if p.Features.CookieHelper {
		b.WriteString(", socket cookies")
	}
	if d := p.Features.Degraded(); len(d) > 0 {
		b.WriteString("; degraded: ")
		b.WriteString(strings.Join(d, "; "))
	}
	return b.String()
}

// alwaysAttached are the programs every run with owners and causes has,
// whatever hooks the syscalls. The resets the kernel sends itself name the
// transitions to CLOSE that follow them, so handle_send_reset stays even
// with TransitionsOnly.
var alwaysAttached = []string{
	tcptrailProgHandleSetState, tcptrailProgHandleSetStateMissed, tcptrailProgHandleSendReset,
	tcptrailProgHandleExit, tcptrailProgHandleFork, tcptrailProgHandleExec,
}

// selectPrograms drops from spec the programs this run does not use, and
// points each function hook at its syscall.
func selectPrograms(spec *ebpf.CollectionSpec, cfg Config, hooks Hooks, types *btf.Cache) error {
	keep := map[string]bool{tcptrailProgHandleSetState: true, tcptrailProgHandleSetStateMissed: true, tcptrailProgHandleSendReset: true}
	if !cfg.TransitionsOnly {
		for _, name := range alwaysAttached {
			keep[name] = true
		}
	}
	switch hooks {
	case HooksTracepoint:
		keep[tcptrailProgHandleSysEnter] = true
		keep[tcptrailProgHandleSysExit] = true
	case HooksSyscallTracepoint:
		keep[tcptrailProgHandleSyscallEnter] = true
		keep[tcptrailProgHandleSyscallEnterFd] = true
		keep[tcptrailProgHandleSyscallExit] = true
	case HooksFunction:
		kspec, err := types.Kernel()
		if err != nil {
			return fmt.Errorf("kernel BTF: %w", err)
		}
		plan, _, err := planFunctionHooks(kspec)
		if err != nil {
			return err
		}
		for _, h := range plan {
			for _, name := range []string{h.enter, h.exit} {
				ps, ok := spec.Programs[name]
				if !ok {
					return fmt.Errorf("no program %s in the BPF object", name)
				}
				ps.AttachTo = h.target
				keep[name] = true
			}
		}
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	return nil
}

func configure(spec *ebpf.CollectionSpec, cfg Config, feat Features) error {
	ring := cfg.RingBytes
	if ring == 0 {
		ring = DefaultRingBytes
	}
	if ring < os.Getpagesize() || ring&(ring-1) != 0 {
		return fmt.Errorf("ring buffer size %d: must be a power of two of at least %d", ring, os.Getpagesize())
	}
	spec.Maps[tcptrailMapEvents].MaxEntries = uint32(ring)

	kc := tcptrailConfig{
		WakeupBytes:   cfg.WakeupBytes,
		FilterTgid:    cfg.PID,
		FilterPorts:   boolByte(len(cfg.Ports) > 0),
		CookieHelper:  boolByte(feat.CookieHelper),
		TaskBtf:       boolByte(feat.TaskBTF),
		FilterNetns:   cfg.NetNS,
		FilterCgroups: boolByte(len(cfg.Cgroups) > 0),
	}
	for _, port := range cfg.Ports {
		kc.PortBits[port>>6] |= 1 << (port & 63)
	}
	if kc.WakeupBytes == 0 {
		kc.WakeupBytes = DefaultWakeupBytes
	}
	if kc.WakeupBytes >= uint64(ring) {
		kc.WakeupBytes = uint64(ring) / 2
	}
	if err := spec.Variables[tcptrailVarCfg].Set(kc); err != nil {
		return fmt.Errorf("set %s: %w", tcptrailVarCfg, err)
	}
	return nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// LoadError is a program the kernel's verifier rejected. Its message is one
// line; the verifier's whole log is in Err, printed with %+v.
type LoadError struct {
	Err *ebpf.VerifierError
}

func (e *LoadError) Error() string {
	return fmt.Sprintf("%v: the kernel rejected tcptrail's BPF programs: %s (--verbose shows the verifier's log)",
		ErrUnsupportedKernel, verifierReason(e.Err))
}

func (e *LoadError) Unwrap() error { return ErrUnsupportedKernel }

// Log is the verifier's whole log.
func (e *LoadError) Log() string { return fmt.Sprintf("%+v", e.Err) }

// verifierReason is the line of the verifier's log that says why: the last
// one that is not a source line or a statistic.
func verifierReason(v *ebpf.VerifierError) string {
	for i := len(v.Log) - 1; i >= 0; i-- {
		l := strings.TrimSpace(v.Log[i])
		if l == "" || strings.HasPrefix(l, ";") || strings.HasPrefix(l, "processed ") ||
			strings.HasPrefix(l, "verification time") || strings.HasPrefix(l, "stack depth") {
			continue
		}
		return l
	}
	return v.Cause.Error()
}

// OwnPort tells the kernel side that the --pid process listens on port, so
// that its incoming connections are traced from their first transition. The
// kernel learns this by itself for listen() calls made while tracing; this
// is for listeners that existed before.
func (p *Probe) OwnPort(port uint16) error {
	return p.coll.Maps[tcptrailMapOwnedPorts].Update(port, uint8(1), ebpf.UpdateAny)
}

// Reader is the ring buffer the programs write to, read by one goroutine.
// Closing the probe closes it (once reading stopped: a waiting read is not
// woken); reads then return ErrClosed.
func (p *Probe) Reader() *Ring { return p.reader }

// Counters reads the loss counters.
func (p *Probe) Counters() (Counters, error) {
	var c Counters
	if err := p.coll.Variables[tcptrailVarRingbufFull].Get(&c.RingbufFull); err != nil {
		return c, fmt.Errorf("read ringbuf_full: %w", err)
	}
	if err := p.coll.Variables[tcptrailVarInflightFull].Get(&c.InflightFull); err != nil {
		return c, fmt.Errorf("read inflight_full: %w", err)
	}
	// The state-change program's skips that the second one reported are
	// not lost; the second one's own skips lose nothing (the first ran for
	// those changes).
	var recovered uint64
	if err := p.coll.Variables[tcptrailVarSetStateRecovered].Get(&recovered); err != nil {
		return c, fmt.Errorf("read set_state_recovered: %w", err)
	}
	first, second := p.coll.Programs[tcptrailProgHandleSetState], p.coll.Programs[tcptrailProgHandleSetStateMissed]
	for _, prog := range p.progs {
		st, err := prog.Stats()
		if err != nil {
			return c, fmt.Errorf("read stats of %s: %w", prog, err)
		}
		switch prog {
		case second:
		case first:
			c.RecursionMisses += st.RecursionMisses - min(recovered, st.RecursionMisses)
		default:
			c.RecursionMisses += st.RecursionMisses
		}
	}
	return c, nil
}

// ProgramIDs returns the kernel IDs of the loaded programs (for tests that
// check nothing stays behind).
func (p *Probe) ProgramIDs() []ebpf.ProgramID {
	var ids []ebpf.ProgramID
	for _, prog := range p.progs {
		if info, err := prog.Info(); err == nil {
			if id, ok := info.ID(); ok {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// Detach stops new events: the links go, the ring buffer stays readable so
// that what is already in it can be drained.
func (p *Probe) Detach() error {
	var errs []error
	// The syscall tracepoints first, all at once: the kernel waits for a
	// grace period as each perf event goes (tens of milliseconds), mostly
	// one after the other under its own lock; closed together they take
	// about half as long as one by one.
	var perfLinks []*perfEventLink
	links := p.links[:0:0]
	for _, l := range p.links {
		if pl, ok := l.(*perfEventLink); ok {
			perfLinks = append(perfLinks, pl)
		} else {
			links = append(links, l)
		}
	}
	errs = append(errs, closeAll(perfLinks))
	// Then in the reverse order of attaching: the program that reports
	// the changes the state-change program skipped goes before it, so that
	// it never runs alone (it would report every change as skipped).
	for _, l := range slices.Backward(links) {
		errs = append(errs, l.Close())
	}
	p.links = nil
	return errors.Join(errs...)
}

// Close detaches and releases everything. It is safe to call more than once.
func (p *Probe) Close() error {
	if p.closed {
		return nil
	}
	p.closed = true
	errs := []error{p.Detach()}
	if p.reader != nil {
		errs = append(errs, p.reader.Close())
	}
	if p.coll != nil {
		p.coll.Close()
	}
	return errors.Join(errs...)
}
