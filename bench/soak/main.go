// Command soak runs tcptrail for a long time under load and watches it for
// leaks: loopback churn at full speed (as bench/churn) plus a few hundred
// long-lived CLOSE_WAIT sockets, held by a helper process whose peer closed
// and which never closes its ends. Every few seconds it samples the
// tracer's RSS, anonymous memory, OS threads, open fds and goroutines, and
// at the end says whether each stayed flat after the warm-up (within ±10%
// of what it was just after it, or ±2 for counts; anonymous memory, which
// the Go heap's collections swing by MiBs, by the level it ends at).
//
// It needs root. Run it from the repository root after building
// bin/tcptrail (make soak does both):
//
//	sudo go run ./bench/soak -duration 10m
//	sudo go run ./bench/soak -duration 1m -tracer-args 'watch --metrics 127.0.0.1:9464'
//
// The tracer command is -tracer plus -tracer-args plus "--port P,Q
// --ready-file F". Goroutines are read from the tracer's /debug/pprof
// (trace --debug-addr, added here) or, for a command given --metrics, from
// its go_goroutines. It exits 1 when the harness fails or something grew.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tcptrail/tcptrail/bench/internal/procfs"
	"github.com/tcptrail/tcptrail/internal/syncbuf"

	"golang.org/x/sys/unix"
)

