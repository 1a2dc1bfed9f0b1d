package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/pflag"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/live"
	"github.com/tcptrail/tcptrail/tracer/scope"
)

const traceUsage = `Usage: tcptrail trace [flags]

Trace every TCP state transition of the chosen ports, live, from the kernel's
sock:inet_sock_set_state tracepoint, with the process, fd and call behind
each one. Explains CLOSE_WAIT leaks, failed binds and connects as they
happen. Needs root (or CAP_BPF and CAP_PERFMON) and a kernel with BTF.

Examples:
  sudo tcptrail trace --port 7070,10001          live table
  sudo tcptrail trace --port 7070 --json         JSON Lines on stdout
  sudo tcptrail trace -o capture.jsonl --duration 30s

Flags:
`

type traceFlags struct {
	ports      portList
	pid        int
	json       bool
	output     string
	quiet      bool
	duration   time.Duration
	leakAfter  time.Duration
	readyFile  string
	ringSize   byteSize
	wakeupSize byteSize
	bare       bool
	cpuProfile string
	verbose    bool
	hooks      string
	netns      string
	container  string
	cgroup     string
}

func parseTraceFlags(args []string, stderr io.Writer) (*traceFlags, error) {
	f := &traceFlags{ringSize: kernel.DefaultRingBytes, wakeupSize: kernel.DefaultWakeupBytes}
	fs := pflag.NewFlagSet("trace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, traceUsage)
		fmt.Fprint(stderr, fs.FlagUsages())
	}
	fs.VarP(&f.ports, "port", "p", "ports to trace, as local or remote port: 7070,10001 (repeatable; default all)")
	fs.IntVar(&f.pid, "pid", 0, "trace only the sockets of this process")
	fs.StringVar(&f.netns, "netns", "", "trace only the sockets of this network namespace: `NS` is /run/netns/NAME, NAME, /proc/PID/ns/net or the inode number")
	fs.StringVar(&f.container, "container", "", "trace only the sockets made in this container: its `ID` or a prefix of it")
	fs.StringVar(&f.cgroup, "cgroup", "", "trace only the sockets made in this cgroup (v2) or below: `PATH` as in /proc/PID/cgroup, e.g. /system.slice/nginx.service")
	fs.BoolVar(&f.json, "json", false, "write JSON Lines to stdout instead of the table")
	fs.StringVarP(&f.output, "output", "o", "", "also write the capture as JSON Lines to `FILE` (mode 0600)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "no live table (with -o: only the summary)")
	fs.DurationVarP(&f.duration, "duration", "d", 0, "stop after this long (default: until Ctrl-C or SIGTERM)")
	fs.DurationVar(&f.leakAfter, "leak-after", tracer.DefaultLeakAfter, "report a socket as leaked after this long in CLOSE_WAIT")
	fs.Var(&f.ringSize, "ring-size", "kernel ring buffer size, a power of two (e.g. 8M)")
	fs.StringVar(&f.readyFile, "ready-file", "", "create `FILE` once the probes are attached (for scripts)")
	fs.Var(&f.wakeupSize, "wakeup-size", "wake the reader when this much is pending (1: as soon as anything is)")
	_ = fs.MarkHidden("wakeup-size")
	fs.BoolVar(&f.bare, "transitions-only", false, "trace state changes only: no owners, causes or syscall diagnoses")
	_ = fs.MarkHidden("transitions-only")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "when the kernel rejects the BPF programs, print the verifier's whole log")
	fs.StringVar(&f.hooks, "syscall-hooks", "auto", "hook the socket syscalls as `auto`, function (fentry/fexit) or tracepoint")
	_ = fs.MarkHidden("syscall-hooks")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write a Go CPU profile of the tracer to `FILE`")
	_ = fs.MarkHidden("cpu-profile")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil, err
		}
		return nil, usageErrorf("trace: %v", err)
	}
	if fs.NArg() > 0 {
		return nil, usageErrorf("trace: unexpected argument %q", fs.Arg(0))
	}
	if f.pid < 0 || f.pid > 1<<22 {
		return nil, usageErrorf("trace: --pid %d is not a process id", f.pid)
	}
	if f.pid > 0 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", f.pid)); err != nil {
			return nil, usageErrorf("trace: --pid %d: no such process", f.pid)
		}
	}
	if f.duration < 0 {
		return nil, usageErrorf("trace: --duration must not be negative")
	}
	if f.leakAfter <= 0 {
		return nil, usageErrorf("trace: --leak-after must be positive")
	}
	if f.container != "" && f.cgroup != "" {
		return nil, usageErrorf("trace: --container and --cgroup both choose cgroups: give one")
	}
	switch f.hooks {
	case "auto", string(kernel.HooksFunction), string(kernel.HooksTracepoint):
	default:
		return nil, usageErrorf("trace: --syscall-hooks %q: want auto, function or tracepoint", f.hooks)
	}
	if r := int(f.ringSize); r < os.Getpagesize() || r&(r-1) != 0 {
		return nil, usageErrorf("trace: --ring-size %d must be a power of two of at least %d", r, os.Getpagesize())
	}
	return f, nil
}

