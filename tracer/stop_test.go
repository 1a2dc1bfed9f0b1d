package tracer_test

import (
	"net"
	"sync"
	"testing"
	"time"

	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/kernel"
)

// TestStopUnderLoadLosesNothing stops a session while connections keep
// coming. The programs write until they are detached, which takes about a
// second with the syscall tracepoints; the ring buffer, small here, must be
// read on meanwhile, or what happened as tracing stopped is lost to it.
func TestStopUnderLoadLosesNothing(t *testing.T) {
	const port = 17130
	s := startSession(t, tracer.Config{Kernel: kernel.Config{RingBytes: 256 << 10, WakeupBytes: 16 << 10}}, port)
	ln, err := net.Listen("tcp4", "127.0.0.1:17130")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// About 500 connections a second: 5,500 events a second, which fill
	// this ring in about 400 ms when nobody reads it, and which an
	// emulated guest's reader follows.
	stopLoad := make(chan struct{})
	var load sync.WaitGroup
	load.Go(func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
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
	s.rec.waitFor(t, 10*time.Second, "the load's first 200 transitions", func() bool {
		return len(s.rec.Steps(func(Step) bool { return true })) >= 200
	})
	sum := s.stop(t)
	if sum.Lost.RingbufFull != 0 || sum.Lost.RecursionMisses != 0 {
		t.Fatalf("lost %d events to a full ring buffer and %d skipped as tracing stopped under load (%d transitions)",
			sum.Lost.RingbufFull, sum.Lost.RecursionMisses, sum.Transitions)
	}
	t.Logf("%d transitions, nothing lost", sum.Transitions)
}