type config struct {
	tracer     string
	args       string
	duration   time.Duration
	warmup     time.Duration
	every      time.Duration
	leaks      int
	workers    int
	acceptors  int
	tolerance  float64
	port       int
	stdoutFile string
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "leak-helper" {
		leakHelper(os.Args[2:])
		return
	}
	cfg := &config{}
	flag.StringVar(&cfg.tracer, "tracer", "bin/tcptrail", "the tcptrail binary")
	flag.StringVar(&cfg.args, "tracer-args", "trace -q", "the command and its arguments (--port and --ready-file are added), e.g. 'trace', 'trace --json', 'watch --metrics 127.0.0.1:9464'")
	flag.DurationVar(&cfg.duration, "duration", 10*time.Minute, "how long the load runs")
	flag.DurationVar(&cfg.warmup, "warmup", 0, "samples before this are the warm-up (0: a tenth of -duration, at least 20s)")
	flag.DurationVar(&cfg.every, "every", 5*time.Second, "sampling period")
	flag.IntVar(&cfg.leaks, "leaks", 300, "long-lived CLOSE_WAIT sockets, held by a helper process")
	flag.IntVar(&cfg.workers, "workers", 4, "client threads of the churn load (0: no churn)")
	flag.IntVar(&cfg.acceptors, "acceptors", 2, "server threads of the churn load")
	flag.Float64Var(&cfg.tolerance, "tolerance", 0.10, "how far a figure may move from its value after the warm-up and still be flat")
	flag.IntVar(&cfg.port, "port", 0, "churn port; the leaks use the next one (0: random in 30000-39999)")
	flag.StringVar(&cfg.stdoutFile, "stdout", "/dev/null", "where the tracer's stdout goes")
	flag.Parse()
	if cfg.warmup == 0 {
		cfg.warmup = max(cfg.duration/10, 20*time.Second)
	}
	runtime.GOMAXPROCS(cfg.workers + cfg.acceptors + 2)
	ok, err := run(cfg)
	if err != nil {
		fmt.Fprintf(os.Stderr, "soak: %v\n", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

// sample is one look at the tracer.
type sample struct {
	at         time.Duration // since the load started
	rss, anon  int64         // KiB
	threads    int64
	fds        int64
	goroutines int64 // -1: unknown
	cpu        time.Duration
}

func run(cfg *config) (bool, error) {
	if os.Geteuid() != 0 {
		return false, errors.New("needs root (the tracer loads BPF programs)")
	}
	if _, err := os.Stat(cfg.tracer); err != nil {
		return false, fmt.Errorf("%s: %w (build it first: go build -o bin/tcptrail ./cmd/tcptrail)", cfg.tracer, err)
	}
	tmp, err := os.MkdirTemp("", "tcptrail-soak-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	port := cfg.port
	if port == 0 {
		port = 30000 + int(time.Now().UnixNano()%5000)*2
	}
	churnL, err := listen(port)
	if err != nil {
		return false, err
	}
	defer unix.Close(churnL)
	leakL, err := listen(port + 1)
	if err != nil {
		return false, err
	}
	defer unix.Close(leakL)

	// The tracer.
	ready := filepath.Join(tmp, "ready")
	args := strings.Fields(cfg.args)
	args = append(args, "--port", fmt.Sprintf("%d,%d", port, port+1), "--ready-file", ready)
	goroutines := goroutineSource(cfg.args)
	if goroutines == nil && len(args) > 0 && args[0] == "trace" {
		addr, err := freeAddr()
		if err != nil {
			return false, err
		}
		args = append(args, "--debug-addr", addr)
		goroutines = pprofGoroutines("http://" + addr + "/debug/pprof/goroutine?debug=1")
	}
	out, err := os.Create(cfg.stdoutFile)
	if err != nil {
		return false, err
	}
	defer out.Close()
	stderr := &syncbuf.Buffer{}
	cmd := exec.Command(cfg.tracer, args...)
	cmd.Stdout, cmd.Stderr = out, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Printf("soak: %s %s\n", cfg.tracer, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return false, err
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		select {
		case err := <-exited:
			return false, fmt.Errorf("tracer exited before it was ready (%v): %s", err, stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return false, errors.New("tracer not ready after 30s")
		}
	}

	// The leaks: the helper connects, the server closes its ends at once,
	// the helper never closes its own.
	var acceptedLeaks atomic.Int64
	go func() {
		for {
			fd, _, err := unix.Accept4(leakL, unix.SOCK_CLOEXEC)
			if err == nil {
				unix.Close(fd)
				acceptedLeaks.Add(1)
				continue
			}
			if !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EINTR) {
				return
			}
		}
	}()
	var helper *exec.Cmd
	if cfg.leaks > 0 {
		self, _ := os.Executable()
		helper = exec.Command(self, "leak-helper", strconv.Itoa(port+1), strconv.Itoa(cfg.leaks))
		helper.Stderr = os.Stderr
		hout, _ := helper.StdoutPipe()
		if err := helper.Start(); err != nil {
			stop()
			return false, fmt.Errorf("leak helper: %w", err)
		}
		line, _ := bufio.NewReader(hout).ReadString('\n')
		fmt.Printf("soak: leak helper pid %d: %s", helper.Process.Pid, line)
		defer func() { helper.Process.Kill(); helper.Wait() }()
	}

	// The churn, and the samples.
	var conns atomic.Uint64
	stopLoad := startChurn(churnL, port, cfg.workers, cfg.acceptors, &conns)
	begin := time.Now()
	cpu0, _ := procfs.CPU(pid)
	var samples []sample
	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	fmt.Printf("soak: %s of churn (%d client threads) and %d CLOSE_WAIT leaks, a sample every %s, warm-up %s\n",
		cfg.duration, cfg.workers, cfg.leaks, cfg.every, cfg.warmup)
	fmt.Printf("%8s %10s %9s %9s %8s %5s %10s %9s\n", "t", "conn/s", "RSS MiB", "anon MiB", "threads", "fds", "goroutines", "CPU %")
	lastConns, lastCPU, lastAt := uint64(0), cpu0, time.Duration(0)
	interrupted := false
loop:
	for time.Since(begin) < cfg.duration {
		select {
		case <-tick.C:
		case err := <-exited:
			stopLoad()
			return false, fmt.Errorf("tracer exited during the soak (%v): %s", err, tail(stderr.String(), 5))
		case <-sigs:
			interrupted = true
			break loop
		}
		s, err := look(pid, goroutines)
		if err != nil {
			continue
		}
		s.at = time.Since(begin)
		n := conns.Load()
		rate := float64(n-lastConns) / (s.at - lastAt).Seconds()
		cpuPct := 100 * (s.cpu - lastCPU).Seconds() / (s.at - lastAt).Seconds()
		lastConns, lastCPU, lastAt = n, s.cpu, s.at
		samples = append(samples, s)
		g := "-"
		if s.goroutines >= 0 {
			g = strconv.FormatInt(s.goroutines, 10)
		}
		fmt.Printf("%8s %10.0f %9.1f %9.1f %8d %5d %10s %9.0f\n", s.at.Round(time.Second), rate, mib(s.rss), mib(s.anon), s.threads, s.fds, g, cpuPct)
	}
	stopLoad()
	elapsed := time.Since(begin)
	st, _ := procfs.ReadStatus(pid)
	cpu1, _ := procfs.CPU(pid)
	stop()
	fmt.Printf("\nsoak: %d connections in %s (%.0f/s), %d leak connections accepted; tracer CPU %.1fs (%.0f%% of one CPU), VmHWM %.1f MiB\n",
		conns.Load(), elapsed.Round(time.Second), float64(conns.Load())/elapsed.Seconds(), acceptedLeaks.Load(),
		(cpu1 - cpu0).Seconds(), 100*(cpu1-cpu0).Seconds()/elapsed.Seconds(), mib(st.HWM))
	fmt.Printf("tracer's last words:\n  %s\n", strings.ReplaceAll(tail(stderr.String(), 4), "\n", "\n  "))
	// When events were lost tells a stall (once) from a reader that cannot
	// keep up (all along) or a stop that loses what came meanwhile (last).
	if losses := lossLines(stderr.String()); len(losses) > 0 {
		fmt.Printf("tracer's losses as they came:\n")
		for _, l := range losses {
			fmt.Printf("  %s\n", l)
		}
	}
	if interrupted {
		fmt.Println("soak: interrupted: no verdict")
		return false, nil
	}
	return verdict(cfg, samples), nil
}

// lossLines returns the tracer's lines that report losses: watch's LOST
// lines and trace's warnings, both "N events lost so far".
func lossLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, "events lost so far") {
			out = append(out, l)
		}
	}
	return out
}

// verdict compares every sample after the warm-up with the figure just
// after it (the median of the first fifth of those samples).
func verdict(cfg *config, samples []sample) bool {
	var after []sample
	for _, s := range samples {
		if s.at >= cfg.warmup {
			after = append(after, s)
		}
	}
	if len(after) < 3 {
		fmt.Printf("soak: only %d samples after the warm-up: no verdict\n", len(after))
		return false
	}
	base := after[:max(1, len(after)/5)]
	fmt.Printf("\nafter the warm-up (%d samples from %s): baseline = median of the first %d; flat = every sample within ±%.0f%% of it (counts: or ±2); anonymous memory, which the Go heap's collections swing by MiBs, by its level: the median of the last fifth within ±%.0f%% (or 1 MiB) of it\n",
		len(after), after[0].at.Round(time.Second), len(base), 100*cfg.tolerance, 100*cfg.tolerance)
	allFlat := true
	for _, m := range []struct {
		name  string
		get   func(sample) int64
		scale float64
		unit  string
		level bool // judged by the level it ends at, not sample by sample
	}{
		{"RSS", func(s sample) int64 { return s.rss }, 1.0 / 1024, "MiB", false},
		{"anon RSS", func(s sample) int64 { return s.anon }, 1.0 / 1024, "MiB", true},
		{"threads", func(s sample) int64 { return s.threads }, 1, "", false},
		{"open fds", func(s sample) int64 { return s.fds }, 1, "", false},
		{"goroutines", func(s sample) int64 { return s.goroutines }, 1, "", false},
	} {
		if m.get(after[0]) < 0 {
			fmt.Printf("  %-10s unknown (no goroutine count from this command)\n", m.name)
			continue
		}
		var bv []float64
		for _, s := range base {
			bv = append(bv, float64(m.get(s)))
		}
		b := median(bv)
		lo, hi := math.Inf(1), math.Inf(-1)
		var xs, ys []float64
		for _, s := range after {
			v := float64(m.get(s))
			lo, hi = math.Min(lo, v), math.Max(hi, v)
			xs, ys = append(xs, s.at.Minutes()), append(ys, v)
		}
		slack := cfg.tolerance * b
		if m.unit == "" {
			slack = math.Max(slack, 2)
		}
		flat := hi <= b+slack && lo >= b-slack
		if m.level {
			// The Go heap's sawtooth: a collection is due when the heap
			// has grown by as much as was live after the last one, so a
			// few MiB of anonymous memory swing by one or two MiB with no
			// growth at all. Growth shows as a higher level at the end.
			slack = math.Max(slack, memorySlackKiB)
			end := median(ys[len(ys)-max(1, len(ys)/5):])
			flat = math.Abs(end-b) <= slack
		}
		allFlat = allFlat && flat
		word := "flat"
		if !flat {
			word = "NOT FLAT"
		}
		f := func(v float64) string {
			if m.unit == "" {
				return fmt.Sprintf("%.0f", v)
			}
			return fmt.Sprintf("%.1f %s", v*m.scale, m.unit)
		}
		fmt.Printf("  %-10s %-8s baseline %s, min %s, max %s, last %s, median of the last fifth %s, trend %+.2f%% per minute\n",
			m.name, word, f(b), f(lo), f(hi), f(ys[len(ys)-1]), f(median(ys[len(ys)-max(1, len(ys)/5):])), 100*slope(xs, ys)/math.Max(b, 1))
	}
	if allFlat {
		fmt.Println("soak: flat after the warm-up")
	} else {
		fmt.Println("soak: something grew or shrank after the warm-up")
	}
	return allFlat
}

func slope(xs, ys []float64) float64 {
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= float64(len(xs))
	my /= float64(len(ys))
	var num, den float64
	for i := range xs {
		num += (xs[i] - mx) * (ys[i] - my)
		den += (xs[i] - mx) * (xs[i] - mx)
	}
	if den == 0 {
		return 0
	}
	return num / den
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func look(pid int, goroutines func() int64) (sample, error) {
	st, err := procfs.ReadStatus(pid)
	if err != nil {
		return sample{}, err
	}
	s := sample{rss: st.RSS, anon: st.Anon, threads: st.Threads, goroutines: -1}
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid)); err == nil {
		s.fds = int64(len(ents))
	}
	if goroutines != nil {
		s.goroutines = goroutines()
	}
	s.cpu, _ = procfs.CPU(pid)
	return s, nil
}

