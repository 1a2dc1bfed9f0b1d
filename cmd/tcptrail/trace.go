package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	httppprof "net/http/pprof"
	"os"
	"os/signal"
	"runtime/pprof"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/live"
	"github.com/tcptrail/tcptrail/tracer/spool"
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
	sessionFlags
	json       bool
	output     string
	quiet      bool
	bare       bool
	cpuProfile string
	debugAddr  string
}

func parseTraceFlags(args []string, stderr io.Writer) (*traceFlags, error) {
	f := &traceFlags{}
	fs := newFlagSet("trace", traceUsage, stderr)
	f.register(fs, tracer.DefaultLeakAfter)
	fs.BoolVar(&f.json, "json", false, "write JSON Lines to stdout instead of the table")
	fs.StringVarP(&f.output, "output", "o", "", "also write the capture as JSON Lines to `FILE` (mode 0600)")
	fs.BoolVarP(&f.quiet, "quiet", "q", false, "no live table (with -o: only the summary)")
	fs.BoolVar(&f.bare, "transitions-only", false, "trace state changes only: no owners, causes or syscall diagnoses")
	_ = fs.MarkHidden("transitions-only")
	fs.StringVar(&f.cpuProfile, "cpu-profile", "", "write a Go CPU profile of the tracer to `FILE`")
	_ = fs.MarkHidden("cpu-profile")
	fs.StringVar(&f.debugAddr, "debug-addr", "", "serve the Go runtime's profiles at http://`ADDR`/debug/pprof/ (for soak tests)")
	_ = fs.MarkHidden("debug-addr")

	if err := f.parse(fs, "trace", args); err != nil {
		return nil, err
	}
	return f, nil
}

// runTrace is 'tcptrail trace'.
func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, err := parseTraceFlags(args, stderr)
	if err != nil {
		return err
	}
	cfg, err := f.config(stderr)
	if err != nil {
		return err
	}
	f.raisePriority(stderr)
	cfg.Kernel.TransitionsOnly = f.bare

	// stdout is written from a spool, not from the ring-buffer reader: a
	// slow reader at the other end of the pipe costs queued memory, up to
	// a bound, before it costs events. A file needs none: the page cache
	// takes its writes at once.
	//
	// When the program reading stdout goes away (trace --json | head), the
	// session ends as on SIGTERM: a capture file written beside it still
	// gets its summary, which goes to stderr too.
	var out *spool.Writer
	var stdoutGone atomic.Bool
	if f.json || !f.quiet {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		// SIGPIPE caught: a write to a pipe nobody reads fails with EPIPE
		// instead of killing tcptrail (watch and the other commands keep
		// the default, so that a service whose stdout is gone fails).
		signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
		defer signal.Reset(syscall.SIGPIPE)
		out = spool.New(stdout, 0)
		out.OnBrokenPipe(func() {
			stdoutGone.Store(true)
			cancel()
		})
		defer out.Close()
	}

	var sinks []tracer.Sink
	var table *live.Table
	switch {
	case f.json:
		sinks = append(sinks, capture.NewWriter(out))
	case !f.quiet:
		table = live.NewTable(out)
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
	if f.debugAddr != "" {
		ln, err := net.Listen("tcp", f.debugAddr)
		if err != nil {
			return usageErrorf("--debug-addr: %v", err)
		}
		defer ln.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", httppprof.Index)
		go http.Serve(ln, mux)
	}
	sum, err := tracer.Run(ctx, cfg, sinks...)
	// The sinks ended with the summary: have it on stdout before anything
	// more goes to stderr. A write error there is Run's error already.
	if out != nil {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return f.sessionError(err, stderr)
	}
	if stdoutGone.Load() {
		fmt.Fprintln(stderr, "tcptrail: stdout was closed by its reader: tracing stopped")
		table = nil // its summary went nowhere: stderr has it below
	}
	if table == nil {
		fmt.Fprintf(stderr, "tcptrail: %d events, %d transitions, %d sockets in %s; lost %d (ring buffer full %d, skipped by the kernel %d), gaps %d%s, leaks %d\n",
			sum.Events, sum.Transitions, sum.Sockets, time.Duration(sum.DurationNs).Round(time.Millisecond),
			sum.Lost.Total(), sum.Lost.RingbufFull, sum.Lost.RecursionMisses, sum.Lost.Gaps, sum.Lost.EndsUnseenText(), len(sum.Leaks))
	}
	if table == nil && sum.QueriesFailed > 0 {
		fmt.Fprintf(stderr, "tcptrail: %d socket-table queries failed: the diagnoses made meanwhile rest on tcptrail's own evidence\n", sum.QueriesFailed)
	}
	if table == nil && sum.CloseWaitUnfollowed > 0 {
		fmt.Fprintf(stderr, "tcptrail: %d sockets in CLOSE_WAIT were not followed for leaks: over a million were at once\n", sum.CloseWaitUnfollowed)
	}
	if table == nil && sum.TimewaitUnfollowed > 0 {
		fmt.Fprintf(stderr, "tcptrail: %d timewait sockets were not followed to their end: too many were alive at once\n", sum.TimewaitUnfollowed)
	}
	if f.output != "" {
		fmt.Fprintf(stderr, "tcptrail: capture written to %s\n", f.output)
	}
	return nil
}
