// Command floor is the minimal ring-buffer tracer the churn benchmark
// measures tcptrail against: it loads tcptrail's own BPF programs through
// tracer/kernel, with the same filters and ring buffer, and does the least
// a tracer can do with what they write: decode each record and print one
// short line per event to stdout. No tracking, no owners, no diagnoses.
//
//	sudo floor --port 7979 [--ready-file F] [--ring-size N] [--wakeup-size N] [--priority-boost N]
//
// It raises its scheduling priority as tcptrail does (--priority-boost),
// so that both compete for the CPUs alike.
//
// On SIGINT or SIGTERM it detaches, drains what the kernel already wrote
// and prints a summary line in the live table's words, so that the same
// parser reads both:
//
//	N events, M transitions, 0 sockets in 5.2s; lost: L (ring buffer full A, skipped by the kernel B), gaps 0
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/tcptrail/tcptrail/internal/priority"
	"github.com/tcptrail/tcptrail/tracer"
	"github.com/tcptrail/tcptrail/tracer/event"
	"github.com/tcptrail/tcptrail/tracer/kernel"
)

func main() {
	var (
		port      = flag.Int("port", 0, "the TCP port to trace, as local or remote port (0: every port)")
		readyFile = flag.String("ready-file", "", "create this file once the programs are attached")
		ringSize  = flag.Int("ring-size", tracer.DefaultRingBytes, "ring buffer size, a power of two")
		wakeup    = flag.Uint64("wakeup-size", kernel.DefaultWakeupBytes, "wake the reader when this much is pending")
		boost     = flag.Int("priority-boost", priority.DefaultBoost, "lower the nice value by this much, as tcptrail does")
	)
	flag.Parse()
	if *boost < 0 || *boost > 39 {
		fmt.Fprintf(os.Stderr, "floor: -priority-boost %d: want 0 to 39\n", *boost)
		os.Exit(2)
	}
	if _, _, err := priority.Raise(*boost); err != nil {
		fmt.Fprintf(os.Stderr, "floor: %v\n", err)
		os.Exit(1)
	}
	if err := run(*port, *readyFile, *ringSize, *wakeup); err != nil {
		fmt.Fprintf(os.Stderr, "floor: %v\n", err)
		os.Exit(1)
	}
}

func run(port int, readyFile string, ringSize int, wakeup uint64) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := kernel.Config{RingBytes: ringSize, WakeupBytes: wakeup}
	if port != 0 {
		cfg.Ports = []uint16{uint16(port)}
	}
	probe, err := kernel.Load(cfg)
	if err != nil {
		return err
	}
	defer probe.Close()
	fmt.Fprintf(os.Stderr, "floor: runs with %s\n", probe)
	if readyFile != "" {
		if err := os.WriteFile(readyFile, []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644); err != nil {
			return err
		}
	}
	start := time.Now()
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	var c counts
	rd := probe.Reader()
	rd.SetDeadline(time.Now().Add(tracer.DefaultPollInterval))
	for ctx.Err() == nil {
		raw, err := rd.Next()
		if err == nil {
			if err := c.line(out, raw); err != nil {
				return err
			}
			continue
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if err := out.Flush(); err != nil {
			return err
		}
		rd.SetDeadline(time.Now().Add(tracer.DefaultPollInterval))
	}
	detachErr := probe.Detach()
	rd.SetDeadline(time.Now().Add(20 * time.Millisecond))
	for {
		raw, err := rd.Next()
		if err != nil {
			break
		}
		if err := c.line(out, raw); err != nil {
			return err
		}
	}
	k, err := probe.Counters()
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%d events, %d transitions, 0 sockets in %s; lost: %d (ring buffer full %d, skipped by the kernel %d), gaps 0\n",
		c.events, c.transitions, time.Since(start).Round(time.Millisecond),
		k.RingbufFull+k.RecursionMisses, k.RingbufFull, k.RecursionMisses)
	return errors.Join(out.Flush(), detachErr)
}

type counts struct {
	ev          event.Event
	events      uint64
	transitions uint64
	buf         []byte
}

// line decodes one record and prints it: monotonic time, kind, socket,
// and for a transition its old and new state.
func (c *counts) line(out *bufio.Writer, raw []byte) error {
	if err := event.Decode(raw, &c.ev); err != nil {
		return err
	}
	c.events++
	e := &c.ev
	b := strconv.AppendUint(c.buf[:0], e.MonoNs, 10)
	b = append(b, ' ')
	b = append(b, e.Kind.String()...)
	b = append(b, ' ')
	b = event.AppendID(b, e.Cookie)
	if e.Kind == event.KindState {
		c.transitions++
		b = append(b, ' ')
		b = append(b, e.Old.String()...)
		b = append(b, " -> "...)
		b = append(b, e.New.String()...)
	}
	b = append(b, '\n')
	c.buf = b
	_, err := out.Write(b)
	return err
}
