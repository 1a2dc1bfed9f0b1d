package kernel

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcptrail/tcptrail/internal/privtest"
	"github.com/tcptrail/tcptrail/internal/testwait"
)

// inflightBuckets mirrors INFLIGHT_BUCKETS in bpf/tcptrail.bpf.c.
const inflightBuckets = 4096

func inflightCounts(t *testing.T, p *Probe) [inflightBuckets]uint32 {
	t.Helper()
	var counts [inflightBuckets]uint32
	if err := p.coll.Variables[tcptrailVarInflightCount].Get(&counts); err != nil {
		t.Fatal(err)
	}
	return counts
}

func hasInflight(t *testing.T, p *Probe, key uint64) bool {
	t.Helper()
	v, err := p.coll.Maps[tcptrailMapInflight].LookupBytes(key)
	if err != nil {
		t.Fatal(err)
	}
	return v != nil // nil: no such key
}

// TestInflightCount checks the count that lets sys_exit skip the inflight
// lookup: a thread's entry is counted in its bucket while it exists, and
// the count comes back down when the entry goes, whether its thread's next
// correlated syscall (a close of a pipe) or its exit removes it.
func TestInflightCount(t *testing.T) {
	privtest.Require(t)
	p, err := Load(Config{Ports: []uint16{7070}})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	pid := uint64(os.Getpid())

	// close_range over fds that are not open returns 0 and leaves its
	// entry (marked exited) until the thread's next correlated syscall.
	leaveEntry := func() error { return unix.CloseRange(1<<20, 1<<20, 0) }

	t.Run("next call", func(t *testing.T) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid := uint64(unix.Gettid())
		key, bucket := pid<<32|tid, tid%inflightBuckets
		before := inflightCounts(t, p)[bucket]
		if err := leaveEntry(); err != nil {
			t.Skipf("close_range: %v", err)
		}
		if !hasInflight(t, p, key) {
			t.Fatal("close_range left no inflight entry")
		}
		if got := inflightCounts(t, p)[bucket]; got != before+1 {
			t.Fatalf("bucket %d: %d with the entry, want %d", bucket, got, before+1)
		}
		// A second one replaces the entry: still one count.
		if err := leaveEntry(); err != nil {
			t.Fatal(err)
		}
		if got := inflightCounts(t, p)[bucket]; got != before+1 {
			t.Fatalf("bucket %d: %d after the entry was replaced, want %d", bucket, got, before+1)
		}
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		r.Close()
		w.Close()
		if hasInflight(t, p, key) {
			t.Fatal("the close of a pipe left the earlier call's entry")
		}
		if got := inflightCounts(t, p)[bucket]; got != before {
			t.Fatalf("bucket %d: %d after the entry went, want %d", bucket, got, before)
		}
	})

	t.Run("thread exit", func(t *testing.T) {
		before := inflightCounts(t, p)
		var err error
		tid := onExitingThread(func() { err = leaveEntry() })
		if err != nil {
			t.Skipf("close_range: %v", err)
		}
		key, bucket := pid<<32|tid, tid%inflightBuckets
		testwait.Until(t, 5*time.Second, "the exited thread's entry to go", func() bool {
			return !hasInflight(t, p, key)
		})
		// The exiting thread deletes its entry, then takes its count back
		// down: on another CPU the first can show before the second.
		testwait.Until(t, 5*time.Second, fmt.Sprintf("bucket %d to come back to %d after the thread exited", bucket, before[bucket]), func() bool {
			return inflightCounts(t, p)[bucket] == before[bucket]
		})
	})
}

// onExitingThread runs f on a thread that exits right after, and returns
// the thread's id. A goroutine that ends locked to its thread ends the
// thread too, unless it is the main thread, which Go keeps: while a
// goroutine holds that one, another gets a thread of its own.
func onExitingThread(f func()) uint64 {
	run := func(tids chan<- uint64) {
		runtime.LockOSThread() // never unlocked
		f()
		tids <- uint64(unix.Gettid())
	}
	tids := make(chan uint64)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() != os.Getpid() {
			f()
			tids <- uint64(unix.Gettid())
			return
		}
		defer runtime.UnlockOSThread()
		other := make(chan uint64)
		go run(other)
		tids <- <-other
	}()
	return <-tids
}

// TestSocketOpsLearnt checks that the syscall hooks know the sockets' file
// operations once Load returns (showSocket), so that they tell other files
// from sockets without reading their inode.
func TestSocketOpsLearnt(t *testing.T) {
	privtest.Require(t)
	p, err := Load(Config{Ports: []uint16{7070}})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer p.Close()
	var fops uint64
	if err := p.coll.Variables[tcptrailVarSocketFops].Get(&fops); err != nil {
		t.Fatal(err)
	}
	if fops == 0 {
		t.Fatal("socket_fops not learnt from the socket Load showed")
	}
}
