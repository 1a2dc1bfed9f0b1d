// Command churn is tcptrail's loopback churn benchmark: connections opened
// and closed as fast as possible on a test port, run without and with the
// tracer in alternating rounds, and the numbers the project's goals are
// stated in: throughput ratio, tracer CPU per million events, lost and
// captured transitions, peak RSS and live-view latency.
//
// It needs root. Run it from the repository root after building
// bin/tcptrail (make bench does both). It exits non-zero only when the
// harness itself fails, never because a goal is missed.
package main

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/tcptrail/tcptrail/bench/internal/procfs"

	"github.com/cilium/ebpf"

	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/record"
	"github.com/tcptrail/tcptrail/tracer/socktable"
)

type config struct {
	tcptrail  string
	floor     string
	modes     []string
	moderate  int // client threads of the moderate load (0: no moderate rounds)
	modRounds int
	port      int
	workers   int
	acceptors int
	round     time.Duration
	rounds    int
	warmup    time.Duration
	check     uint64
	wakeup0   bool
	latency   int
	bpfStats  bool
	capture   bool
	keep      bool
	extra     string
	analyze   bool
	tmp       string
}

// Goals, from the issue.
const (
	goalVsFloor   = 0.95   // throughput, traced by tcptrail / traced by the floor
	goalCaptured  = 0.9999 // in every round
	goalCPUPerMev = 0.3    // s of tracer CPU per million events
	goalRSSMiB    = 40
	goalLatency   = 100 * time.Millisecond
)

// wakeupEvery is the --wakeup-size that wakes the reader on every event:
// the kernel side wakes it when at least that much is pending, and a
// pending record is at least 1 byte. (--wakeup-size 0 is refused by the
// flag parser, and tracer.Run would turn 0 into the default anyway.)
const wakeupEvery = "1"

// transitionsPerConn: 5 per end on loopback.
const transitionsPerConn = 10

var sys sysctls

func main() {
	cfg := &config{}
	flag.StringVar(&cfg.tcptrail, "tracer", "bin/tcptrail", "the tcptrail binary")
	flag.StringVar(&cfg.tcptrail, "tcptrail", "bin/tcptrail", "same as -tracer")
	flag.StringVar(&cfg.floor, "floor", "bin/floor", "the minimal tracer (bench/floor) the modes are compared with")
	modes := flag.String("modes", "floor,live,quiet,json", "the traced rounds of each cycle, besides the untraced one: floor (bench/floor), live (the table), quiet (-q -o FILE), json (--json)")
	flag.IntVar(&cfg.moderate, "moderate", 1, "client threads of the moderate load, run after the max-churn cycles (0: skip)")
	flag.IntVar(&cfg.modRounds, "moderate-rounds", 1, "cycles of the moderate load")
	flag.IntVar(&cfg.port, "port", 0, "first test port; each phase uses the next free one, so that no phase's tracer finds an earlier phase's timewait sockets (0: a random one in 20000-29999, so that back-to-back runs do not meet either)")
	flag.IntVar(&cfg.workers, "workers", 4, "client threads, each opening and closing connections in a loop")
	flag.IntVar(&cfg.acceptors, "acceptors", 2, "server threads accepting and closing")
	flag.DurationVar(&cfg.round, "round", 5*time.Second, "length of each round")
	flag.IntVar(&cfg.rounds, "rounds", 3, "cycles of rounds: one untraced, then one per -modes, in an order that rotates from cycle to cycle")
	flag.DurationVar(&cfg.warmup, "warmup", time.Second, "untraced warm-up before the rounds (not counted)")
	flag.Uint64Var(&cfg.check, "check", 5000, "connections in the transition check run (0: skip)")
	flag.BoolVar(&cfg.wakeup0, "wakeup0", true, "also run one traced round that wakes the reader on every event (--wakeup-size 1)")
	flag.IntVar(&cfg.latency, "latency", 20, "single connections for the latency test (0: skip)")
	flag.BoolVar(&cfg.bpfStats, "bpf-stats", true, "set kernel.bpf_stats_enabled=1 during the run and report the programs' run time")
	flag.BoolVar(&cfg.capture, "capture", false, "live-table rounds also write a capture file (-o) and get the check's per-socket analysis")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory with the capture files")
	flag.BoolVar(&cfg.analyze, "analyze", false, "group every traced round's table lines by socket and print the sequences (costs harness CPU)")
	flag.StringVar(&cfg.extra, "tracer-args", "", "extra arguments for every `tcptrail trace` (space-separated, for experiments)")
	var vnames []string
	flag.Func("variant", "`NAME=[KEY=VALUE ...][@BINARY ]ARGS`: one more traced round per cycle, tcptrail trace (or BINARY trace) with ARGS and that environment, e.g. 'q16M=-q --ring-size 16M' (repeatable)", func(v string) error {
		name, err := parseVariant(v)
		vnames = append(vnames, name)
		return err
	})
	flag.Parse()
	for _, m := range append(strings.Split(*modes, ","), vnames...) {
		if m = strings.TrimSpace(m); m == "" {
			continue
		}
		if modeNames[m] == "" {
			fmt.Fprintf(os.Stderr, "churn: -modes: unknown mode %q\n", m)
			os.Exit(2)
		}
		cfg.modes = append(cfg.modes, m)
	}

	// Every load thread sits in blocking syscalls on a locked OS thread.
	// With GOMAXPROCS at the CPU count they would queue for a P whenever
	// they come back from the kernel, idling CPUs and starving the goroutine
	// that drains the tracer's stdout (which then blocks the tracer on a
	// full pipe). With a P for every thread, the kernel alone schedules.
	runtime.GOMAXPROCS(cfg.workers + cfg.acceptors + 2)

	if err := run(cfg); err != nil {
		fmt.Fprintf(os.Stderr, "churn: %v\n", err)
		cleanup(cfg)
		os.Exit(1)
	}
	cleanup(cfg)
}

