package main

import (
	"bufio"
	"bytes"
	"encoding/json"
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

	"github.com/tcptrail/tcptrail/bench/internal/procfs"

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

// maxEndLoss is the most transitions a socket of this load can lose at its
// end: ESTABLISHED -> FIN_WAIT1 -> FIN_WAIT2 -> CLOSE.
const maxEndLoss = 3

// accountedFor tells whether missing transitions are all accounted for:
// counted as lost events, or on sockets flagged as ends unseen (a socket
// whose end the kernel never showed the programs).
func (s *summary) accountedFor(missing int64) bool {
	if missing <= 0 {
		return true
	}
	counted := s.lostEvents()
	return uint64(missing) <= counted || (s.Lost.EndsUnseen > 0 && uint64(missing) <= counted+maxEndLoss*s.Lost.EndsUnseen)
}

// drainer reads the tracer's stdout (the live table, JSON Lines, or the
// floor's lines) as fast as it comes, counts its lines, and keeps the lines
// that are not events (notices, the summary) for later.
type drainer struct {
	mode        string
	lines       atomic.Uint64
	transitions atomic.Uint64 // transition lines (table: "15:04:05.000000 #cookie ...")
	existing    atomic.Uint64 // EXISTING: sockets found at start
	timewait    atomic.Uint64 // TIMEWAIT: phase changes of timewait sockets
	onLine      func(line []byte, at time.Time)
	seqs        map[string][]string // with -analyze: cookie -> transitions, from the table
	mu          sync.Mutex
	other       []string
	otherDrops  int
	tail        []string // the last non-event lines: the summary is among them
	done        chan struct{}
}

// tailLines bounds drainer.tail.
const tailLines = 64

func newDrainer(r io.Reader, mode string, onLine func([]byte, time.Time), analyze bool) *drainer {
	d := &drainer{mode: mode, onLine: onLine, done: make(chan struct{})}
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

var (
	jsonTransition = []byte(`{"type":"transition"`)
	jsonRecord     = []byte(`{"type":"`)
	jsonSummary    = []byte(`{"type":"summary"`)
)

func (d *drainer) line(line []byte) {
	d.lines.Add(1)
	switch d.mode {
	case modeJSON:
		if bytes.HasPrefix(line, jsonTransition) {
			d.transitions.Add(1)
			return
		}
		if bytes.HasPrefix(line, jsonRecord) && !bytes.HasPrefix(line, jsonSummary) {
			return // calls, snapshots ...: counted as lines only
		}
	case modeFloor:
		if len(line) > 0 && line[0] >= '0' && line[0] <= '9' && bytes.Contains(line, []byte(" #")) {
			if bytes.Contains(line, []byte(" transition ")) {
				d.transitions.Add(1)
			}
			return
		}
	default:
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
	}
	d.mu.Lock()
	if len(d.other) < 2000 {
		d.other = append(d.other, string(line))
	} else {
		d.otherDrops++
	}
	if len(d.tail) == tailLines {
		copy(d.tail, d.tail[1:])
		d.tail = d.tail[:tailLines-1]
	}
	d.tail = append(d.tail, string(line))
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
	endsUnseenRE   = regexp.MustCompile(`ends unseen (\d+)`)
)

// tableSummary parses the live table's summary line.
func (d *drainer) tableSummary() (*summary, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.tail) - 1; i >= 0; i-- {
		line := d.tail[i]
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
		s.Lost.EndsUnseen = named(endsUnseenRE)
		return s, nil
	}
	return nil, errors.New("no summary line in the live table's output")
}

// jsonSummary parses the summary record of JSON Lines on stdout.
func (d *drainer) jsonSummary() (*summary, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := len(d.tail) - 1; i >= 0; i-- {
		if !strings.HasPrefix(d.tail[i], string(jsonSummary)) {
			continue
		}
		var s record.Summary
		if err := json.Unmarshal([]byte(d.tail[i]), &s); err != nil {
			return nil, fmt.Errorf("summary record: %w", err)
		}
		return &summary{Summary: s, fromCapture: true}, nil
	}
	return nil, errors.New("no summary record in the JSON Lines on stdout")
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
	mode      string
	kind      string // the mode whose output it writes
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
	statusReady procfs.Status
	progs       map[ebpf.ProgramID]bool
}

// current is the tracer running right now, for the interrupt handler.
var current atomic.Pointer[tracerProc]

// The tracers a traced round runs.
const (
	modeFloor = "floor" // bench/floor: decode and print a line per event
	modeLive  = "live"  // tcptrail trace: the live table
	modeQuiet = "quiet" // tcptrail trace -q -o FILE
	modeJSON  = "json"  // tcptrail trace --json
)

// variant is a mode defined on the command line (-variant): tcptrail (or
// another build of it) with other arguments, to compare with the modes.
type variant struct {
	env  []string // KEY=VALUE for the tracer's environment
	bin  string   // "" for -tracer
	args []string // after trace --port P --ready-file F
	kind string   // what to read the summary from: modeLive, modeQuiet or modeJSON
}

var variants = map[string]variant{}

// parseVariant parses NAME=[KEY=VALUE ...][@BINARY ]ARGS.
func parseVariant(v string) (string, error) {
	name, rest, ok := strings.Cut(v, "=")
	if !ok || name == "" || modeNames[name] != "" {
		return "", fmt.Errorf("-variant %q: want NAME=[@BINARY ]ARGS with a new NAME", v)
	}
	var vr variant
	f := strings.Fields(rest)
	for len(f) > 0 && strings.Contains(f[0], "=") && !strings.HasPrefix(f[0], "-") {
		vr.env, f = append(vr.env, f[0]), f[1:]
	}
	if len(f) > 0 && strings.HasPrefix(f[0], "@") {
		vr.bin, f = f[0][1:], f[1:]
	}
	vr.args, vr.kind = f, modeLive
	for _, a := range f {
		switch a {
		case "-q", "--quiet":
			vr.kind = modeQuiet
		case "--json":
			vr.kind = modeJSON
		}
	}
	variants[name] = vr
	modeNames[name] = name + ": " + strings.TrimSpace(rest)
	return name, nil
}

var modeNames = map[string]string{
	modeFloor: "floor (minimal tracer)",
	modeLive:  "tcptrail live table",
	modeQuiet: "tcptrail -q -o FILE",
	modeJSON:  "tcptrail --json",
}

type tracerOpts struct {
	mode    string // modeLive when empty
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
	if o.mode == "" {
		o.mode = modeLive
	}
	t.mode = o.mode
	bin := cfg.tcptrail
	args := []string{"trace", "--port", strconv.Itoa(o.port), "--ready-file", t.readyFile}
	kind := o.mode
	if vr, ok := variants[o.mode]; ok {
		if vr.bin != "" {
			bin = vr.bin
		}
		args = append(args, vr.args...)
		kind = vr.kind
	}
	t.kind = kind
	switch kind {
	case modeFloor:
		bin = cfg.floor
		args = []string{"--port", strconv.Itoa(o.port), "--ready-file", t.readyFile}
	case modeQuiet:
		if o.mode == kind {
			args = append(args, "-q")
		}
		o.capture = true
	case modeJSON:
		if o.mode == kind {
			args = append(args, "--json")
		}
	}
	if o.capture {
		t.capFile = filepath.Join(cfg.tmp, fmt.Sprintf("capture-%d.jsonl", o.port))
		os.Remove(t.capFile)
		args = append(args, "-o", t.capFile)
	}
	if o.wakeup != "" {
		args = append(args, "--wakeup-size", o.wakeup)
	}
	if o.mode != modeFloor {
		args = append(args, strings.Fields(cfg.extra)...)
	}
	t.cmd = exec.Command(bin, args...)
	if vr, ok := variants[o.mode]; ok && len(vr.env) > 0 {
		t.cmd.Env = append(os.Environ(), vr.env...)
	}
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
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	t.pid = t.cmd.Process.Pid
	current.Store(t)
	t.drain = newDrainer(stdout, kind, o.onLine, o.analyze)
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
	t.cpuReady, _ = procfs.CPU(t.pid)
	t.statusReady, _ = procfs.ReadStatus(t.pid)
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
	status     procfs.Status // /proc/PID/status just before the stop
	ready      procfs.Status // /proc/PID/status once ready
	lines      uint64
	transLines uint64
	existing   uint64
	timewait   uint64
	bpf        bpfDelta
	notices    []string
	stderr     string
	patterns   map[string]int // with -analyze
	// fileTransitions: transition records in the capture file (-o).
	fileTransitions uint64
	// outTransitions: transitions in the mode's output (table or JSON
	// lines on stdout, the floor's lines, or the capture file with -q).
	outTransitions uint64
}

// stop measures the tracer, stops it with SIGINT and reads its summary.
func (t *tracerProc) stop() (*tracerResult, error) {
	defer current.Store(nil)
	res := &tracerResult{startup: t.readyAt.Sub(t.started), ready: t.statusReady}
	if cpu, err := procfs.CPU(t.pid); err == nil {
		res.cpuWindow = cpu - t.cpuReady
	}
	res.status, _ = procfs.ReadStatus(t.pid)
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
	switch {
	case t.capFile != "":
		res.sum, res.fileTransitions, err = scanCapture(t.capFile)
	case t.kind == modeJSON:
		res.sum, err = t.drain.jsonSummary()
	default:
		res.sum, err = t.drain.tableSummary()
	}
	if err != nil {
		return nil, err
	}
	// What the output holds against what the summary counts.
	res.outTransitions = res.transLines
	if t.kind == modeQuiet {
		res.outTransitions = res.fileTransitions
	}
	return res, nil
}

// scanCapture counts a capture file's transition records without decoding
// them (a round's capture is hundreds of MB) and returns its summary.
func scanCapture(path string) (*summary, uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<20)
	var n uint64
	var last []byte
	for {
		line, err := br.ReadSlice('\n')
		if bytes.HasPrefix(line, jsonTransition) {
			n++
		} else if bytes.HasPrefix(line, jsonSummary) {
			last = append(last[:0], line...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			// A record longer than the buffer: skip the rest of it.
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	if last == nil {
		return nil, n, fmt.Errorf("%s: no summary record", path)
	}
	var s record.Summary
	if err := json.Unmarshal(last, &s); err != nil {
		return nil, n, fmt.Errorf("%s: summary record: %w", path, err)
	}
	return &summary{Summary: s, fromCapture: true}, n, nil
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
