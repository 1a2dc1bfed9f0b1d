package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/tcptrail/tcptrail/bench/internal/procfs"

	"golang.org/x/sys/unix"
)

// latencyResult: how long after connect() returned its SYN_SENT ->
// ESTABLISHED line came out of the tracer's stdout, with sparse traffic.
type latencyResult struct {
	samples []time.Duration
	missing int
	startup time.Duration
	status  procfs.Status
	ready   procfs.Status
	tw      int
	cpu     time.Duration
	dur     time.Duration
}

func (l *latencyResult) quantile(q float64) time.Duration {
	s := append([]time.Duration(nil), l.samples...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	i := int(q * float64(len(s)-1))
	return s[i]
}

func (l *latencyResult) max() time.Duration { return l.quantile(1) }

// runLatency starts the tracer with the table to a pipe, then makes single
// connections at random intervals (so that they fall anywhere in the
// reader's 50 ms poll cycle) and times each one's line.
func runLatency(cfg *config, port int) (*latencyResult, error) {
	l, err := listen(port)
	if err != nil {
		return nil, err
	}
	defer l.Close()
	var mu sync.Mutex
	seen := map[int]time.Time{}
	arrived := make(chan struct{}, 1)
	onLine := func(line []byte, at time.Time) {
		f := bytes.Fields(line)
		if len(f) < 8 || string(f[5]) != "SYN_SENT" || string(f[7]) != "ESTABLISHED" {
			return
		}
		i := bytes.LastIndexByte(f[2], ':')
		p, err := strconv.Atoi(string(f[2][i+1:]))
		if err != nil {
			return
		}
		mu.Lock()
		seen[p] = at
		mu.Unlock()
		select {
		case arrived <- struct{}{}:
		default:
		}
	}
	tw := countTimewait()
	t, err := startTracer(cfg, tracerOpts{port: port, onLine: onLine})
	if err != nil {
		return nil, err
	}
	res := &latencyResult{startup: t.readyAt.Sub(t.started), tw: tw, ready: t.statusReady}
	stopServer := l.serve(1)
	addr := &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}
	var buf [16]byte
	begin := time.Now()
	time.Sleep(200 * time.Millisecond)
	for i := 0; i < cfg.latency; i++ {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		if err := connectRetry(fd, addr); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("connect: %w", err)
		}
		returned := time.Now()
		sa, err := unix.Getsockname(fd)
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		lport := sa.(*unix.SockaddrInet4).Port
		timeout := time.After(2 * time.Second)
	wait:
		for {
			mu.Lock()
			at, ok := seen[lport]
			mu.Unlock()
			if ok {
				res.samples = append(res.samples, at.Sub(returned))
				break
			}
			select {
			case <-arrived:
			case <-timeout:
				res.missing++
				break wait
			}
		}
		waitEOF(fd, buf[:])
		unix.Close(fd)
		time.Sleep(100*time.Millisecond + rand.N(150*time.Millisecond))
	}
	stopServer()
	res.dur = time.Since(begin)
	tr, err := t.stop()
	if err != nil {
		return nil, err
	}
	res.status = tr.status
	res.cpu = tr.cpuWindow
	return res, nil
}
