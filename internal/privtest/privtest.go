// Package privtest gates the tests that load BPF programs.
package privtest

import (
	"os"
	"testing"
)

// Require skips a test that needs root to load BPF programs, except under
// CI=true, where the programs must load and a missing privilege fails.
func Require(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("loads BPF programs: skipped with -short")
	}
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true but not root: the privileged tests must run in CI")
		}
		t.Skip("needs root to load BPF programs")
	}
}