// runTrace is 'tcptrail trace'.
func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseTraceFlags(args, stderr)
	if err != nil {
		return err
	}
	if err := kernel.Preflight(); err != nil {
		return usageError{err}
	}
	var netns uint32
	if f.netns != "" {
		if netns, err = scope.NetNS(f.netns); err != nil {
			return usageErrorf("--netns: %v", err)
		}
	}
	var cgroups []uint64
	var scopeName string
	switch {
	case f.container != "":
		var id string
		if id, cgroups, err = scope.Container(f.container); err != nil {
			return usageErrorf("--container: %v", err)
		}
		scopeName = "container " + id
	case f.cgroup != "":
		if cgroups, err = scope.Cgroup(f.cgroup); err != nil {
			return usageErrorf("--cgroup: %v", err)
		}
		scopeName = "cgroup " + f.cgroup
	}
	if len(cgroups) > kernel.MaxCgroups {
		return usageErrorf("%s has %d cgroups below it; tcptrail filters on at most %d: choose a smaller one", scopeName, len(cgroups), kernel.MaxCgroups)
	}

	var sinks []tracer.Sink
	var table *live.Table
	switch {
	case f.json:
		sinks = append(sinks, capture.NewWriter(stdout))
	case !f.quiet:
		table = live.NewTable(stdout)
		sinks = append(sinks, table)
	}
	if f.output != "" {
		file, err := capture.Create(f.output)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return usageErrorf("cannot write the capture file %s: %v", f.output, err)
		}
		defer file.Close()
		sinks = append(sinks, capture.NewWriter(file))
	}

	cfg := tracer.Config{
		Kernel: kernel.Config{
			Ports:           f.ports.ports,
			PID:             uint32(f.pid),
			RingBytes:       int(f.ringSize),
			WakeupBytes:     uint64(f.wakeupSize),
			TransitionsOnly: f.bare,
			SyscallHooks:    syscallHooks(f.hooks),
			NetNS:           netns,
			Cgroups:         cgroups,
		},
		Duration:  f.duration,
		LeakAfter: f.leakAfter,
		ReadyFile: f.readyFile,
		Log:       stderr,
		Version:   version,
		Scope:     scopeName,
	}
	if f.cpuProfile != "" {
		pf, err := os.Create(f.cpuProfile)
		if err != nil {
			return usageErrorf("--cpu-profile: %v", err)
		}
		defer pf.Close()
		if err := pprof.StartCPUProfile(pf); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	sum, err := tracer.Run(ctx, cfg, sinks...)
	if err != nil {
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
	if table == nil {
		fmt.Fprintf(stderr, "tcptrail: %d events, %d transitions, %d sockets in %s; lost %d (ring buffer full %d, skipped by the kernel %d), gaps %d, leaks %d\n",
			sum.Events, sum.Transitions, sum.Sockets, time.Duration(sum.DurationNs).Round(time.Millisecond),
			sum.Lost.Total(), sum.Lost.RingbufFull, sum.Lost.RecursionMisses, sum.Lost.Gaps, len(sum.Leaks))
	}
	if table == nil && sum.QueriesFailed > 0 {
		fmt.Fprintf(stderr, "tcptrail: %d socket-table queries failed: the diagnoses made meanwhile rest on tcptrail's own evidence\n", sum.QueriesFailed)
	}
	if table == nil && sum.TimewaitUnfollowed > 0 {
		fmt.Fprintf(stderr, "tcptrail: %d timewait sockets were not followed to their end: too many were alive at once\n", sum.TimewaitUnfollowed)
	}
	if f.output != "" {
		fmt.Fprintf(stderr, "tcptrail: capture written to %s\n", f.output)
	}
	return nil
}

func syscallHooks(flag string) kernel.Hooks {
	if flag == "auto" {
		return kernel.HooksAuto
	}
	return kernel.Hooks(flag)
}
