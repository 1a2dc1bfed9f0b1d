// Package spool writes output from a goroutine of its own, so that the
// ring-buffer reader never waits for whoever reads that output.
//
// A pipe holds 64 KiB: a few hundred capture lines, a few milliseconds of a
// busy host. When the program at its other end (jq, tee, a log shipper)
// falls behind for longer, a direct write(2) blocks the reader, the kernel's
// ring buffer fills, and events are lost. A Writer takes each buffer at once
// and writes it later, up to a bound of queued bytes; only past that bound
// does Write wait, so a consumer that is slower on average still slows the
// tracer down (and the ring buffer's losses are counted) rather than growing
// its memory without end.
//
// A regular file needs no spool: the page cache takes its writes at once,
// gigabytes of them before the kernel makes a writer wait.
package spool

import (
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultLimit is how many bytes may wait in a Writer: about 11k capture
// lines or 27k lines of the live table, beside the ring buffer's own 65k
// events. Queued buffers are nearly full, so this is also about the most
// memory they take.
const DefaultLimit = 4 << 20

// keptBytes bounds the free list: enough for what waits between two wakes
// of the goroutine, so that the steady state allocates nothing; buffers
// beyond it, from a burst, go back to the garbage collector.
const keptBytes = 2 * wakeBytes

// ChunkSize is the capacity of the buffers a Writer queues and hands
// back: what its sinks fill before they hand a buffer over.
const ChunkSize = 64 << 10

// keepable tells whether a written buffer goes to the free list: one grown
// far past ChunkSize (by a record of megabytes, say the start-up scan's
// thousands of sockets) goes back to the garbage collector, since every
// buffer handed back has ChunkSize capacity.
func keepable(b []byte) bool { return cap(b) >= ChunkSize && cap(b) <= 2*ChunkSize }

// Writer is an io.Writer whose writes happen on its own goroutine.
type Writer struct {
	dst  io.Writer
	file *os.File // dst, when it is a regular file: Sync fsyncs it

	mu      sync.Mutex
	cond    sync.Cond // signalled when queued bytes drop or the queue empties
	queue   [][]byte
	free    [][]byte
	freeCap int  // capacity of the buffers in free
	queued  int  // bytes in queue and being written
	wake    bool // the goroutine is to write until the queue is empty
	limit   int
	err     error // the first write error: every later Write returns it
	closing bool
	done    chan struct{}
	// onBrokenPipe, when set, is called once the reader of a pipe goes
	// away; from then on everything queued is dropped, not written.
	onBrokenPipe func()
	broken       bool
}

// OnBrokenPipe has the Writer call fn, once, when a write fails because
// the program reading the pipe went away (EPIPE, with SIGPIPE caught), and
// drop whatever is written after that instead of failing: the reader's
// leaving is then an ending, not an error (tcptrail trace --json | head).
// Call it before the first Write.
func (s *Writer) OnBrokenPipe(fn func()) {
	s.mu.Lock()
	s.onBrokenPipe = fn
	s.mu.Unlock()
}

// New starts a Writer over dst that lets at most limit bytes wait (0:
// DefaultLimit). When dst is a pipe, it also asks the kernel for a larger
// pipe buffer, which costs no memory of tcptrail's.
func New(dst io.Writer, limit int) *Writer {
	if limit <= 0 {
		limit = DefaultLimit
	}
	s := &Writer{dst: dst, limit: limit, done: make(chan struct{})}
	s.cond.L = &s.mu
	if f, ok := dst.(*os.File); ok {
		if fi, err := f.Stat(); err == nil {
			switch {
			case fi.Mode().IsRegular():
				s.file = f
			case fi.Mode()&os.ModeNamedPipe != 0:
				growPipe(f)
			}
		}
	}
	go s.run()
	return s
}

// growPipe raises a pipe's buffer to the most an unprivileged process may
// ask for (fs.pipe-max-size, 1 MiB by default). Failing is harmless.
func growPipe(f *os.File) {
	size := 1 << 20
	if b, err := os.ReadFile("/proc/sys/fs/pipe-max-size"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			size = min(size, n)
		}
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, size)
}

// Write queues a copy of p. It waits only while the bound is reached. It
// returns the first error a write to dst returned, if any.
func (s *Writer) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.room(len(p)); err != nil {
		return 0, err
	}
	s.queueCopy(p)
	return len(p), nil
}

