package kernel

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// ErrClosed is returned by reads of a closed ring.
var ErrClosed = errors.New("ring buffer closed")

// Ring reads the BPF ring buffer the programs write to, in place: a
// record's bytes are the ring's own (or, for a record that wraps, a copy),
// valid until the next call of Next.
// The kernel learns how far it has been read once per batch of records
// (and before the reader waits), not after each one: every store of the
// consumer position is a cache line the producing CPUs must fetch again,
// and a copy and a lock per record are what a general reader pays for
// handing records out.
//
// A Ring is read by one goroutine, which also closes it once done reading:
// Close does not wake a Next that waits.
type Ring struct {
	consumerPage []byte // the consumer position, written by us
	producerPage []byte // the producer position, then the data
	view         ringView
	publishEvery uint64 // publishBytes, or an eighth of a smaller ring
	epfd         int
	events       [1]unix.EpollEvent
	deadline     time.Time
	closed       bool
}

// publishBytes is how much is read before the kernel is told: 128 records
// of tcptrail's, a sliver of the default ring; an eighth of a small one.
const publishBytes = 16 << 10

// publishStep is how much of a ring of size bytes is read before the
// kernel is told: never so much of a small ring that the programs find it
// full while most of it is read.
func publishStep(size int) uint64 { return min(publishBytes, uint64(size/8)) }

// ringView is the ring's memory: the logic of reading it, apart from where
// it comes from.
type ringView struct {
	consumer *uint64 // the kernel's consumer position (we write it)
	producer *uint64 // the kernel's producer position (it writes it)
	// data is the data area, mapped once. The kernel offers it twice
	// in a row, so that a record that wraps reads straight, but every
	// page mapped counts in the reader's resident memory: the second
	// copy would cost as much memory as the ring holds, for the one
	// record in thousands that wraps. That one is copied to wrapped.
	data    []byte
	mask    uint64
	wrapped []byte

	pos       uint64 // where the next record starts
	published uint64 // the consumer position the kernel knows
}

// Header bits of a ring buffer record (kernel/bpf/ringbuf.c).
const (
	ringBusyBit    = 1 << 31 // reserved, not yet committed
	ringDiscardBit = 1 << 30 // committed as discarded: skip
	ringHeaderSize = 8
)

var (
	errRingEmpty = errors.New("nothing pending")
	errRingBusy  = errors.New("next record not yet committed")
)

// next returns the next committed record, skipping discarded ones. The
// record before it is released (for publish to tell the kernel).
func (v *ringView) next() ([]byte, error) {
	for {
		prod := atomic.LoadUint64(v.producer)
		if prod == v.pos {
			return nil, errRingEmpty
		}
		if prod-v.pos < ringHeaderSize {
			return nil, fmt.Errorf("ring buffer: %d bytes pending, less than a record header", prod-v.pos)
		}
		start := v.pos & v.mask
		// The length is read atomically: the kernel's xchg of the busy
		// bit is what makes the record's data visible.
		hdr := atomic.LoadUint32((*uint32)(unsafe.Pointer(&v.data[start])))
		if hdr&ringBusyBit != 0 {
			return nil, errRingBusy
		}
		n := uint64(hdr &^ (ringBusyBit | ringDiscardBit))
		total := ringHeaderSize + (n+7)&^7
		if prod-v.pos < total {
			return nil, fmt.Errorf("ring buffer: record of %d bytes, %d pending", n, prod-v.pos-ringHeaderSize)
		}
		v.pos += total
		if hdr&ringDiscardBit != 0 {
			continue
		}
		// The header is 8-aligned in a ring of a power of two: it never
		// wraps; the data may.
		off := (start + ringHeaderSize) & v.mask
		if end := off + n; end <= uint64(len(v.data)) {
			return v.data[off:end:end], nil
		}
		v.wrapped = append(v.wrapped[:0], v.data[off:]...)
		v.wrapped = append(v.wrapped, v.data[:off+n-uint64(len(v.data))]...)
		return v.wrapped[:n:n], nil
	}
}

