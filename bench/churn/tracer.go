package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tcptrail/tcptrail/internal/syncbuf"
	"github.com/tcptrail/tcptrail/tracer/capture"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// summary is the tracer's closing summary, from the capture file's last
// record (-o) or, without one, from the live table's last lines.
type summary struct {
	record.Summary
	// fromCapture: the counts come from the capture file, which has
	// inflight_full too; the table's summary line does not.
	fromCapture bool
	lostTotal   uint64 // the table's "lost: N"
}

// lostEvents is the number of events lost outright, the way the tracer
// counts them (record.Losses.Total).
func (s *summary) lostEvents() uint64 {
	if !s.fromCapture {
		return s.lostTotal // the table's own total
	}
	return s.Lost.Total()
}

// drainer reads the tracer's stdout (the live table) as fast as it comes,
// counts its lines, and keeps the lines that are not transitions (notices,
// the summary) for later.
type drainer struct {
	lines       atomic.Uint64
	transitions atomic.Uint64 // lines of the form "15:04:05.000000 #cookie ..."
	existing    atomic.Uint64 // EXISTING: sockets found at start
	timewait    atomic.Uint64 // TIMEWAIT: phase changes of timewait sockets
	onLine      func(line []byte, at time.Time)
	seqs        map[string][]string // with -analyze: cookie -> transitions, from the table
	mu          sync.Mutex
	other       []string
	otherDrops  int
	done        chan struct{}
}

func newDrainer(r io.Reader, onLine func([]byte, time.Time), analyze bool) *drainer {
	d := &drainer{onLine: onLine, done: make(chan struct{})}
	if analyze {
		d.seqs = map[string][]string{}
	}
	go d.run(r)
	return d
}

func (d *drainer) run(r io.Reader) {
	defer close(d.done)
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			d.line(line)
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			return
		}
	}
}

func (d *drainer) line(line []byte) {
	d.lines.Add(1)
	if len(line) > 17 && line[15] == ' ' && line[16] == '#' && line[2] == ':' {
		d.transitions.Add(1)
		if d.onLine != nil {
			d.onLine(line, time.Now())
		}
		if d.seqs != nil {
			f := bytes.Fields(line)
			if len(f) >= 8 && string(f[6]) == "->" {
				k := string(f[1])
				d.seqs[k] = append(d.seqs[k], string(f[5])+">"+string(f[7]))
			} else {
				d.seqs[string(f[1])] = append(d.seqs[string(f[1])], "unparsed")
			}
		}
		return
	}
	switch {
	case len(line) > 25 && string(line[16:24]) == "EXISTING":
		d.existing.Add(1)
		return
	case len(line) > 25 && string(line[16:24]) == "TIMEWAIT":
		d.timewait.Add(1)
		return
	}
	d.mu.Lock()
	if len(d.other) < 2000 {
		d.other = append(d.other, string(line))
	} else {
		d.otherDrops++
	}
	d.mu.Unlock()
}

// The live table's summary line, e.g. "N events, M transitions, K sockets
// in 5.2s; lost: L (ring buffer full A, skipped by the kernel B), gaps G".
// The counters inside the parentheses are matched by name: the table shows
// only those that can be non-zero, and that list changes.
var (
	tableSummaryRE = regexp.MustCompile(`(\d+) events, (\d+) transitions, (\d+) sockets in (\S+); lost: (\d+)`)
	ringbufFullRE  = regexp.MustCompile(`ring buffer full (\d+)`)
	skippedRE      = regexp.MustCompile(`skipped by the kernel (\d+)`)
	queueFullRE    = regexp.MustCompile(`queue full (\d+)`)
	inflightRE     = regexp.MustCompile(`inflight full (\d+)`)
	gapsRE         = regexp.MustCompile(`gaps (\d+)`)
)

// tableSummary parses the live table's summary line.
func (d *drainer) tableSummary() (*summary, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.other) - 1; i >= 0; i-- {
		line := d.other[i]
		m := tableSummaryRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		n := func(s string) uint64 { v, _ := strconv.ParseUint(s, 10, 64); return v }
		named := func(re *regexp.Regexp) uint64 {
			if m := re.FindStringSubmatch(line); m != nil {
				return n(m[1])
			}
			return 0
		}
		s := &summary{Summary: record.Summary{Type: record.TypeSummary, Events: n(m[1]), Transitions: n(m[2]), Sockets: n(m[3])}}
		if dur, err := time.ParseDuration(m[4]); err == nil {
			s.DurationNs = int64(dur)
		}
		s.lostTotal = n(m[5])
		s.Lost.RingbufFull = named(ringbufFullRE)
		s.Lost.RecursionMisses = named(skippedRE)
		s.Lost.QueueFull = named(queueFullRE)
		s.Lost.InflightFull = named(inflightRE)
		s.Lost.Gaps = named(gapsRE)
		return s, nil
	}
	return nil, errors.New("no summary line in the live table's output")
}

// notices returns the table's non-transition lines other than the summary
// block: diagnoses, EXIT, NOTE ... (a handful is expected, say at exit).
func (d *drainer) notices() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.other...)
}

// tracerProc is a running `tcptrail trace`.
type tracerProc struct {
	cmd       *exec.Cmd
	pid       int
	started   time.Time
	readyAt   time.Time
	readyFile string
	capFile   string
	drain     *drainer
	stderr    *syncbuf.Buffer
	exited    chan struct{}
	waitErr   error
	cpuReady  time.Duration // utime+stime when the probes were attached
	bpf       *bpfWatch
	// statusReady: memory once the probes were attached, after the
	// start-up scan of the socket table.
	statusReady procStatus
	progs       map[ebpf.ProgramID]bool
}