func cleanup(cfg *config) {
	if t := current.Load(); t != nil {
		t.kill()
	}
	sys.restore()
	if cfg.tmp != "" && !cfg.keep {
		os.RemoveAll(cfg.tmp)
	}
}

func run(cfg *config) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (the tracer loads BPF programs; the harness sets sysctls)")
	}
	if _, err := os.Stat(cfg.tcptrail); err != nil {
		return fmt.Errorf("%s: %w (build it first: go build -o bin/tcptrail ./cmd/tcptrail)", cfg.tcptrail, err)
	}
	for _, m := range cfg.modes {
		if m != modeFloor {
			continue
		}
		if _, err := os.Stat(cfg.floor); err != nil {
			return fmt.Errorf("%s: %w (build it first: go build -o bin/floor ./bench/floor)", cfg.floor, err)
		}
	}
	if cfg.workers < 1 || cfg.acceptors < 1 || cfg.rounds < 1 {
		return fmt.Errorf("-workers, -acceptors and -rounds must be at least 1")
	}
	var err error
	if cfg.tmp, err = os.MkdirTemp("", "tcptrail-bench-"); err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\nchurn: %v: stopping\n", s)
		cleanup(cfg)
		os.Exit(130)
	}()
	if cfg.bpfStats {
		if err := sys.set("kernel.bpf_stats_enabled", "1"); err != nil {
			fmt.Fprintf(os.Stderr, "churn: %v: no BPF run times\n", err)
			cfg.bpfStats = false
		}
	}

	printHeader(cfg)
	port := cfg.port
	if port == 0 {
		port = 20000 + rand.IntN(1000)*10
	}
	nextPort := func() int {
		for ; port < 65535; port++ {
			if free(port) {
				port++
				return port - 1
			}
		}
		return port
	}

	// 1. Is every connection really 10 transitions, and does the table
	// show each one?
	var chk *checkResult
	if cfg.check > 0 {
		if chk, err = runCheck(cfg, nextPort()); err != nil {
			return fmt.Errorf("check: %w", err)
		}
		fmt.Printf("check (tcptrail trace -o FILE): ")
		chk.print()
	}

	// 2. Warm-up, then cycles of rounds.
	if cfg.warmup > 0 {
		if _, err := runRound(cfg, "warm-up", "", nextPort(), cfg.warmup, cfg.workers, ""); err != nil {
			return err
		}
	}
	rounds, err := runCycles(cfg, cfg.rounds, cfg.workers, nextPort)
	if err != nil {
		return err
	}
	var w0 *round
	if cfg.wakeup0 {
		if w0, err = runRound(cfg, "live w=1", modeLive, nextPort(), cfg.round, cfg.workers, wakeupEvery); err != nil {
			return err
		}
		w0.print()
	}
	var moderate []*round
	if cfg.moderate > 0 && cfg.modRounds > 0 {
		fmt.Printf("\nmoderate load: %d client thread(s)\n", cfg.moderate)
		if moderate, err = runCycles(cfg, cfg.modRounds, cfg.moderate, nextPort); err != nil {
			return err
		}
	}

	// 3. Latency of the live view with sparse traffic.
	var lat *latencyResult
	if cfg.latency > 0 {
		if lat, err = runLatency(cfg, nextPort()); err != nil {
			return fmt.Errorf("latency: %w", err)
		}
	}

	report(cfg, chk, rounds, w0, moderate, lat)
	return nil
}

