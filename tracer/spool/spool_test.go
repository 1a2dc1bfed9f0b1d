package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// gate is a destination that blocks every write until it is opened.
type gate struct {
	open    chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
	written atomic.Int64
}

func newGate() *gate { return &gate{open: make(chan struct{})} }

func (g *gate) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	g.written.Add(int64(len(p)))
	return g.buf.Write(p)
}

func TestWritesInOrder(t *testing.T) {
	var dst bytes.Buffer
	s := New(&dst, 1<<20)
	var want bytes.Buffer
	for i := range 10000 {
		line := fmt.Appendf(nil, "line %d %s\n", i, bytes.Repeat([]byte{'x'}, i%300))
		want.Write(line)
		if n, err := s.Write(line); err != nil || n != len(line) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want.Bytes()) {
		t.Fatalf("wrote %d bytes, want the %d written, in order", dst.Len(), want.Len())
	}
}

// The point of a spool: a stalled reader of the output does not stall the
// writer until the bound is reached, and does after it.
func TestStalledReader(t *testing.T) {
	const limit = 1 << 20
	g := newGate()
	s := New(g, limit)
	chunk := bytes.Repeat([]byte{'a'}, 64<<10)
	for range limit / len(chunk) {
		done := make(chan struct{})
		go func() {
			s.Write(chunk)
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Write waited for a stalled reader before the bound was reached")
		}
	}
	if g.written.Load() != 0 {
		t.Fatal("the gate let a write through while closed")
	}

	// Past the bound, Write waits for the reader.
	over := make(chan error, 1)
	go func() {
		_, err := s.Write(chunk)
		over <- err
	}()
	select {
	case <-over:
		t.Fatal("Write past the bound returned while the reader was stalled: memory would grow without end")
	case <-time.After(100 * time.Millisecond):
	}
	close(g.open)
	select {
	case err := <-over:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Write still waiting after the reader caught up")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got, want := g.written.Load(), int64(limit+len(chunk)); got != want {
		t.Fatalf("reader got %d bytes, want %d", got, want)
	}
}

type failing struct{ after int }

var errDisk = errors.New("no space left on device")

func (f *failing) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errDisk
	}
	f.after--
	return len(p), nil
}

func TestWriteErrorIsReturned(t *testing.T) {
	s := New(&failing{after: 2}, 256<<10)
	chunk := make([]byte, 64<<10)
	var err error
	deadline := time.Now().Add(10 * time.Second)
	// The error reaches the writer through a later Write; none of them
	// may hang, however full the queue was when the destination failed.
	for err == nil && time.Now().Before(deadline) {
		_, err = s.Write(chunk)
	}
	if !errors.Is(err, errDisk) {
		t.Fatalf("Write error = %v, want %v", err, errDisk)
	}
	if err := s.Drain(); !errors.Is(err, errDisk) {
		t.Fatalf("Drain = %v, want %v", err, errDisk)
	}
	if err := s.Close(); !errors.Is(err, errDisk) {
		t.Fatalf("Close = %v, want %v", err, errDisk)
	}
}

