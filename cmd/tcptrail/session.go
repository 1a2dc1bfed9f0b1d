package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrail/tcptrail/internal/priority"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/scope"
)

// sessionFlags are the flags 'trace' and 'watch' share: what to trace and
// how the kernel side runs.
type sessionFlags struct {
	ports      portList
	pid        int
	netns      string
	container  string
	cgroup     string
	leakAfter  time.Duration
	duration   time.Duration
	readyFile  string
	ringSize   byteSize
	wakeupSize byteSize
	verbose    bool
	hooks      string
	boost      int
}

func (f *sessionFlags) register(fs *pflag.FlagSet, leakAfter time.Duration) {
	f.ringSize, f.wakeupSize = kernel.DefaultRingBytes, kernel.DefaultWakeupBytes
	fs.VarP(&f.ports, "port", "p", "ports to trace, as local or remote port: 7070,10001 (repeatable; default all)")
	fs.IntVar(&f.pid, "pid", 0, "trace only the sockets of this process")
	fs.StringVar(&f.netns, "netns", "", "trace only the sockets of this network namespace: `NS` is /run/netns/NAME, NAME, /proc/PID/ns/net or the inode number")
	fs.StringVar(&f.container, "container", "", "trace only the sockets made in this container: its `ID` or a prefix of it")
	fs.StringVar(&f.cgroup, "cgroup", "", "trace only the sockets made in this cgroup (v2) or below: `PATH` as in /proc/PID/cgroup, e.g. /system.slice/nginx.service")
	fs.DurationVar(&f.leakAfter, "leak-after", leakAfter, "report a socket as leaked after this long in CLOSE_WAIT")
	fs.DurationVarP(&f.duration, "duration", "d", 0, "stop after this long (default: until Ctrl-C or SIGTERM)")
	fs.Var(&f.ringSize, "ring-size", "kernel ring buffer size, a power of two (e.g. 16M)")
	fs.StringVar(&f.readyFile, "ready-file", "", "create `FILE` once the probes are attached (for scripts)")
	fs.Var(&f.wakeupSize, "wakeup-size", "wake the reader when this much is pending (1: as soon as anything is)")
	_ = fs.MarkHidden("wakeup-size")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "when the kernel rejects the BPF programs, print the verifier's whole log")
	fs.StringVar(&f.hooks, "syscall-hooks", "auto", "hook the socket syscalls as `auto`, function (fentry/fexit), syscall-tracepoint or tracepoint (raw_syscalls)")
	_ = fs.MarkHidden("syscall-hooks")
	fs.IntVar(&f.boost, "priority-boost", priority.DefaultBoost, "lower tcptrail's nice value by `N` (0: keep it), so that on a saturated host it keeps up with the events instead of losing some")
}

// parse parses args with fs, which holds these flags and the command's
// own, and checks them; cmd names the command in errors.
func (f *sessionFlags) parse(fs *pflag.FlagSet, cmd string, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageErrorf("%s: %v", cmd, err)
	}
	if fs.NArg() > 0 {
		return usageErrorf("%s: unexpected argument %q", cmd, fs.Arg(0))
	}
	if f.duration < 0 {
		return usageErrorf("%s: --duration must not be negative", cmd)
	}
	return f.validate(cmd)
}

