// Package testwait waits, in tests, for something to become true: with a
// deadline, never with a sleep that hopes.
package testwait

import (
	"os"
	"testing"
	"time"
)

// Until checks cond every few milliseconds until it holds, and fails t
// naming what it waited for once timeout has passed.
func Until(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// File waits until path exists.
func File(t testing.TB, timeout time.Duration, what, path string) {
	t.Helper()
	Until(t, timeout, what, func() bool { return exists(path) })
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
