// Command systax measures what an attached tcptrail costs processes that
// have nothing to do with the traced ports: the time added to each of their
// syscalls ("the syscall tax"). tcptrail's syscall hooks run on syscalls of
// every process on the host (the raw_syscalls tracepoints on all of them,
// the function hooks on the socket syscalls and close), and filter only
// once they run.
//
// It times, in its own process, tight loops of raw syscalls: getppid (the
// cheapest syscall there is, so the cost of the hooks stands out) and
// openat+close of /dev/null (close is one of the hooked socket syscalls).
// With -tracer it alternates untraced measurements (no tracer running) and
// traced ones (`tcptrail trace -q --port 7979` attached, idle) and prints,
// for each call, the medians over the rounds, the added time and the worst
// round's added time. -tracer may be given more than once, to compare
// builds in the same rounds.
//
// With -floor each round also measures the floor, what no tracer on the
// raw_syscalls tracepoints can go below: empty programs attached by systax
// itself (see floor.go). tcptrail's tax with tracepoint hooks is the floor
// plus what its programs do.
//
// A round measures untraced, then each setup (floor or tracer) followed by
// untraced again: a setup's added time is its measurement minus the mean of
// the two untraced ones around it, which cancels a drift of the machine's
// speed. A setup's measurement is left out of the summary when those two
// differ by more than -drift, when kernel.bpf_stats_enabled was set, or
// when BPF programs other than the setup's were on the raw_syscalls
// tracepoints (a tracer running elsewhere on the host puts every syscall on
// the traced path, the untraced ones included).
//
// Traced rounds need root. It builds for linux/amd64 and linux/arm64 with
// CGO_ENABLED=0, to be copied into machines with other kernels.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"
	"unsafe"

	"github.com/tcptrail/tcptrail/internal/syncbuf"
	"golang.org/x/sys/unix"
)

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

type config struct {
	tracers    stringList
	tracerArgs stringList
	hooks      string
	rounds     int
	port       int
	batch      time.Duration
	batches    int
	ready      time.Duration
	settle     time.Duration
	floor      string
	drift      float64
}

func main() {
	cfg := &config{}
	flag.Var(&cfg.tracers, "tracer", "a tcptrail binary (repeatable: each is measured in every round); without it and -floor, untraced rounds only")
	flag.StringVar(&cfg.hooks, "hooks", "", "measure each tracer once per way of hooking the syscalls, as `tcptrail trace --syscall-hooks` takes them (comma-separated, e.g. auto,tracepoint); empty: the tracer's choice only")
	flag.Var(&cfg.tracerArgs, "tracer-arg", "extra argument for `tcptrail trace` (repeatable), e.g. -tracer-arg --transitions-only")
	flag.IntVar(&cfg.rounds, "rounds", 5, "rounds; each measures every setup (floor, tracer) between untraced measurements")
	flag.IntVar(&cfg.port, "port", 7979, "the tracer's --port (no traffic is expected there)")
	flag.DurationVar(&cfg.batch, "batch", time.Millisecond, "length of one timed batch of calls (calibrated once, untraced)")
	flag.IntVar(&cfg.batches, "batches", 100, "batches per call and round; the fastest one counts")
	flag.DurationVar(&cfg.ready, "ready-timeout", 30*time.Second, "how long to wait for the tracer's ready file")
	flag.DurationVar(&cfg.settle, "settle", 200*time.Millisecond, "pause before each round's measurement (after the tracer is ready, or after it exited)")
	flag.StringVar(&cfg.floor, "floor", "", "also measure floors, empty programs on the raw_syscalls tracepoints: tp_btf or raw_tp (on sys_enter and sys_exit), tp_btf-enter, tp_btf-exit, raw_tp-enter, raw_tp-exit; or on close's syscall tracepoints: syscall-tp; comma-separated, or all")
	flag.Float64Var(&cfg.drift, "drift", 0.1, "leave a traced measurement out of the summary when the untraced ones around it differ by more than this fraction")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected argument %q", flag.Arg(0)))
	}

	// The measuring goroutine stays on one OS thread for the whole run:
	// no migration between threads mid-batch. It is also the thread that
	// starts the tracers, so that their parent-death signal (sent when this
	// thread exits) fires only when the process does.
	runtime.LockOSThread()

	if err := run(cfg); err != nil {
		stopCurrent()
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "systax: %v\n", err)
	os.Exit(1)
}

// A call is one kind of syscall loop; run(n) makes n calls.
type call struct {
	name string
	run  func(n int) error
	n    int // calls per batch, calibrated
}

// /dev/null, NUL-terminated, kept alive for the whole run.
var devNull, _ = syscall.BytePtrFromString("/dev/null")

// atFDCWD as a variable: a negative constant does not convert to uintptr.
var atFDCWD = unix.AT_FDCWD