// validate checks the flags alone; cmd names the command in errors.
func (f *sessionFlags) validate(cmd string) error {
	if f.pid < 0 || f.pid > 1<<22 {
		return usageErrorf("%s: --pid %d is not a process id", cmd, f.pid)
	}
	if f.pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", f.pid)); err != nil {
			return usageErrorf("%s: --pid %d: no such process", cmd, f.pid)
		}
	}
	if f.leakAfter <= 0 {
		return usageErrorf("%s: --leak-after must be positive", cmd)
	}
	if f.container != "" && f.cgroup != "" {
		return usageErrorf("%s: --container and --cgroup both choose cgroups: give one", cmd)
	}
	switch f.hooks {
	case "auto", string(kernel.HooksFunction), string(kernel.HooksSyscallTracepoint), string(kernel.HooksTracepoint):
	default:
		return usageErrorf("%s: --syscall-hooks %q: want auto, function, syscall-tracepoint or tracepoint", cmd, f.hooks)
	}
	if f.boost < 0 || f.boost > 39 {
		return usageErrorf("%s: --priority-boost %d: want 0 to 39", cmd, f.boost)
	}
	if r := int(f.ringSize); r < os.Getpagesize() || r&(r-1) != 0 {
		return usageErrorf("%s: --ring-size %d must be a power of two of at least %d", cmd, r, os.Getpagesize())
	}
	return nil
}

// config resolves the scope flags (namespace, container, cgroup) and
// returns the session's configuration.
func (f *sessionFlags) config(stderr io.Writer) (tracer.Config, error) {
	if err := kernel.Preflight(); err != nil {
		return tracer.Config{}, usageError{err}
	}
	var netns uint32
	var err error
	if f.netns != "" {
		if netns, err = scope.NetNS(f.netns); err != nil {
			return tracer.Config{}, usageErrorf("--netns: %v", err)
		}
	}
	var cgroups []uint64
	var scopeName string
	switch {
	case f.container != "":
		var id string
		if id, cgroups, err = scope.Container(f.container); err != nil {
			return tracer.Config{}, usageErrorf("--container: %v", err)
		}
		scopeName = "container " + id
	case f.cgroup != "":
		if cgroups, err = scope.Cgroup(f.cgroup); err != nil {
			return tracer.Config{}, usageErrorf("--cgroup: %v", err)
		}
		scopeName = "cgroup " + f.cgroup
	}
	if len(cgroups) > kernel.MaxCgroups {
		return tracer.Config{}, usageErrorf("%s has %d cgroups below it; tcptrail filters on at most %d: choose a smaller one", scopeName, len(cgroups), kernel.MaxCgroups)
	}
	return tracer.Config{
		Kernel: kernel.Config{
			Ports:        f.ports.ports,
			PID:          uint32(f.pid),
			RingBytes:    int(f.ringSize),
			WakeupBytes:  uint64(f.wakeupSize),
			SyscallHooks: syscallHooks(f.hooks),
			NetNS:        netns,
			Cgroups:      cgroups,
		},
		Duration:  f.duration,
		LeakAfter: f.leakAfter,
		ReadyFile: f.readyFile,
		Log:       stderr,
		Version:   version,
		Scope:     scopeName,
	}, nil
}

// raisePriority lowers tcptrail's nice value as --priority-boost asks.
// Without the privilege (CAP_SYS_NICE) tracing goes on, and the user
// learns what that risks.
func (f *sessionFlags) raisePriority(stderr io.Writer) {
	if _, _, err := priority.Raise(f.boost); err != nil {
		fmt.Fprintf(stderr, "tcptrail: warning: --priority-boost %d: %v: on a saturated host tcptrail may fall behind the events and lose some (they are counted)\n", f.boost, err)
	}
}

// sessionError turns a session's failure into what the user sees: the
// verifier's log with --verbose, exit 2 for what the user or the host must
// change.
func (f *sessionFlags) sessionError(err error, stderr io.Writer) error {
	var lerr *kernel.LoadError
	if f.verbose && errors.As(err, &lerr) {
		fmt.Fprintln(stderr, lerr.Log())
	}
	if errors.Is(err, kernel.ErrPrivileges) || errors.Is(err, kernel.ErrNoBTF) ||
		errors.Is(err, kernel.ErrUnsupportedKernel) || errors.Is(err, kernel.ErrNoFunctionHooks) {
		return usageError{err}
	}
	return err
}

func syscallHooks(flag string) kernel.Hooks {
	if flag == "auto" {
		return kernel.HooksAuto
	}
	return kernel.Hooks(flag)
}
