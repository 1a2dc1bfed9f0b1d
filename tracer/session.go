// Package tracer runs a tcptrail session: it loads the kernel side, reads
// its ring buffer, decodes and tracks events, diagnoses, and hands
// everything to the sinks (live table, JSON Lines). The flow goes one way:
// kernel → event → timeline → sinks.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/tracer/container"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/timeline"
)

// Sink receives a session's output. A sink that has no use for routine
// call records (accept, bind, dup) says so with a RoutineCalls() bool
// method returning false, and the session does not build them. A sink
// that tells the user of losses itself, from the Lost records, says so
// with a ReportsLosses() bool method returning true, and the session
// leaves its own warning out: each loss is told once.
type Sink interface {
	Begin(h *record.Header) error
	// Transition is the hot path: t is reused after the call returns.
	Transition(t *timeline.Transition, wallNs int64) error
	// Record receives every other record, a pointer to a capture type.
	Record(rec any) error
	// Flush is called whenever the event stream goes quiet, and at least
	// every PollInterval, so that output never lags.
	Flush() error
	End(s *record.Summary) error
}

// CallSink is a Sink that writes routine call records (accept, bind, dup:
// those with no note) straight from the event, which saves building a
// record.Call for each. e and owners are reused after the call returns.
type CallSink interface {
	Sink
	CallEvent(e *event.Event, wallNs int64, owners []timeline.Owner) error
}

// Config is a session's configuration.
type Config struct {
	Kernel kernel.Config
	// Duration stops the session after this long; 0 runs until ctx ends.
	Duration time.Duration
	// LeakAfter is how long a socket may sit in CLOSE_WAIT before it is
	// reported as a leak.
	LeakAfter time.Duration
	// ReadyFile is created once the programs are attached.
	ReadyFile string
	// PollInterval bounds how long an event may wait before it is shown.
	PollInterval time.Duration
	// Log receives notices and warnings for the user (stderr).
	Log io.Writer
	// Version is recorded in the header.
	Version string
	// Scope names the container or cgroup Kernel.Cgroups come from, for
	// the header.
	Scope string
}

// DefaultRingBytes is the ring buffer's size when Kernel.RingBytes is 0.
const DefaultRingBytes = kernel.DefaultRingBytes

// drainGrace is how long after detaching the ring buffer is still read.
const drainGrace = 20 * time.Millisecond

// DefaultPollInterval keeps the live view within 100 ms of the kernel even
// when the kernel batches wakeups.
const DefaultPollInterval = 50 * time.Millisecond

// Clock maps CLOCK_MONOTONIC (the kernel's event time) to wall time.
type Clock struct {
	WallNs int64
	MonoNs uint64
}

// NewClock reads both clocks now.
func NewClock() Clock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	wall := time.Now()
	return Clock{WallNs: wall.UnixNano(), MonoNs: uint64(ts.Nano())}
}

// Wall converts a monotonic timestamp to wall-clock ns.
func (c Clock) Wall(mono uint64) int64 { return c.WallNs + int64(mono) - int64(c.MonoNs) }

// Time converts a monotonic timestamp to a time.Time.
func (c Clock) Time(mono uint64) time.Time { return time.Unix(0, c.Wall(mono)) }

// Now is the current monotonic time.
func MonoNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Session is one run of the tracer.
type Session struct {
	cfg        Config
	probe      *kernel.Probe
	sinks      []Sink
	clock      Clock
	tracker    *timeline.Tracker
	diag       *Diagnoser
	ev         event.Event
	events     uint64
	lost       record.Losses
	log        io.Writer
	containers *container.Cache // container of each owner, by pid
	// sinksReportLosses: a sink tells the user of losses (ReportsLosses).
	sinksReportLosses bool
}