func getppidLoop(n int) error {
	for i := 0; i < n; i++ {
		syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
	}
	return nil
}

// openCloseLoop opens /dev/null with openat (arm64 has no open syscall, so
// both architectures make the same call) and closes it.
func openCloseLoop(n int) error {
	for i := 0; i < n; i++ {
		fd, _, errno := syscall.RawSyscall6(syscall.SYS_OPENAT, uintptr(atFDCWD),
			uintptr(unsafe.Pointer(devNull)), syscall.O_RDONLY|syscall.O_CLOEXEC, 0, 0, 0)
		if errno != 0 {
			return fmt.Errorf("openat /dev/null: %w", errno)
		}
		if _, _, errno := syscall.RawSyscall(syscall.SYS_CLOSE, fd, 0, 0); errno != 0 {
			return fmt.Errorf("close: %w", errno)
		}
	}
	return nil
}

// calibrate sets c.n so that one batch takes about d (untraced): it
// doubles n until a batch takes d, then scales n by the fastest of a few
// batches of that size (a single one may have been preempted). Every round
// then makes the same number of calls per batch.
func (c *call) calibrate(d time.Duration) error {
	n := 16
	for {
		best := time.Duration(1<<63 - 1)
		for i := 0; i < 5; i++ {
			start := time.Now()
			if err := c.run(n); err != nil {
				return err
			}
			best = min(best, time.Since(start))
		}
		if best >= d || n >= 1<<26 {
			c.n = max(16, int(float64(n)*float64(d)/float64(best)))
			return nil
		}
		n *= 2
	}
}

// measure returns the ns per call of the fastest of batches batches.
//
// The fastest, not the median: interrupts, preemption by other tasks and
// the tracer's own reader waking up only ever add time to a batch, while
// what the hooks add is paid on every call of every batch. The minimum of
// many short batches sheds most of the noise and keeps all of the tax; the
// median of the rounds then sheds the rounds that were disturbed anyway.
func (c *call) measure(batches int) (float64, error) {
	best := time.Duration(1<<63 - 1)
	for i := 0; i < batches; i++ {
		start := time.Now()
		if err := c.run(c.n); err != nil {
			return 0, err
		}
		best = min(best, time.Since(start))
	}
	return float64(best) / float64(c.n), nil
}