// current is the tracer running right now, for the interrupt handler.
var current atomic.Pointer[tracerProc]

type tracerOpts struct {
	port    int
	capture bool   // also -o FILE
	wakeup  string // --wakeup-size value, "" for the default
	onLine  func([]byte, time.Time)
	bpf     bool // read the programs' run time (kernel.bpf_stats_enabled)
	analyze bool // group the table's transitions by socket
}

func startTracer(cfg *config, o tracerOpts) (*tracerProc, error) {
	t := &tracerProc{
		readyFile: filepath.Join(cfg.tmp, fmt.Sprintf("ready-%d", o.port)),
		stderr:    &syncbuf.Buffer{},
		exited:    make(chan struct{}),
	}
	os.Remove(t.readyFile)
	args := []string{"trace", "--port", strconv.Itoa(o.port), "--ready-file", t.readyFile}
	if o.capture {
		t.capFile = filepath.Join(cfg.tmp, fmt.Sprintf("capture-%d.jsonl", o.port))
		os.Remove(t.capFile)
		args = append(args, "-o", t.capFile)
	}
	if o.wakeup != "" {
		args = append(args, "--wakeup-size", o.wakeup)
	}
	args = append(args, strings.Fields(cfg.extra)...)
	t.cmd = exec.Command(cfg.tcptrail, args...)
	t.cmd.Stderr = t.stderr
	// Its own process group: a Ctrl-C on the terminal reaches the harness
	// only, which then stops the tracer itself.
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := t.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	t.started = time.Now()
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.tcptrail, err)
	}
	t.pid = t.cmd.Process.Pid
	current.Store(t)
	t.drain = newDrainer(stdout, o.onLine, o.analyze)
	go func() {
		<-t.drain.done // all of stdout read before Wait closes the pipe
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()

	deadline := time.After(30 * time.Second)
	for {
		if _, err := os.Stat(t.readyFile); err == nil {
			break
		}
		select {
		case <-t.exited:
			current.Store(nil)
			return nil, fmt.Errorf("tcptrail exited before it was ready (%v): %s", t.waitErr, strings.TrimSpace(t.stderr.String()))
		case <-deadline:
			t.kill()
			return nil, errors.New("tcptrail not ready after 30s")
		case <-time.After(2 * time.Millisecond):
		}
	}
	t.readyAt = time.Now()
	t.cpuReady, _ = procCPU(t.pid)
	t.statusReady, _ = readStatus(t.pid)
	t.progs = progIDsOf(t.pid)
	if o.bpf {
		t.bpf = watchPrograms(t.pid)
	}
	return t, nil
}

func (t *tracerProc) kill() {
	syscall.Kill(t.pid, syscall.SIGKILL)
	<-t.exited
	current.Store(nil)
}

// tracerResult is what a traced round learnt about the tracer.
type tracerResult struct {
	sum        *summary
	startup    time.Duration // exec to ready file
	stopTime   time.Duration // SIGINT to exit
	cpuWindow  time.Duration // utime+stime while the load ran (ready to stop)
	cpuTotal   time.Duration // whole life, from rusage
	status     procStatus    // /proc/PID/status just before the stop
	ready      procStatus    // /proc/PID/status once ready
	lines      uint64
	transLines uint64
	existing   uint64
	timewait   uint64
	bpf        bpfDelta
	notices    []string
	stderr     string
	patterns   map[string]int // with -analyze
}

// stop measures the tracer, stops it with SIGINT and reads its summary.
func (t *tracerProc) stop() (*tracerResult, error) {
	defer current.Store(nil)
	res := &tracerResult{startup: t.readyAt.Sub(t.started), ready: t.statusReady}
	if cpu, err := procCPU(t.pid); err == nil {
		res.cpuWindow = cpu - t.cpuReady
	}
	res.status, _ = readStatus(t.pid)
	if t.bpf != nil {
		res.bpf = t.bpf.delta()
		t.bpf.close()
	}
	sent := time.Now()
	if err := t.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return nil, fmt.Errorf("signal tcptrail: %w", err)
	}
	select {
	case <-t.exited:
	case <-time.After(20 * time.Second):
		t.kill()
		return nil, errors.New("tcptrail did not exit within 20s of SIGINT")
	}
	res.stopTime = time.Since(sent)
	res.stderr = t.stderr.String()
	if t.waitErr != nil {
		return nil, fmt.Errorf("tcptrail: %v: %s", t.waitErr, strings.TrimSpace(res.stderr))
	}
	if ps := t.cmd.ProcessState; ps != nil {
		res.cpuTotal = ps.UserTime() + ps.SystemTime()
	}
	res.lines = t.drain.lines.Load()
	res.transLines = t.drain.transitions.Load()
	res.existing = t.drain.existing.Load()
	res.timewait = t.drain.timewait.Load()
	res.notices = t.drain.notices()
	if t.drain.seqs != nil {
		res.patterns = map[string]int{}
		for _, seq := range t.drain.seqs {
			res.patterns[strings.Join(seq, " ")]++
		}
	}
	var err error
	if t.capFile != "" {
		res.sum, err = captureSummary(t.capFile, nil)
	} else {
		res.sum, err = t.drain.tableSummary()
	}
	if err != nil {
		return nil, err
	}
	return res, nil
}

// captureSummary reads a capture file with the project's reader and
// returns its summary record; onTransition, if set, sees every transition.
func captureSummary(path string, onTransition func(*record.Transition)) (*summary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rd := capture.NewReader(bufio.NewReaderSize(f, 1<<20))
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no summary record at the end", path)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		switch r := rec.(type) {
		case *record.Transition:
			if onTransition != nil {
				onTransition(r)
			}
		case *record.Summary:
			return &summary{Summary: *r, fromCapture: true}, nil
		}
	}
}