// queueCopy queues a copy of p: in the spare room of the last buffer
// still waiting, or in a buffer of its own. Called with s.mu held.
func (s *Writer) queueCopy(p []byte) {
	if n := len(s.queue); n > 0 && cap(s.queue[n-1])-len(s.queue[n-1]) >= len(p) {
		s.queue[n-1] = append(s.queue[n-1], p...)
		return
	}
	if len(p) > ChunkSize {
		s.queue = append(s.queue, append([]byte(nil), p...))
		return
	}
	s.queue = append(s.queue, append(s.buffer(), p...))
}

// Hand queues b and returns an empty buffer of ChunkSize capacity to fill
// next: the way for a writer that formats into a buffer of its own (the
// capture writer, the live table) to pass it on without a copy. A buffer
// less than half full (handed at a quiet moment) is copied instead, and
// handed back emptied, so that what waits in the queue is never mostly
// empty room: the bound on queued bytes is then also one on memory. Like
// Write, Hand waits only while the bound is reached.
func (s *Writer) Hand(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return b, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.room(len(b)); err != nil {
		return b[:0], err
	}
	if 2*len(b) < cap(b) {
		s.queueCopy(b)
		if keepable(b) {
			return b[:0], nil
		}
		return s.buffer(), nil
	}
	s.queue = append(s.queue, b)
	return s.buffer(), nil
}

// buffer takes an empty buffer from the free list, or makes one of
// ChunkSize. Called with s.mu held.
func (s *Writer) buffer() []byte {
	if n := len(s.free); n > 0 {
		b := s.free[n-1]
		s.free[n-1] = nil
		s.free = s.free[:n-1]
		s.freeCap -= cap(b)
		return b[:0]
	}
	return make([]byte, 0, ChunkSize)
}

// room waits until n more bytes fit under the bound, then counts them as
// queued, waking the goroutine once enough is waiting. Called with s.mu
// held.
func (s *Writer) room(n int) error {
	for s.err == nil && s.queued > 0 && s.queued+n > s.limit {
		s.wake = true
		s.cond.Broadcast()
		s.cond.Wait()
	}
	if s.err != nil {
		return s.err
	}
	if s.closing {
		return errClosed
	}
	s.queued += n
	// Waking the goroutine for every buffer would cost more than writing
	// it: it is woken once enough is waiting, or by Flush.
	if s.queued >= wakeBytes {
		s.wake = true
		s.cond.Broadcast()
	}
	return nil
}

// wakeBytes is how much may wait for the next Flush before the goroutine
// is woken to write it.
const wakeBytes = 512 << 10

var errClosed = errors.New("spool: write after Close")

// Flush has the goroutine write what is queued now, without waiting for
// it. The sinks call it when the event stream goes quiet, so that output
// never lags.
func (s *Writer) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) > 0 {
		s.wake = true
		s.cond.Broadcast()
	}
	return s.err
}

// run writes the queue out, in order: once woken, until it is empty.
func (s *Writer) run() {
	defer close(s.done)
	s.mu.Lock()
	for {
		for len(s.queue) == 0 || !s.wake {
			if len(s.queue) == 0 {
				s.wake = false
				if s.closing {
					s.mu.Unlock()
					return
				}
			}
			s.cond.Wait()
		}
		c := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		failed := s.err != nil || s.broken
		s.mu.Unlock()

		var err error
		if !failed {
			_, err = s.dst.Write(c)
		}

		s.mu.Lock()
		if errors.Is(err, syscall.EPIPE) && s.onBrokenPipe != nil && !s.broken {
			s.broken, err = true, nil
			fn := s.onBrokenPipe
			s.mu.Unlock()
			fn()
			s.mu.Lock()
		}
		if err != nil && s.err == nil {
			s.err = err
		}
		s.queued -= len(c)
		if keepable(c) && s.freeCap+cap(c) <= keptBytes {
			s.free = append(s.free, c[:0])
			s.freeCap += cap(c)
		}
		// For Drain, and for a Write waiting for room.
		s.cond.Broadcast()
	}
}

// Drain waits until everything queued so far is written, and returns the
// first write error.
func (s *Writer) Drain() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.queued > 0 && s.err == nil {
		s.wake = true
		s.cond.Broadcast()
		s.cond.Wait()
	}
	return s.err
}

// Sync drains, then, when dst is a regular file, commits it to disk.
func (s *Writer) Sync() error {
	if err := s.Drain(); err != nil {
		return err
	}
	if s.file == nil {
		return nil
	}
	return s.file.Sync()
}

// Close drains and stops the goroutine. It does not close dst. It is safe
// to call more than once.
func (s *Writer) Close() error {
	err := s.Drain()
	s.mu.Lock()
	s.closing = true
	s.wake = true
	s.cond.Broadcast()
	s.mu.Unlock()
	<-s.done
	return err
}