func run(cfg *config) error {
	if cfg.rounds < 1 || cfg.batches < 1 || cfg.batch <= 0 {
		return errors.New("-rounds, -batches and -batch must be positive")
	}
	for _, path := range cfg.tracers {
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("tracer: %w (build it: go build -o bin/tcptrail ./cmd/tcptrail)", err)
		}
	}
	fls, err := pickFloors(cfg.floor)
	if err != nil {
		return err
	}
	if (len(cfg.tracers) > 0 || len(fls) > 0) && os.Geteuid() != 0 {
		return errors.New("traced rounds need root (they load BPF programs): run it with sudo")
	}
	tmp, err := os.MkdirTemp("", "systax-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if slices.ContainsFunc(fls, func(f floor) bool { return f.syscallTP }) {
		unmount, err := mountTracefs(filepath.Join(tmp, "tracefs"))
		if err != nil {
			return err
		}
		defer unmount()
	}

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		stopCurrent()
		os.RemoveAll(tmp)
		fmt.Fprintf(os.Stderr, "systax: %v: stopped\n", s)
		os.Exit(130)
	}()

	calls := []*call{
		{name: "getppid", run: getppidLoop},
		{name: "open+close /dev/null", run: openCloseLoop},
	}
	for _, c := range calls {
		if err := c.calibrate(cfg.batch); err != nil {
			return err
		}
		if _, err := c.measure(cfg.batches); err != nil { // warm-up
			return err
		}
	}

	var uts syscall.Utsname
	_ = syscall.Uname(&uts)
	fmt.Printf("systax: Linux %s %s, %d CPUs; each call and round: fastest of %d batches of",
		utsString(uts.Release[:]), runtime.GOARCH, runtime.NumCPU(), cfg.batches)
	for i, c := range calls {
		sep := ","
		if i == len(calls)-1 {
			sep = ""
		}
		fmt.Printf(" %d %s%s", c.n, c.name, sep)
	}
	fmt.Println()

	// What each round attaches, one after the other, each measured right
	// after an untraced measurement of its own.
	var setups []setup
	for _, f := range fls {
		setups = append(setups, setup{name: f.label(), attach: func() (attachment, error) { return f.attach() }})
	}
	hookings := []string{""}
	if cfg.hooks != "" {
		hookings = strings.Split(cfg.hooks, ",")
	}
	for _, path := range cfg.tracers {
		for _, h := range hookings {
			name := "tcptrail"
			if len(cfg.tracers) > 1 {
				name = path
			}
			traceArgs := append([]string{"trace", "-q", "--port", strconv.Itoa(cfg.port)}, cfg.tracerArgs...)
			if h != "" {
				name += " (" + h + ")"
				traceArgs = append(traceArgs, "--syscall-hooks", h)
			}
			fmt.Printf("%s: %s %s --ready-file FILE\n", name, path, strings.Join(traceArgs, " "))
			setups = append(setups, setup{name: name, attach: func() (attachment, error) {
				return startTracer(cfg, path, tmp, traceArgs)
			}})
		}
	}
	width := 0
	for _, s := range setups {
		width = max(width, len(s.name))
	}

	measureAll := func() ([]float64, error) {
		time.Sleep(cfg.settle)
		ns := make([]float64, len(calls))
		for j, c := range calls {
			v, err := c.measure(cfg.batches)
			if err != nil {
				return nil, err
			}
			ns[j] = v
		}
		return ns, nil
	}

	// untraced[i][c]: ns per call of call c in round i, when nothing is
	// attached. For each setup s, base[s][i][c] and traced[s][i][c]: the
	// mean of the untraced measurements just before and just after s was
	// attached (which cancels a drift of the machine's speed), and the
	// measurement with s attached. left[s][i][c]: why that one is left out
	// of the summary, or "".
	var untraced [][]float64
	base := make([][][]float64, len(setups))
	traced := make([][][]float64, len(setups))
	left := make([][][]string, len(setups))
	var hooks []string // the tracer's "runs with" lines, distinct
	measureUntraced := func() ([]float64, string, error) {
		why := disturbance(0)
		u, err := measureAll()
		return u, cmp.Or(why, disturbance(0)), err
	}
	for i := 0; i < cfg.rounds; i++ {
		u0, why0, err := measureUntraced()
		if err != nil {
			return err
		}
		untraced = append(untraced, u0)
		if len(setups) == 0 {
			fmt.Printf("round %d:", i+1)
			for j, c := range calls {
				fmt.Printf("  %s %.1f", c.name, u0[j])
			}
			fmt.Println(" ns")
			continue
		}
		fmt.Printf("round %d:\n", i+1)
		for k, s := range setups {
			a, err := s.attach()
			if err != nil {
				return err
			}
			tr, err := measureAll()
			if err == nil {
				err = a.alive()
			}
			if err != nil {
				_ = a.stop()
				return err
			}
			whyT := disturbance(a.syscallHooks())
			if t, ok := a.(*tracer); ok {
				if line := t.runsWith(); !slices.Contains(hooks, line) {
					hooks = append(hooks, line)
				}
			}
			if err := a.stop(); err != nil {
				return err
			}
			u1, why1, err := measureUntraced()
			if err != nil {
				return err
			}
			b := make([]float64, len(calls))
			whys := make([]string, len(calls))
			fmt.Printf("  %-*s", width, s.name)
			for j, c := range calls {
				b[j] = (u0[j] + u1[j]) / 2
				whys[j] = cmp.Or(why0, whyT, why1)
				if moved := math.Abs(u1[j]-u0[j]) / b[j]; whys[j] == "" && moved > cfg.drift {
					whys[j] = fmt.Sprintf("untraced %s moved %.0f%%", c.name, 100*moved)
				}
				fmt.Printf("  %s %.1f/%.1f -> %.1f (%+.1f)", c.name, u0[j], u1[j], tr[j], tr[j]-b[j])
			}
			fmt.Print(" ns")
			if why := strings.Join(slices.Compact(slices.DeleteFunc(slices.Clone(whys), func(w string) bool { return w == "" })), "; "); why != "" {
				fmt.Printf(" (left out: %s)", why)
			}
			fmt.Println()
			base[k] = append(base[k], b)
			traced[k] = append(traced[k], tr)
			left[k] = append(left[k], whys)
			u0, why0 = u1, why1
		}
	}

	fmt.Println()
	for _, h := range hooks {
		fmt.Printf("tracer: %s\n", h)
	}
	if len(hooks) > 1 {
		fmt.Println("(the rounds did not all run with the same hooks)")
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(setups) == 0 {
		fmt.Fprintf(tw, "ns per call, %d rounds\tuntraced\t\n", cfg.rounds)
		for j, c := range calls {
			fmt.Fprintf(tw, "%s\t%.1f\t\n", c.name, median(column(untraced, j)))
		}
		return tw.Flush()
	}
	fmt.Fprintf(tw, "ns per call\t\trounds\tuntraced\ttraced\tadded (median)\tadded (worst)\t\n")
	for j, c := range calls {
		for k, s := range setups {
			// The rounds nothing else disturbed; all of them if none.
			var u, t []float64
			for i := range left[k] {
				if left[k][i][j] == "" {
					u, t = append(u, base[k][i][j]), append(t, traced[k][i][j])
				}
			}
			rounds := fmt.Sprint(len(u))
			if len(u) == 0 {
				u, t = column(base[k], j), column(traced[k], j)
				rounds = fmt.Sprintf("%d, all disturbed", len(u))
			}
			added := make([]float64, len(t))
			for i := range t {
				added[i] = t[i] - u[i]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1f\t%.1f\t%+.1f\t%+.1f\t\n", c.name, s.name, rounds,
				median(u), median(t), median(added), slices.Max(added))
		}
	}
	return tw.Flush()
}

