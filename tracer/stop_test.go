package tracer_test

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/internal/testwait"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/kernel"
	"github.com/tcptrail/tcptrail/tracer/record"
)

// TestStopUnderLoadLosesNothing stops a session while connections keep
// coming. The programs write until they are detached, which takes about a
// second with the syscall tracepoints; the ring buffer, small here, must be
// read on meanwhile, or what happened as tracing stopped is lost to it.
func TestStopUnderLoadLosesNothing(t *testing.T) {
	const port = 17130
	s := startSession(t, tracer.Config{Kernel: kernel.Config{RingBytes: 256 << 10, WakeupBytes: 16 << 10}}, port)
	closingServer(t, port)
	// About 500 connections a second: 5,500 events a second, which fill
	// this ring in about 400 ms when nobody reads it. Slower where the
	// reader cannot follow that (an emulated guest): see below.
	var interval atomic.Int64
	interval.Store(int64(2 * time.Millisecond))
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		for {
			select {
			case <-stopLoad:
				return
			case <-time.After(time.Duration(interval.Load())):
			}
			// The server closes first, so that the TIME_WAIT sockets
			// are on its port, not on ephemeral ports other tests'
			// clients get next.
			if c, err := net.Dial("tcp4", "127.0.0.1:17130"); err == nil {
				c.SetReadDeadline(time.Now().Add(time.Second))
				c.Read(make([]byte, 1))
				c.Close()
			}
		}
	})
	defer func() { close(stopLoad); load.Wait() }()

	// What is lost before the stop is the machine's, not the stop's: the
	// session counts it (every second) and says so in a lost record. Stop
	// only once the reader has followed the load for 2 s with nothing
	// more lost, halving the load each time it did not.
	lostSoFar := func() (full, skipped uint64) {
		for _, r := range s.rec.Records() {
			if l, ok := r.(*record.Lost); ok {
				full, skipped = l.Losses.RingbufFull, l.Losses.RecursionMisses
			}
		}
		return full, skipped
	}
	full, skipped := lostSoFar()
	since := time.Now()
	testwait.Until(t, 60*time.Second, "the reader to follow the load for 2s", func() bool {
		if f, k := lostSoFar(); f != full || k != skipped {
			full, skipped, since = f, k, time.Now()
			interval.Store(2 * interval.Load())
			t.Logf("%d events lost to a full ring buffer before the stop: the load slows down to one connection every %v", f, time.Duration(interval.Load()))
		}
		return time.Since(since) >= 2*time.Second && len(s.rec.Steps(func(Step) bool { return true })) >= 200
	})
	sum := s.stop(t)
	if sum.Lost.RingbufFull != full || sum.Lost.RecursionMisses != skipped {
		t.Fatalf("lost %d events to a full ring buffer and %d skipped as tracing stopped under load (%d transitions)",
			sum.Lost.RingbufFull-full, sum.Lost.RecursionMisses-skipped, sum.Transitions)
	}
	t.Logf("%d transitions, nothing lost as tracing stopped (one connection every %v)", sum.Transitions, time.Duration(interval.Load()))
}
