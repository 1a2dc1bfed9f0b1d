package main

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The load uses raw blocking syscalls on threads of their own: no netpoller,
// no goroutine hand-offs, so the harness itself costs as little as possible
// and every connection is the same five syscalls on each side.
//
// Close order: the server closes first (accept, close), the client reads
// until EOF and then closes. So the server side goes through FIN_WAIT1,
// FIN_WAIT2 and ends in a timewait socket, the client through CLOSE_WAIT and
// LAST_ACK, and no client ephemeral port is held in TIME_WAIT: a client port
// is free again as soon as its close() returns. Nothing is sent, so no close
// turns into a reset. Each connection is exactly 10 transitions:
//
//	client: CLOSE->SYN_SENT, SYN_SENT->ESTABLISHED, ESTABLISHED->CLOSE_WAIT,
//	        CLOSE_WAIT->LAST_ACK, LAST_ACK->CLOSE
//	server: LISTEN->SYN_RECV, SYN_RECV->ESTABLISHED, ESTABLISHED->FIN_WAIT1,
//	        FIN_WAIT1->FIN_WAIT2, FIN_WAIT2->CLOSE
//
// A later SYN on the four-tuple of one of the server's timewait sockets
// (client ports wrap after ~28k connections) makes the kernel recycle that
// timewait socket (TCP_TW_SYN), which reports no transition.

// listener is the test port's listening socket. It is opened before the
// tracer starts and closed after it stops, so that its own transitions
// (CLOSE->LISTEN, LISTEN->CLOSE) are never part of a measurement.
type listener struct {
	fd   int
	port int
}

func listen(port int) (*listener, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	// accept() honours SO_RCVTIMEO: acceptors wake up to see the stop flag
	// without needing a connection to unblock them.
	tv := unix.NsecToTimeval(int64(50 * time.Millisecond))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("SO_RCVTIMEO: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listen: %w", err)
	}
	return &listener{fd: fd, port: port}, nil
}

func (l *listener) Close() { unix.Close(l.fd) }

// server accepts and closes until stopped. Run it with start, stop it with
// the returned function, which waits for the acceptors to return.
func (l *listener) serve(acceptors int) (stop func() (accepted uint64, errs map[string]uint64)) {
	var done atomic.Bool
	var wg sync.WaitGroup
	counts := make([]uint64, acceptors)
	errMaps := make([]map[string]uint64, acceptors)
	for i := 0; i < acceptors; i++ {
		wg.Add(1)
		errMaps[i] = map[string]uint64{}
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for {
				fd, _, err := unix.Accept4(l.fd, unix.SOCK_CLOEXEC)
				if err == nil {
					unix.Close(fd)
					counts[i]++
					continue
				}
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					if done.Load() {
						return
					}
					continue
				}
				errMaps[i]["accept: "+err.Error()]++
				if done.Load() {
					return
				}
			}
		}(i)
	}
	return func() (uint64, map[string]uint64) {
		done.Store(true)
		wg.Wait()
		var n uint64
		errs := map[string]uint64{}
		for i := range counts {
			n += counts[i]
			for k, v := range errMaps[i] {
				errs[k] += v
			}
		}
		return n, errs
	}
}

// loadResult is what one run of the load did.
type loadResult struct {
	conns    uint64 // connections completed: connect, EOF, close
	accepted uint64
	elapsed  time.Duration
	errs     map[string]uint64
	maxConn  time.Duration // slowest single connection (a 1 s stall is a dropped SYN)
}

func (r loadResult) rate() float64 { return float64(r.conns) / r.elapsed.Seconds() }

func (r loadResult) errText() string {
	if len(r.errs) == 0 {
		return ""
	}
	var parts []string
	for k, v := range r.errs {
		parts = append(parts, fmt.Sprintf("%s x%d", k, v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// churn runs workers that each connect, wait for the server's FIN and close,
// as fast as they can, until d has passed or (if total > 0) total
// connections are done.
func churn(l *listener, workers, acceptors int, d time.Duration, total uint64) loadResult {
	stopServer := l.serve(acceptors)
	var done atomic.Bool
	var started atomic.Uint64
	var wg sync.WaitGroup
	counts := make([]uint64, workers)
	maxes := make([]time.Duration, workers)
	errMaps := make([]map[string]uint64, workers)
	addr := &unix.SockaddrInet4{Port: l.port, Addr: [4]byte{127, 0, 0, 1}}
	begin := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		errMaps[w] = map[string]uint64{}
		go func(w int) {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var buf [16]byte
			for !done.Load() {
				if total > 0 && started.Add(1) > total {
					return
				}
				t0 := time.Now()
				if err := oneConn(addr, buf[:]); err != nil {
					errMaps[w][err.Error()]++
					continue
				}
				if dt := time.Since(t0); dt > maxes[w] {
					maxes[w] = dt
				}
				counts[w]++
			}
		}(w)
	}
	if total == 0 {
		time.Sleep(d)
		done.Store(true)
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(begin), errs: map[string]uint64{}}
	accepted, serr := stopServer()
	res.accepted = accepted
	for w := range counts {
		res.conns += counts[w]
		if maxes[w] > res.maxConn {
			res.maxConn = maxes[w]
		}
		for k, v := range errMaps[w] {
			res.errs[k] += v
		}
	}
	for k, v := range serr {
		res.errs[k] += v
	}
	return res
}

// oneConn is one connection: connect, read until the server's FIN, close.
func oneConn(addr *unix.SockaddrInet4, buf []byte) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := connectRetry(fd, addr); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	return waitEOF(fd, buf)
}

func connectRetry(fd int, addr *unix.SockaddrInet4) error {
	for {
		err := unix.Connect(fd, addr)
		if err != unix.EINTR {
			return err
		}
	}
}

func waitEOF(fd int, buf []byte) error {
	for {
		n, err := unix.Read(fd, buf)
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return fmt.Errorf("read: %w", err)
		case n == 0:
			return nil
		default:
			return fmt.Errorf("read: unexpected %d bytes", n)
		}
	}
}