// A setup is what a round attaches for its traced measurement.
type setup struct {
	name   string
	attach func() (attachment, error)
}

// An attachment is an attached setup: a running tcptrail, or a floor.
type attachment interface {
	alive() error      // fails if it stopped by itself
	syscallHooks() int // its programs on the raw_syscalls tracepoints
	stop() error
}

func column(rows [][]float64, j int) []float64 {
	col := make([]float64, len(rows))
	for i, r := range rows {
		col[i] = r[j]
	}
	return col
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// utsString converts a NUL-terminated utsname field ([]int8 or []uint8,
// depending on the architecture).
func utsString[T int8 | uint8](f []T) string {
	b := make([]byte, 0, len(f))
	for _, c := range f {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

// tracer is a running `tcptrail trace`.
type tracer struct {
	cmd     *exec.Cmd
	stderr  *syncbuf.Buffer
	exited  chan struct{}
	waitErr error
}

// current is the tracer running right now, for the signal handler and
// for error paths.
var (
	currentMu sync.Mutex
	current   *tracer
)

func setCurrent(t *tracer) {
	currentMu.Lock()
	current = t
	currentMu.Unlock()
}

// stopCurrent stops the running tracer, if any, so that no programs stay
// attached after systax exits.
func stopCurrent() {
	currentMu.Lock()
	t := current
	current = nil
	currentMu.Unlock()
	if t != nil {
		_ = t.stop()
	}
}

func startTracer(cfg *config, path, tmp string, traceArgs []string) (*tracer, error) {
	ready := filepath.Join(tmp, "ready")
	os.Remove(ready)
	t := &tracer{stderr: &syncbuf.Buffer{}, exited: make(chan struct{})}
	t.cmd = exec.Command(path, append(traceArgs, "--ready-file", ready)...)
	t.cmd.Stderr = t.stderr
	// Its own process group, so that a Ctrl-C on the terminal reaches only
	// systax, which then stops it; SIGINT if systax dies without doing so.
	t.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGINT}
	if err := t.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start tracer: %w", err)
	}
	setCurrent(t)
	go func() {
		t.waitErr = t.cmd.Wait()
		close(t.exited)
	}()
	deadline := time.NewTimer(cfg.ready)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(ready); err == nil {
			return t, nil
		}
		select {
		case <-t.exited:
			setCurrent(nil)
			return nil, fmt.Errorf("tracer exited before it was ready (%v): %s", t.waitErr, oneLine(t.stderr.String()))
		case <-deadline.C:
			return nil, fmt.Errorf("tracer not ready after %v: %s", cfg.ready, oneLine(t.stderr.String()))
		case <-tick.C:
		}
	}
}

// syscallHooks is how many programs the tracer has on the raw_syscalls
// tracepoints: both, when it says it runs with them.
func (t *tracer) syscallHooks() int {
	if strings.Contains(t.runsWith(), "raw_syscalls") {
		return 2
	}
	return 0
}

// alive fails if the tracer exited during the measurement.
func (t *tracer) alive() error {
	select {
	case <-t.exited:
		setCurrent(nil)
		return fmt.Errorf("tracer exited during the measurement (%v): %s", t.waitErr, oneLine(t.stderr.String()))
	default:
		return nil
	}
}

// runsWith is the tracer's "tcptrail: runs with ..." line, which says
// which hooks are attached (printed before the ready file is written).
func (t *tracer) runsWith() string {
	for _, l := range strings.Split(t.stderr.String(), "\n") {
		if strings.HasPrefix(l, "tcptrail: runs with ") {
			return l
		}
	}
	return "(the tracer printed no \"tcptrail: runs with\" line)"
}

// stop sends SIGINT and waits for the tracer to exit (SIGKILL after 20s).
func (t *tracer) stop() error {
	setCurrent(nil)
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-t.exited:
	case <-time.After(20 * time.Second):
		_ = t.cmd.Process.Kill()
		<-t.exited
		return errors.New("tracer did not exit within 20s of SIGINT")
	}
	if t.waitErr != nil {
		return fmt.Errorf("tracer: %v: %s", t.waitErr, oneLine(t.stderr.String()))
	}
	return nil
}

// oneLine is the last non-empty line of s (the tracer's error, usually).
func oneLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if l := strings.TrimSpace(lines[len(lines)-1]); l != "" {
		return l
	}
	return "no output"
}