// runCycles runs n cycles of one untraced round and one round per mode,
// the order rotating from cycle to cycle so that no mode always comes
// first or right after the untraced round.
func runCycles(cfg *config, n, workers int, nextPort func() int) ([]*round, error) {
	kinds := append([]string{""}, cfg.modes...)
	var rounds []*round
	for c := 0; c < n; c++ {
		for i := range kinds {
			mode := kinds[(c+i)%len(kinds)]
			name := "untraced"
			if mode != "" {
				name = mode
			}
			r, err := runRound(cfg, name, mode, nextPort(), cfg.round, workers, "")
			if err != nil {
				return nil, err
			}
			r.cycle = c
			r.print()
			rounds = append(rounds, r)
		}
	}
	return rounds, nil
}

func printHeader(cfg *config) {
	host, _ := os.Hostname()
	kernel, _ := readSysctl("kernel.osrelease")
	prange, _ := readSysctl("net.ipv4.ip_local_port_range")
	twb, _ := readSysctl("net.ipv4.tcp_max_tw_buckets")
	twr, _ := readSysctl("net.ipv4.tcp_tw_reuse")
	ver, _ := exec.Command(cfg.tcptrail, "version").Output()
	fmt.Printf("tcptrail churn bench: %s, kernel %s, %d CPUs, %s (%s)\n", host, kernel, runtime.NumCPU(), cfg.tcptrail, strings.TrimSpace(string(ver)))
	fmt.Printf("load: %d client threads (connect, read to EOF, close) + %d server threads (accept, close) on 127.0.0.1, server closes first\n",
		cfg.workers, cfg.acceptors)
	fmt.Printf("rounds: %d cycles of (untraced, %s) of %s, order rotating", cfg.rounds, strings.Join(cfg.modes, ", "), cfg.round)
	if cfg.wakeup0 {
		fmt.Printf(", + 1 live round with a wakeup on every event (--wakeup-size 1)")
	}
	if cfg.moderate > 0 && cfg.modRounds > 0 {
		fmt.Printf(", + %d cycle(s) with %d client thread(s) (moderate load)", cfg.modRounds, cfg.moderate)
	}
	fmt.Printf("\ntracers: --port P, stdout to a pipe drained by the harness; floor = %s", cfg.floor)
	if cfg.capture {
		fmt.Printf("; live rounds also -o FILE")
	}
	fmt.Printf("\nsysctl: ip_local_port_range %s, tcp_tw_reuse %s, tcp_max_tw_buckets %s, bpf_stats_enabled %v\n\n",
		strings.ReplaceAll(prange, "\t", "-"), twr, twb, cfg.bpfStats)
}

// round is one timed run of the load, traced or not.
type round struct {
	name   string
	mode   string // "" untraced
	cycle  int
	port   int
	traced bool
	load   loadResult
	busy   float64
	tr     *tracerResult
	tw     int // timewait sockets in the kernel at the start (all ports)
	// Accounting of the CPUs while the load ran.
	busySec  float64 // all CPUs busy, seconds
	selfCPU  float64 // the harness (load threads, drainer), seconds
	otherCPU float64 // other processes (kernel threads too), seconds
	iwi      uint64  // IRQ work interrupts
	foreign  int     // BPF programs of another tcptrail loaded at the start
	others   string  // the other processes that used the most CPU
	waited   time.Duration
	quiet    bool // the machine was quiet before the round
}