func TestCloseTwiceAndWriteAfter(t *testing.T) {
	var dst bytes.Buffer
	s := New(&dst, 0)
	s.Write([]byte("one\n"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Write([]byte("two\n")); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if dst.String() != "one\n" {
		t.Fatalf("wrote %q", dst.String())
	}
}

// Buffers handed over are written as they were when handed, in order with
// the copies that Write makes, and the buffer handed back is empty.
func TestHandInOrder(t *testing.T) {
	var dst bytes.Buffer
	s := New(&dst, 1<<20)
	var want bytes.Buffer
	buf := make([]byte, 0, 8<<10)
	for i := range 5000 {
		line := fmt.Appendf(nil, "line %d\n", i)
		want.Write(line)
		if i%7 == 0 {
			if _, err := s.Write(line); err != nil {
				t.Fatal(err)
			}
			continue
		}
		buf = append(buf, line...)
		var err error
		if buf, err = s.Hand(buf); err != nil {
			t.Fatal(err)
		}
		if len(buf) != 0 || cap(buf) < 8<<10 {
			t.Fatalf("Hand returned a buffer of length %d, capacity %d", len(buf), cap(buf))
		}
		// Scribbling on the new buffer must not touch what was handed.
		buf = append(buf, "garbage"...)
		buf = buf[:0]
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want.Bytes()) {
		t.Fatalf("wrote %d bytes, want the %d written, in order", dst.Len(), want.Len())
	}
}

// A sink whose buffer once grew (a start-up scan of a busy host in one
// go) gets buffers of ChunkSize back, and in the steady state that follows
// handing a full buffer over allocates nothing. The first version handed
// back a buffer of the grown capacity: megabytes made and zeroed for every
// 60 KiB of output.
func TestHandAfterAGrownBuffer(t *testing.T) {
	s := New(io.Discard, 0)
	defer s.Close()
	big := bytes.Repeat([]byte{'s'}, 5<<20)
	buf, err := s.Hand(big)
	if err != nil {
		t.Fatal(err)
	}
	if cap(buf) != ChunkSize {
		t.Fatalf("after a 5 MiB buffer, Hand returned capacity %d, want %d", cap(buf), ChunkSize)
	}
	fill := func() {
		buf = append(buf[:0], make([]byte, ChunkSize-4<<10)...)
		if buf, err = s.Hand(buf); err != nil {
			t.Fatal(err)
		}
		if err := s.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	for range 64 { // the free list fills up
		fill()
	}
	if allocs := testing.AllocsPerRun(200, fill); allocs > 0.1 {
		t.Fatalf("handing a full buffer over allocates %.2f times in the steady state, want 0", allocs)
	}
	if cap(buf) != ChunkSize {
		t.Fatalf("capacity %d handed back, want %d", cap(buf), ChunkSize)
	}
}

// Buffers handed at quiet moments hold a few lines each. While the reader
// is stalled they must not each pin a whole chunk: they are joined, so the
// bound on queued bytes also bounds memory.
func TestQuietHandsJoin(t *testing.T) {
	g := newGate()
	s := New(g, 0)
	buf := make([]byte, 0, ChunkSize)
	var want bytes.Buffer
	for i := range 1000 {
		buf = fmt.Appendf(buf, "quiet line %d\n", i)
		want.Write(buf)
		var err error
		if buf, err = s.Hand(buf); err != nil {
			t.Fatal(err)
		}
		if len(buf) != 0 || cap(buf) != ChunkSize {
			t.Fatalf("Hand returned length %d, capacity %d", len(buf), cap(buf))
		}
	}
	s.mu.Lock()
	held := 0
	for _, q := range s.queue {
		held += cap(q)
	}
	s.mu.Unlock()
	if held > 2*ChunkSize {
		t.Fatalf("1000 small hands (%d bytes) hold %d bytes of buffers while the reader is stalled", want.Len(), held)
	}
	close(g.open)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(g.buf.Bytes(), want.Bytes()) {
		t.Fatalf("wrote %d bytes, want the %d handed, in order", g.buf.Len(), want.Len())
	}
}

// A reader of the pipe that goes away ends the output, not with an error:
// the callback runs once, later writes are dropped, Close succeeds.
func TestBrokenPipe(t *testing.T) {
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE) // as tcptrail does
	defer signal.Reset(syscall.SIGPIPE)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	r.Close()
	s := New(w, 0)
	calls := make(chan struct{}, 10)
	s.OnBrokenPipe(func() { calls <- struct{}{} })
	for range 100 {
		if _, err := s.Write([]byte("a line nobody reads\n")); err != nil {
			t.Fatalf("Write after the reader left: %v", err)
		}
		if err := s.Drain(); err != nil {
			t.Fatalf("Drain after the reader left: %v", err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The callback runs on the spool's goroutine, which Close waited for.
	if len(calls) != 1 {
		t.Fatalf("the callback ran %d times, want once", len(calls))
	}
}