// Run traces until ctx ends or cfg.Duration passes, then detaches, drains
// what the kernel already wrote, and ends every sink with a summary.
func Run(ctx context.Context, cfg Config, sinks ...Sink) (*record.Summary, error) {
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if cfg.Kernel.RingBytes == 0 {
		cfg.Kernel.RingBytes = DefaultRingBytes
	}
	s := &Session{cfg: cfg, sinks: sinks, tracker: timeline.New(), log: cfg.Log, sinksReportLosses: reportsLosses(sinks)}

	probe, err := kernel.Load(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	s.probe = probe
	defer probe.Close()
	s.clock = NewClock()
	s.containers = container.NewCache(container.DefaultCacheSize)
	s.tracker.ContainerOf = s.containers.Lookup
	table, err := NewHostTable()
	if err != nil {
		return nil, fmt.Errorf("socket table: %w", err)
	}
	defer table.Close()
	s.diag = NewDiagnoser(s.tracker, table, s.clock, cfg.LeakAfter, s.emit)
	defer s.diag.Close()
	for _, sink := range sinks {
		if wantsRoutineCalls(sink) {
			s.diag.RecordCalls = true
		}
		// A sink that reports the live sockets (metrics) reads the
		// tracker's counts, which are safe to read from its goroutine.
		if u, ok := sink.(interface{ UseTracker(*timeline.Tracker) }); ok {
			u.UseTracker(s.tracker)
		}
	}
	s.diag.EmitCall = s.emitCall
	fmt.Fprintf(s.log, "tcptrail: runs with %s\n", probe)

	if err := s.begin(); err != nil {
		return nil, err
	}
	if cfg.ReadyFile != "" {
		if err := os.WriteFile(cfg.ReadyFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			return nil, fmt.Errorf("write ready file: %w", err)
		}
	}

	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		timer := time.NewTimer(cfg.Duration)
		defer timer.Stop()
		deadline = timer.C
	}
	loopErr := s.loop(ctx, deadline)
	return s.finish(loopErr)
}

func (s *Session) begin() error {
	host, _ := os.Hostname()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	h := &record.Header{
		Type:        record.TypeHeader,
		Schema:      record.SchemaVersion,
		Tool:        "tcptrail",
		Version:     s.cfg.Version,
		Host:        host,
		Kernel:      unix.ByteSliceToString(uts.Release[:]),
		StartTime:   time.Unix(0, s.clock.WallNs).UTC(),
		StartMonoNs: s.clock.MonoNs,
		Filters: record.Filters{Ports: append([]uint16{}, s.cfg.Kernel.Ports...), PID: s.cfg.Kernel.PID,
			NetNS: s.cfg.Kernel.NetNS, Scope: s.cfg.Scope},
		Attach:       "tp_btf",
		SyscallHooks: string(s.probe.Hooks),
	}
	for _, sink := range s.sinks {
		if err := sink.Begin(h); err != nil {
			return err
		}
	}
	if err := s.diag.Start(s.cfg.Kernel.Ports, s.cfg.Kernel.PID, s.cfg.Kernel.NetNS, s.cfg.Kernel.Cgroups); err != nil {
		return err
	}
	if pid := s.cfg.Kernel.PID; pid != 0 {
		var err error
		s.tracker.Sockets(func(sock *timeline.Socket) {
			for _, o := range sock.Owners {
				if o.PID == pid && sock.State == event.Listen && err == nil {
					err = s.probe.OwnPort(sock.Local.Port())
				}
			}
		})
		if err != nil {
			return fmt.Errorf("seed the listeners of pid %d: %w", pid, err)
		}
	}
	return nil
}