func runRound(cfg *config, name, mode string, port int, d time.Duration, workers int, wakeup string) (*round, error) {
	traced := mode != ""
	r := &round{name: name, mode: mode, port: port, traced: traced}
	r.waited, r.quiet = waitQuiet()
	r.tw = countTimewait()
	l, err := listen(port)
	if err != nil {
		return nil, fmt.Errorf("%s round: %w", name, err)
	}
	defer l.Close()
	var t *tracerProc
	var own map[ebpf.ProgramID]bool
	if traced {
		t, err = startTracer(cfg, tracerOpts{mode: mode, port: port, capture: cfg.capture && mode == modeLive, wakeup: wakeup, bpf: cfg.bpfStats, analyze: cfg.analyze && mode == modeLive})
		if err != nil {
			return nil, fmt.Errorf("%s round: %w", name, err)
		}
		own = t.progs
	}
	r.foreign = foreignPrograms(own)
	ps0 := snapshotProcs()
	c0, self0, iwi0 := readCPUTimes(), selfCPU(), irqWork()
	r.load = churn(l, workers, cfg.acceptors, d, 0)
	c1, self1, iwi1 := readCPUTimes(), selfCPU(), irqWork()
	r.foreign = max(r.foreign, foreignPrograms(own))
	skip := map[int]bool{os.Getpid(): true}
	if traced {
		skip[t.pid] = true
	}
	var others time.Duration
	r.others, others = topOthers(ps0, snapshotProcs(), skip, 3)
	r.otherCPU = others.Seconds()
	r.busy = busyFraction(c0, c1)
	r.busySec = float64(c1.busy-c0.busy) / procfs.ClkTck
	r.selfCPU = (self1 - self0).Seconds()
	r.iwi = iwi1 - iwi0
	if traced {
		// Let the last connections finish closing before detaching (a
		// delayed ACK of the server's FIN can take 200 ms, more on a
		// loaded machine): a transition after the detach is missing from
		// the count without being a loss.
		if left := waitConnectionsDone(port, 5*time.Second); left != "" {
			fmt.Printf("%s port %d: still closing when the tracer stopped: %s\n", name, port, left)
		}
		if r.tr, err = t.stop(); err != nil {
			return nil, fmt.Errorf("%s round: %w", name, err)
		}
		if r.tr.patterns != nil {
			c := &checkResult{conns: r.load.conns, sum: r.tr.sum, tableLines: r.tr.transLines, transitions: r.tr.transLines,
				patterns: r.tr.patterns}
			for _, n := range r.tr.patterns {
				c.sockets += n
			}
			fmt.Printf("%s port %d table: ", name, port)
			c.print()
		}
		if cfg.capture && mode == modeLive {
			// The same analysis as the check's, for the timed round.
			c := &checkResult{conns: r.load.conns, sum: r.tr.sum, tableLines: r.tr.transLines, patterns: map[string]int{}}
			if err := c.analyze(t.capFile); err != nil {
				return nil, err
			}
			fmt.Printf("%s port %d capture: ", name, port)
			c.print()
		}
		if t.capFile != "" && !cfg.keep {
			// Half a gigabyte a round: the next rounds should not share
			// the machine with its writeback and page cache.
			os.Remove(t.capFile)
		}
	}
	if r.load.conns == 0 {
		return nil, fmt.Errorf("%s round: no connection completed: %s", name, r.load.errText())
	}
	return r, nil
}

// disturbed: something else competed for the CPUs or ran BPF programs of
// its own on every syscall during the round; its numbers are suspect.
func (r *round) disturbed() bool {
	return r.foreign > 0 || r.otherCPU > 0.03*r.load.elapsed.Seconds()*float64(runtime.NumCPU())
}

// quietBudget bounds the total time spent waiting for a quiet machine.
var quietBudget = 20 * time.Second

// waitQuiet waits, within what is left of quietBudget, until the CPUs are
// idle and no other tcptrail's programs are loaded: the rounds compare
// throughput, anything else running skews them.
func waitQuiet() (time.Duration, bool) {
	start := time.Now()
	defer func() { quietBudget = max(0, quietBudget-time.Since(start)) }()
	for {
		c0 := readCPUTimes()
		time.Sleep(150 * time.Millisecond)
		if busyFraction(c0, readCPUTimes()) < 0.10 && foreignPrograms(nil) == 0 {
			return time.Since(start), true
		}
		if time.Since(start) >= quietBudget {
			return time.Since(start), false
		}
	}
}

// free: nothing is bound to 127.0.0.1:port right now.
func free(port int) bool {
	l, err := listen(port)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func selfCPU() time.Duration {
	d, _ := procfs.CPU(os.Getpid())
	return d
}

// countTimewait counts timewait sockets from /proc/net/sockstat.
func countTimewait() int {
	b, err := os.ReadFile("/proc/net/sockstat")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "TCP:") {
			continue
		}
		f := strings.Fields(line)
		for i := 1; i+1 < len(f); i += 2 {
			if f[i] == "tw" {
				var n int
				fmt.Sscan(f[i+1], &n)
				return n
			}
		}
	}
	return -1
}