// goroutineSource reads go_goroutines from the command's Prometheus
// endpoint when it was given --metrics ADDR.
func goroutineSource(args string) func() int64 {
	f := strings.Fields(args)
	for i, a := range f {
		addr := ""
		if a == "--metrics" && i+1 < len(f) {
			addr = f[i+1]
		} else if v, ok := strings.CutPrefix(a, "--metrics="); ok {
			addr = v
		}
		if addr == "" {
			continue
		}
		if strings.HasPrefix(addr, ":") {
			addr = "127.0.0.1" + addr
		}
		url := "http://" + addr + "/metrics"
		return func() int64 {
			b, err := httpGet(url)
			if err != nil {
				return -1
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
					n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
					return int64(n)
				}
			}
			return -1
		}
	}
	return nil
}

// pprofGoroutines reads "goroutine profile: total N".
func pprofGoroutines(url string) func() int64 {
	return func() int64 {
		b, err := httpGet(url)
		if err != nil {
			return -1
		}
		line, _, _ := strings.Cut(string(b), "\n")
		n, err := strconv.ParseInt(strings.TrimPrefix(line, "goroutine profile: total "), 10, 64)
		if err != nil {
			return -1
		}
		return n
	}
}

var client = &http.Client{Timeout: 2 * time.Second}