// publish tells the kernel everything before the record last returned
// has been read, when that is at least min bytes more than it knows.
func (v *ringView) publish(upTo uint64, min uint64) {
	if upTo-v.published >= min && upTo != v.published {
		atomic.StoreUint64(v.consumer, upTo)
		v.published = upTo
	}
}

// newRing maps m, a BPF_MAP_TYPE_RINGBUF, for reading.
func newRing(m *ebpf.Map) (*Ring, error) {
	size := int(m.MaxEntries())
	page := os.Getpagesize()
	r := &Ring{epfd: -1}
	var err error
	r.consumerPage, err = unix.Mmap(m.FD(), 0, page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map the ring buffer's consumer page: %w", err)
	}
	r.producerPage, err = unix.Mmap(m.FD(), int64(page), page+size, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("map the ring buffer: %w", err)
	}
	r.view = ringView{
		consumer: (*uint64)(unsafe.Pointer(&r.consumerPage[0])),
		producer: (*uint64)(unsafe.Pointer(&r.producerPage[0])),
		data:     r.producerPage[page:],
		mask:     uint64(size - 1),
	}
	r.publishEvery = publishStep(size)
	r.view.pos = atomic.LoadUint64(r.view.consumer)
	r.view.published = r.view.pos
	r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("epoll: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(m.FD())}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, m.FD(), &ev); err != nil {
		r.Close()
		return nil, fmt.Errorf("epoll the ring buffer: %w", err)
	}
	return r, nil
}

// SetDeadline bounds how long Next waits for a record: once it has
// passed, Next returns what is pending, then os.ErrDeadlineExceeded.
func (r *Ring) SetDeadline(t time.Time) { r.deadline = t }

// Next returns the next record. Its bytes stay valid until the next call.
// When nothing is pending it waits, until the deadline: the kernel wakes
// the reader only once enough is pending, so the deadline is also how
// records that came alone get read.
func (r *Ring) Next() ([]byte, error) {
	if r.closed {
		return nil, ErrClosed
	}
	// The previous record is read: whatever comes before this one.
	r.view.publish(r.view.pos, r.publishEvery)
	spins := 0
	for {
		rec, err := r.view.next()
		switch err {
		case nil:
			return rec, nil
		case errRingBusy:
			// A program is between reserving and committing: that is
			// a few hundred nanoseconds, unless its CPU was taken from
			// it.
			if spins++; spins%64 == 0 {
				if !r.deadline.IsZero() && time.Now().After(r.deadline) {
					return nil, os.ErrDeadlineExceeded
				}
				time.Sleep(10 * time.Microsecond)
			}
			continue
		case errRingEmpty:
		default:
			return nil, err
		}
		// All read: the kernel must know before we wait, or it sees a
		// ring fuller than it is.
		r.view.publish(r.view.pos, 0)
		if err := r.wait(); err != nil {
			return nil, err
		}
	}
}

// wait blocks until the kernel says data is pending, or the deadline.
func (r *Ring) wait() error {
	for {
		timeout := -1
		if !r.deadline.IsZero() {
			d := time.Until(r.deadline)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((d + time.Millisecond - 1) / time.Millisecond)
		}
		n, err := unix.EpollWait(r.epfd, r.events[:], timeout)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for the ring buffer: %w", err)
		}
		if n == 0 {
			// Woken by the timeout; what the kernel wrote without
			// waking us is read all the same.
			if atomic.LoadUint64(r.view.producer) != r.view.pos {
				return nil
			}
			return os.ErrDeadlineExceeded
		}
		return nil
	}
}

// Close unmaps the ring. Records returned before are no longer valid.
func (r *Ring) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	if r.epfd >= 0 {
		errs = append(errs, unix.Close(r.epfd))
	}
	if r.producerPage != nil {
		errs = append(errs, unix.Munmap(r.producerPage))
	}
	if r.consumerPage != nil {
		errs = append(errs, unix.Munmap(r.consumerPage))
	}
	r.view = ringView{}
	return errors.Join(errs...)
}