func (r *round) expected() uint64 { return r.load.conns * transitionsPerConn }

func (r *round) print() {
	mark := " "
	if r.disturbed() {
		mark = "*"
	}
	fmt.Printf("%-11s%s port %d: %6d conn in %5.2fs = %7.0f conn/s, CPU busy %3.0f%%, slowest conn %s",
		r.name, mark, r.port, r.load.conns, r.load.elapsed.Seconds(), r.load.rate(), 100*r.busy, r.load.maxConn.Round(time.Microsecond))
	if !r.quiet {
		fmt.Printf(", machine NOT QUIET before the round (waited %s)", r.waited.Round(100*time.Millisecond))
	} else if r.waited > time.Second {
		fmt.Printf(", waited %s for a quiet machine", r.waited.Round(100*time.Millisecond))
	}
	fmt.Printf(", harness %.2fs CPU", r.selfCPU)
	if r.otherCPU > 0.05*r.load.elapsed.Seconds() {
		fmt.Printf(", OTHER PROCESSES %.2fs CPU (%s)", r.otherCPU, r.others)
	}
	if r.foreign > 0 {
		fmt.Printf(", %d BPF programs of ANOTHER tcptrail loaded", r.foreign)
	}
	fmt.Printf(", IRQ work interrupts %d", r.iwi)
	if e := r.load.errText(); e != "" {
		fmt.Printf(", errors: %s", e)
	}
	fmt.Println()
	if r.tr == nil {
		return
	}
	t, s := r.tr, r.tr.sum
	fmt.Printf("            tracer: %d events, %d/%d transitions, lost %d (ringbuf %d, skipped %d, queue %d, inflight %d), gaps %d, ends unseen %d; output lines %d (transitions %d); CPU %.3fs = %.3f s/Mev; VmHWM %.1f MiB",
		s.Events, s.Transitions, r.expected(), s.lostEvents(), s.Lost.RingbufFull, s.Lost.RecursionMisses, s.Lost.QueueFull, s.Lost.InflightFull, s.Lost.Gaps, s.Lost.EndsUnseen,
		t.lines, t.outTransitions, t.cpuWindow.Seconds(), t.cpuWindow.Seconds()/max(float64(s.Events)/1e6, 1e-9), mib(t.status.HWM))
	fmt.Printf(" (%.1f at ready)", mib(t.ready.HWM))
	if t.bpf.ok {
		fmt.Printf("; BPF %.3fs in %d runs", t.bpf.runtime.Seconds(), t.bpf.runs)
		if len(t.bpf.missBy) > 0 {
			fmt.Printf(", recursion misses %v", t.bpf.missBy)
		}
	}
	fmt.Println()
}

// checkResult is the transition check: a short traced run with a capture
// file, every socket's transitions grouped by cookie.
type checkResult struct {
	conns       uint64
	sum         *summary
	transitions uint64 // in the capture
	tableLines  uint64
	sockets     int
	patterns    map[string]int // "CLOSE>SYN_SENT SYN_SENT>ESTABLISHED ..." -> sockets
	gaps        int
	startup     time.Duration
	errs        string
}

func runCheck(cfg *config, port int) (*checkResult, error) {
	l, err := listen(port)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	t, err := startTracer(cfg, tracerOpts{port: port, capture: true})
	if err != nil {
		return nil, err
	}
	load := churn(l, cfg.workers, cfg.acceptors, 0, cfg.check)
	time.Sleep(300 * time.Millisecond) // delayed ACKs: see the rounds

	tr, err := t.stop()
	if err != nil {
		return nil, err
	}
	c := &checkResult{conns: load.conns, sum: tr.sum, tableLines: tr.transLines, patterns: map[string]int{},
		startup: tr.startup, errs: load.errText()}
	if err := c.analyze(t.capFile); err != nil {
		return nil, err
	}
	return c, nil
}

// analyze groups the capture's transitions by socket.
func (c *checkResult) analyze(path string) error {
	seqs := map[uint64][]string{}
	_, err := captureSummary(path, func(r *record.Transition) {
		c.transitions++
		if r.Gap {
			c.gaps++
		}
		seqs[r.Cookie] = append(seqs[r.Cookie], r.Old+">"+r.New)
	})
	if err != nil {
		return err
	}
	c.sockets = len(seqs)
	for _, s := range seqs {
		c.patterns[strings.Join(s, " ")]++
	}
	return nil
}

