package priority

import (
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// niceAsRoot returns the test's nice value, once it knows it may lower it:
// as root (CAP_SYS_NICE), which CI=true requires.
func niceAsRoot(t *testing.T) int {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: raising a priority needs CAP_SYS_NICE")
		}
		t.Skip("needs root (CAP_SYS_NICE)")
	}
	n, err := Nice()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantEveryThread checks that each thread of the process has nice value
// want, and returns them all by thread id.
func wantEveryThread(t *testing.T, want int) map[int]int {
	t.Helper()
	nice, err := NiceOfThreads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for tid, n := range nice {
		if n != want {
			t.Errorf("thread %d has nice %d, want %d", tid, n, want)
		}
	}
	return nice
}

func TestRaiseEveryThreadAndLaterOnes(t *testing.T) {
	before := niceAsRoot(t)
	from, to, err := Raise(0)
	if err != nil || from != before || to != before {
		t.Fatalf("Raise(0) = %d, %d, %v; want %d, %d, nil (no change)", from, to, err, before, before)
	}
	from, to, err = Raise(3)
	want := max(before-3, -20)
	if err != nil || from != before || to != want {
		t.Fatalf("Raise(3) = %d, %d, %v; want %d, %d, nil", from, to, err, before, want)
	}
	nice := wantEveryThread(t, want)
	// Threads the runtime makes afterwards: goroutines locked to their
	// threads and kept there until all have looked force more threads
	// than the process had.
	const n = 16
	type look struct {
		tid, nice int
		err       error
	}
	looks := make(chan look, n)
	release := make(chan struct{})
	for range n {
		go func() {
			runtime.LockOSThread()
			nice, err := Nice()
			looks <- look{unix.Gettid(), nice, err}
			<-release // the thread stays taken until every goroutine has one
		}()
	}
	fresh := 0
	for range n {
		l := <-looks
		if _, old := nice[l.tid]; !old {
			fresh++
		}
		if l.err != nil || l.nice != want {
			t.Errorf("thread %d: nice %d, %v; want %d", l.tid, l.nice, l.err, want)
		}
	}
	close(release)
	if fresh == 0 {
		t.Fatalf("no thread made after Raise among %d locked goroutines: nothing shown about later threads", n)
	}
	t.Logf("%d threads made after Raise, all at nice %d", fresh, want)
}

// TestSetEveryThread is Raise's way in programs built with cgo, where the
// runtime cannot run a system call on every thread: thread by thread from
// /proc, until a pass changes none.
func TestSetEveryThread(t *testing.T) {
	before := niceAsRoot(t)
	want := max(before-1, -20)
	if err := setEveryThread(want); err != nil {
		t.Fatal(err)
	}
	wantEveryThread(t, want)
}
