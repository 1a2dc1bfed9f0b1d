package priority

import (
	"fmt"
	"os"
	"runtime"
	"testing"
)

func TestRaiseEveryThreadAndLaterOnes(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: raising a priority needs CAP_SYS_NICE")
		}
		t.Skip("needs root (CAP_SYS_NICE)")
	}
	before, err := Nice()
	if err != nil {
		t.Fatal(err)
	}
	from, to, err := Raise(0)
	if err != nil || from != before || to != before {
		t.Fatalf("Raise(0) = %d, %d, %v; want %d, %d, nil (no change)", from, to, err, before, before)
	}
	from, to, err = Raise(3)
	want := max(before-3, -20)
	if err != nil || from != before || to != want {
		t.Fatalf("Raise(3) = %d, %d, %v; want %d, %d, nil", from, to, err, before, want)
	}
	nice, err := NiceOfThreads(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for tid, n := range nice {
		if n != want {
			t.Errorf("thread %d has nice %d, want %d", tid, n, want)
		}
	}
	// Threads the runtime makes afterwards: a goroutine locked to a new
	// OS thread (the locked thread is never reused, so it is new or one
	// that Raise already changed; run several to make new ones).
	got := make(chan string, 8)
	for range 8 {
		go func() {
			runtime.LockOSThread() // exits with the goroutine: the thread ends
			n, err := Nice()
			got <- fmt.Sprintf("%d %v", n, err)
		}()
	}
	for range 8 {
		if s := <-got; s != fmt.Sprintf("%d <nil>", want) {
			t.Errorf("a thread made after Raise: nice, error = %s; want %d", s, want)
		}
	}
}