func (c *checkResult) print() {
	fmt.Printf("transitions by socket, %d connections: %d seen, expected %d (10 per connection); table %d, summary %d; %d sockets; lost: ring buffer full %d, skipped by the kernel %d, queue full %d, inflight full %d, gaps %d\n",
		c.conns, c.transitions, c.conns*transitionsPerConn, c.tableLines, c.sum.Transitions, c.sockets,
		c.sum.Lost.RingbufFull, c.sum.Lost.RecursionMisses, c.sum.Lost.QueueFull, c.sum.Lost.InflightFull, c.gaps)
	type pc struct {
		p string
		n int
	}
	var ps []pc
	for p, n := range c.patterns {
		ps = append(ps, pc{p, n})
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].n > ps[j].n || ps[i].n == ps[j].n && ps[i].p < ps[j].p })
	for i, p := range ps {
		if i == 6 {
			fmt.Printf("  ... %d more sequences\n", len(ps)-i)
			break
		}
		fmt.Printf("  %6d sockets: %s\n", p.n, p.p)
	}
	if c.errs != "" {
		fmt.Printf("  load errors: %s\n", c.errs)
	}
	fmt.Println()
}

// The two sequences a connection's sockets go through (see load.go).
var (
	clientSeq = "CLOSE>SYN_SENT SYN_SENT>ESTABLISHED ESTABLISHED>CLOSE_WAIT CLOSE_WAIT>LAST_ACK LAST_ACK>CLOSE"
	serverSeq = "LISTEN>SYN_RECV SYN_RECV>ESTABLISHED ESTABLISHED>FIN_WAIT1 FIN_WAIT1>FIN_WAIT2 FIN_WAIT2>CLOSE"
)

// ok: every socket went through one of the two sequences, or a part of
// one that a counted loss explains; the table showed every transition.
func (c *checkResult) ok() bool {
	var whole, partial int
	for p, n := range c.patterns {
		switch {
		case p == clientSeq || p == serverSeq:
			whole += n
		case isPart(p, clientSeq) || isPart(p, serverSeq):
			partial += n
		default:
			return false
		}
	}
	missing := int64(c.conns*transitionsPerConn) - int64(c.transitions)
	return whole+partial == int(2*c.conns) && missing >= 0 && c.sum.accountedFor(missing) &&
		c.sum.Transitions == c.transitions && c.tableLines == c.transitions
}

// isPart: p is seq with some transitions left out.
func isPart(p, seq string) bool {
	want := strings.Fields(seq)
	i := 0
	for _, t := range strings.Fields(p) {
		for i < len(want) && want[i] != t {
			i++
		}
		if i == len(want) {
			return false
		}
		i++
	}
	return true
}

// waitConnectionsDone waits, up to timeout, until no socket of port is
// still on its way to closing: none left but listeners and timewait
// sockets (whose FIN_WAIT2 phase sock_diag reports as FIN_WAIT2, so that
// state is let be too). It returns what was left at the deadline, by
// state ("" when nothing was): their remaining transitions happen after
// the tracer stops, and count as missing.
func waitConnectionsDone(port int, timeout time.Duration) string {
	const (
		finWait2 = 5
		timeWait = 6
		listen   = 10
	)
	busy := uint32(socktable.AllStates &^ (1<<finWait2 | 1<<timeWait | 1<<listen))
	deadline := time.Now().Add(timeout)
	for {
		left := map[string]int{}
		for _, family := range []uint8{syscall.AF_INET, syscall.AF_INET6} {
			l, err := socktable.DumpFunc(family, busy, func(e *socktable.Entry) bool {
				return e.Local.Port() == uint16(port) || e.Remote.Port() == uint16(port)
			})
			if err != nil {
				return "unknown, sock_diag failed: " + err.Error()
			}
			for _, e := range l {
				side := "client"
				if e.Local.Port() == uint16(port) {
					side = "server"
				}
				left[side+" "+event.State(e.State).String()]++
			}
		}
		if len(left) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			var parts []string
			for k, n := range left {
				parts = append(parts, fmt.Sprintf("%d %s", n, k))
			}
			sort.Strings(parts)
			return strings.Join(parts, ", ")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