func httpGet(url string) ([]byte, error) {
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 1<<20))
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// leakHelper is the process holding the leaks: it connects n times to
// 127.0.0.1:port, whose server closes at once, and keeps every socket open
// (in CLOSE_WAIT) until it is killed.
func leakHelper(args []string) {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: soak leak-helper PORT N")
		os.Exit(2)
	}
	port, _ := strconv.Atoi(args[0])
	n, _ := strconv.Atoi(args[1])
	var fds []int
	for i := 0; i < n; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "leak helper: connection %d: %v\n", i, err)
			os.Exit(1)
		}
		fds = append(fds, fd)
	}
	fmt.Printf("holding %d connections, never closing them\n", len(fds))
	for {
		time.Sleep(time.Hour)
	}
}

// listen opens a blocking listener whose accept wakes every 50 ms.
func listen(port int) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// startChurn runs the load of bench/churn: acceptors that accept and close,
// clients that connect, read to EOF and close, on locked OS threads, until
// stop is set.
//
// It returns the function that stops it: the clients first, then the
// acceptors (a client whose connection is never accepted would wait for
// its EOF forever).
func startChurn(l, port, workers, acceptors int, conns *atomic.Uint64) (stop func()) {
	var stopClients, stopServer atomic.Bool
	var clients, server sync.WaitGroup
	for i := 0; i < acceptors; i++ {
		server.Add(1)
		go func() {
			defer server.Done()
			runtime.LockOSThread()
			for !stopServer.Load() {
				if fd, _, err := unix.Accept4(l, unix.SOCK_CLOEXEC); err == nil {
					unix.Close(fd)
				}
			}
		}()
	}
	addr := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	for i := 0; i < workers; i++ {
		clients.Add(1)
		go func() {
			defer clients.Done()
			runtime.LockOSThread()
			var buf [16]byte
			for !stopClients.Load() {
				fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
				if err != nil {
					time.Sleep(time.Millisecond)
					continue
				}
				if err := unix.Connect(fd, addr); err == nil {
					for {
						n, err := unix.Read(fd, buf[:])
						if err == unix.EINTR {
							continue
						}
						if err == nil && n == 0 {
							conns.Add(1)
						}
						break
					}
				}
				unix.Close(fd)
			}
		}()
	}
	return func() {
		stopClients.Store(true)
		clients.Wait()
		stopServer.Store(true)
		server.Wait()
	}
}

func mib(kib int64) float64 { return float64(kib) / 1024 }

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// memorySlackKiB is the least a memory figure may move and still be flat.
const memorySlackKiB = 1024