// loop reads the ring buffer until told to stop. The kernel wakes the
// reader only when enough is pending, so the read also ends at a short
// deadline: that is when output is flushed and the periodic work runs.
// Under a load that never lets the ring run empty, the periodic work runs
// every PollInterval all the same, and a stop is noticed.
func (s *Session) loop(ctx context.Context, stop <-chan time.Time) error {
	rd := s.probe.Reader()
	lastCounters, lastQuiet := time.Now(), time.Now()
	rd.SetDeadline(time.Now().Add(s.cfg.PollInterval))
	for n := 1; ; n++ {
		raw, err := rd.Next()
		if err == nil {
			if err := s.handle(raw); err != nil {
				return err
			}
			if n%4096 != 0 || time.Since(lastQuiet) < s.cfg.PollInterval {
				continue
			}
			// Busy for a whole PollInterval: the periodic work is due.
		} else if !errors.Is(err, os.ErrDeadlineExceeded) {
			if errors.Is(err, kernel.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read ring buffer: %w", err)
		}
		// The ring buffer is empty (a quiet moment), or the work is due.
		lastQuiet = time.Now()
		s.diag.Tick(MonoNow())
		if lastQuiet.Sub(lastCounters) >= time.Second {
			lastCounters = lastQuiet
			s.checkLosses(true)
		}
		if err := s.flush(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-stop:
			return nil
		default:
		}
		rd.SetDeadline(time.Now().Add(s.cfg.PollInterval))
	}
}

// handle decodes and dispatches one record. A record that does not decode
// means the BPF object and this binary disagree on its layout: every record
// would be wrong, so that stops the session rather than being counted.
func (s *Session) handle(raw []byte) error {
	if err := event.Decode(raw, &s.ev); err != nil {
		return fmt.Errorf("kernel record of %d bytes: %w (the BPF object does not match this binary)", len(raw), err)
	}
	s.events++
	e := &s.ev
	switch e.Kind {
	case event.KindState:
		tr := s.tracker.Transition(e)
		wall := s.clock.Wall(e.MonoNs)
		for _, sink := range s.sinks {
			sink.Transition(tr, wall)
		}
		s.diag.Transition(tr)
	case event.KindCall:
		s.diag.Call(e)
	case event.KindExit:
		s.diag.Exit(e)
		s.containers.Forget(e.PID)
	case event.KindFork:
		s.diag.Fork(e)
	}
	return nil
}

func reportsLosses(sinks []Sink) bool {
	for _, sink := range sinks {
		if q, ok := sink.(interface{ ReportsLosses() bool }); ok && q.ReportsLosses() {
			return true
		}
	}
	return false
}

func wantsRoutineCalls(sink Sink) bool {
	q, ok := sink.(interface{ RoutineCalls() bool })
	return !ok || q.RoutineCalls()
}

// emitCall hands a routine call to the sinks that want it: as the event to
// those that write it themselves, as a record (built once) to the others.
func (s *Session) emitCall(e *event.Event, owners []timeline.Owner) {
	wall := s.clock.Wall(e.MonoNs)
	var rec *record.Call
	for _, sink := range s.sinks {
		switch cs, ok := sink.(CallSink); {
		case ok:
			cs.CallEvent(e, wall, owners)
		case wantsRoutineCalls(sink):
			if rec == nil {
				rec = record.CallRecord(e, time.Unix(0, wall).UTC(), owners)
			}
			sink.Record(rec)
		}
	}
}

// emit hands a record to every sink.
func (s *Session) emit(rec any) {
	for _, sink := range s.sinks {
		sink.Record(rec)
	}
}

func (s *Session) flush() error {
	var errs []error
	for _, sink := range s.sinks {
		errs = append(errs, sink.Flush())
	}
	return errors.Join(errs...)
}

// checkLosses reads the kernel's loss counters and reports any growth.
func (s *Session) checkLosses(warn bool) {
	c, err := s.probe.Counters()
	if err != nil {
		fmt.Fprintf(s.log, "tcptrail: warning: %v\n", err)
		return
	}
	now := record.Losses{
		RingbufFull:     c.RingbufFull,
		RecursionMisses: c.RecursionMisses,
		InflightFull:    c.InflightFull,
		Gaps:            s.tracker.Gaps,
		EndsUnseen:      s.diag.EndsUnseen(),
	}
	if now == s.lost {
		return
	}
	if warn && !s.sinksReportLosses && now.Total() > s.lost.Total() {
		hint := ""
		if now.RingbufFull > s.lost.RingbufFull {
			hint = ": " + RingFullHint(s.cfg.Kernel.RingBytes)
		}
		fmt.Fprintf(s.log, "tcptrail: warning: %d events lost so far (ring buffer full %d, skipped by the kernel %d)%s\n",
			now.Total(), now.RingbufFull, now.RecursionMisses, hint)
	}
	s.lost = now
	mono := MonoNow()
	s.emit(&record.Lost{Type: record.TypeLost, Time: s.clock.Time(mono).UTC(), MonoNs: mono, Losses: now})
}

// RingFullHint says what helps when the ring buffer of ringBytes was
// full: the one loss a user can act on. Both the session's warning and
// sinks that report losses themselves use it.
func RingFullHint(ringBytes int) string {
	size := fmt.Sprintf("%d KiB", ringBytes>>10)
	if ringBytes >= 1<<20 {
		size = fmt.Sprintf("%d MiB", ringBytes>>20)
	}
	return "the reader fell behind the kernel; a larger ring buffer (--ring-size, now " + size + ") holds more"
}

// finalSweepWait bounds how long the end of a session waits for the final
// sweep's answer (a dump of each namespace's socket table).
const finalSweepWait = 2 * time.Second

// finalSweep has the diagnoser check the sockets it believes open against
// the kernel's socket tables while the programs are still attached, and
// reads the ring buffer on meanwhile.
func (s *Session) finalSweep() error {
	deadline := time.Now().Add(finalSweepWait)
	started := false
	for time.Now().Before(deadline) {
		// Applying the answers that are in also makes room for the sweep
		// in the query queue.
		if s.diag.FinalSweepDone() {
			return nil
		}
		if !started {
			started = s.diag.StartFinalSweep()
		}
		// A ring buffer that never runs empty still lets the answer be
		// looked for.
		if err := s.readBatch(); err != nil {
			return err
		}
	}
	return nil
}

// readBatch reads what the ring buffer holds, up to a batch of records or
// a few milliseconds of waiting, for the work around it to come back soon.
func (s *Session) readBatch() error {
	rd := s.probe.Reader()
	rd.SetDeadline(time.Now().Add(5 * time.Millisecond))
	for range 4096 {
		raw, err := rd.Next()
		if err != nil {
			return nil
		}
		if err := s.handle(raw); err != nil {
			return err
		}
	}
	return nil
}

// detach detaches the programs while the ring buffer is read on: with the
// syscall tracepoints a detach takes about a second (a grace period for
// each), and the programs still attached write meanwhile; a busy host
// would fill the ring and lose what happened as tracing stopped.
func (s *Session) detach() (detachErr, readErr error) {
	done := make(chan error, 1)
	go func() { done <- s.probe.Detach() }()
	for {
		select {
		case detachErr = <-done:
			return detachErr, readErr
		default:
		}
		if readErr != nil {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		readErr = s.readBatch()
	}
}

// finish detaches, drains the ring buffer, and ends the sinks.
func (s *Session) finish(loopErr error) (*record.Summary, error) {
	if loopErr == nil {
		loopErr = s.finalSweep()
	}
	detachErr, readErr := s.detach()
	loopErr = errors.Join(loopErr, readErr)
	// Drain: with the links gone nothing new starts, but a program run
	// that began before the detach may still be writing: read until a
	// short grace period after the detach has passed.
	rd := s.probe.Reader()
	rd.SetDeadline(time.Now().Add(drainGrace))
	for readErr == nil {
		raw, err := rd.Next()
		if err != nil {
			break
		}
		if err := s.handle(raw); err != nil {
			loopErr = errors.Join(loopErr, err)
			break
		}
	}
	s.diag.EndFinalSweep()
	end := MonoNow()
	s.diag.Tick(end)
	s.diag.End(end)
	s.checkLosses(false) // after End: the answers it applied may count

	sum := &record.Summary{
		Type:        record.TypeSummary,
		Time:        s.clock.Time(end).UTC(),
		MonoNs:      end,
		DurationNs:  int64(end - s.clock.MonoNs),
		Events:      s.events,
		Transitions: s.tracker.Transitions,
		Sockets:     s.tracker.SocketsSeen,
		Lost:        s.lost,
		Leaks:       s.diag.Leaks(),

		TimewaitUnfollowed:  s.diag.TimewaitUnwatched(),
		CloseWaitUnfollowed: s.diag.CloseWaitUnfollowed(),
		LeaksOmitted:        s.diag.LeaksOmitted(),
		QueriesFailed:       s.diag.QueriesFailed(),
	}
	errs := []error{loopErr, detachErr}
	for _, sink := range s.sinks {
		errs = append(errs, sink.End(sum))
	}
	return sum, errors.Join(errs...)
}
